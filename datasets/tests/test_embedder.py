"""The clustering embedder runs the model under onnxruntime (datasets/embedder.py): the same vectors
as sentence-transformers, an export that is broken or stale is made again, and a model the exporter
cannot trace is still encoded, by torch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from datasets import embedder
from datasets.tests.cluster_support import banking

NAME = embedder.DEFAULT_MODEL


@pytest.fixture
def export_path(settings: Any, tmp_path: Path) -> Iterator[Path]:
    settings.OPENTRACY_LOCAL_MODEL_DIR = tmp_path
    embedder._sessions.clear()
    yield tmp_path / "clustering-onnx" / f"{NAME}.onnx"
    embedder._sessions.clear()


def texts() -> list[str]:
    # real prompts of many lengths, an empty one, and one past the model's 256 word pieces
    return [p for _intent, p in banking(per_intent=8)] + ["", "please " * 400 + "block my card"]


def reference(batch: list[str]) -> np.ndarray:
    return embedder.load().encode(batch, normalize_embeddings=True, convert_to_numpy=True)


def test_onnx_gives_the_models_vectors(export_path: Path) -> None:
    batch = texts()
    vectors = embedder.encode(batch)
    assert export_path.is_file() and embedder._sessions[NAME] is not None
    assert vectors.dtype == np.float32 and vectors.shape == (len(batch), 384)
    assert float((vectors * reference(batch)).sum(axis=1).min()) > 0.9999
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def constant_model(path: Path) -> None:
    """A valid ONNX model with the export's inputs and output that answers one fixed vector."""
    row = helper.make_tensor("row", TensorProto.FLOAT, [1, 384], [1.0] * 384)
    nodes = [
        helper.make_node("Shape", ["input_ids"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "width"], ["out_shape"], axis=0),
        helper.make_node("Expand", ["row", "out_shape"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 384])],
        [
            row,
            helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            helper.make_tensor("width", TensorProto.INT64, [1], [384]),
        ],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("kind", ["not onnx", "another model"])
def test_a_broken_or_stale_export_is_made_again(export_path: Path, kind: str) -> None:
    if kind == "not onnx":  # e.g. a copy cut short
        export_path.parent.mkdir(parents=True)
        export_path.write_bytes(b"\x08\x07 half a file")
    else:  # opens and runs, but its vectors are not the model's
        constant_model(export_path)
    before = export_path.stat().st_size
    batch = texts()[:20]
    vectors = embedder.encode(batch)
    assert embedder._sessions[NAME] is not None and export_path.stat().st_size > max(before, 10_000_000)
    assert float((vectors * reference(batch)).sum(axis=1).min()) > 0.9999


def test_a_model_the_exporter_cannot_trace_is_encoded_by_torch(
    export_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    def unsupported(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Exporting the operator 'aten::custom' to ONNX opset 17 is not supported")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    batch = texts()[:20]
    with caplog.at_level(logging.WARNING, logger="datasets.embedder"):
        vectors = embedder.encode(batch)
    assert embedder._sessions[NAME] is None and not export_path.exists()
    assert "encoded by sentence-transformers" in caplog.text
    assert float((vectors * reference(batch)).sum(axis=1).min()) > 0.9999
