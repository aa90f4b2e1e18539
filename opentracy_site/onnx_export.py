"""torch -> ONNX for the encoders run by onnxruntime (the router's MiniLM, clustering's model)."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any


def export(module: Any, inputs: tuple[Any, Any], target: Path, *, output: str, output_axes: dict[int, str]) -> None:
    """Export `module(input_ids, attention_mask) -> output` with dynamic batch and token axes. Written
    under a temporary name and renamed, so a crash or a concurrent export never leaves half a file."""
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        axes = {0: "batch", 1: "tokens"}
        with warnings.catch_warnings():  # tracer notes about data-dependent shapes
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                inputs,
                str(tmp / "model.onnx"),
                input_names=["input_ids", "attention_mask"],
                output_names=[output],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, output: output_axes},
                opset_version=17,
                dynamo=False,
            )
        (tmp / "model.onnx").replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
