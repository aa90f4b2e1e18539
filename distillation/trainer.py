"""Fine-tune a student with LoRA under the BOND objective (see `distillation/bond.py` and docs/distillation.md).

A plain PyTorch loop (no HF Trainer). torch, transformers and peft are imported lazily: importing this module
is cheap. This file currently holds the public API; the loop is being filled in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class Stopped(Exception):
    """`should_stop()` returned True: training stopped, the checkpoint in out_dir/checkpoint is kept."""


@dataclass
class TrainExample:
    messages: list[dict[str, Any]]  # the prompt as OpenAI chat messages
    candidates: list[str]  # the teacher's N answers
    scores: list[float]  # the judge's score of each candidate (same order)
    best: str  # the SFT target (best-of-N, or a human edit)


@dataclass
class TrainSettings:
    mode: Literal["bond", "jbond", "sft"] = "bond"
    beta: float = 0.5
    steps: int = 200
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    max_new_tokens: int = 64
    temperature: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    device: str = "auto"
    gradient_checkpointing: bool = False


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"


def load_student(base: str) -> tuple[Any, Any]:
    """(model, tokenizer) for "smollm2-135m-instruct" (the packaged model) or a local path."""
    raise NotImplementedError


def train(
    *,
    base: str,
    examples: list[TrainExample],
    out_dir: Path,
    settings: TrainSettings,
    scorer: Callable[[list[dict[str, Any]], str], float] | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    raise NotImplementedError


def generate(*, base: str, adapter_dir: Path | None, messages: list[dict[str, Any]], max_new_tokens: int = 64) -> str:
    """Greedy answer of the base model (with the adapter when given), for evaluation."""
    raise NotImplementedError


def merge_adapter(base: str, adapter_dir: Path, out: Path) -> Path:
    """Export base + adapter merged into a plain transformers model directory."""
    raise NotImplementedError
