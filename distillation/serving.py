"""Serving approved students through the `local` provider: `local/<student-name>` (a name like
`smollm2-135m-instruct-v3`) is the student's base with its LoRA adapter merged in. The provider asks
`looks_like_student` on the event loop (no I/O), and `student_model` on its worker thread (a database
lookup, then the weights, loaded once and kept for the last MAX_LOADED students).

Student names are unique across the engine and never reused (distillation.models.StudentCounter),
so a name always means the same weights. A student approved with serving "vllm" is loaded into the
project's vLLM server instead (distillation/vllm.py) and called as `vllm/<name>`; this path is the
in-process one."""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from typing import Any

STUDENT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*-v[0-9]+$")
MAX_LOADED = 2

_lock = threading.Lock()
_loaded: OrderedDict[str, Any] = OrderedDict()  # name -> gateway.providers.local.LoadedModel


def looks_like_student(name: str) -> bool:
    """Cheap check on the hot path: whether `name` could be a student (the worker thread confirms)."""
    return bool(STUDENT_NAME.match(name))


def student_model(name: str) -> Any:
    """The student's LoadedModel (merged base + adapter). Raises the gateway's 404 for an unknown
    name and a 503 when the weights cannot be loaded."""
    from gateway.errors import GatewayError, model_not_found
    from gateway.providers.local import LoadedModel

    with _lock:
        if name in _loaded:
            _loaded.move_to_end(name)
            return _loaded[name]
        from .models import Student

        student = Student.objects.filter(name=name).first()
        if student is None:
            raise model_not_found(f"local/{name}")
        started = time.perf_counter()
        try:
            model, tokenizer = _load(student.base, student.adapter_path)
        except Exception as exc:
            raise GatewayError(
                503, f"The student `{name}` could not be loaded: {exc}", type="server_error", code="student_unavailable"
            ) from exc
        loaded = LoadedModel(model, tokenizer, "student", time.perf_counter() - started)
        _loaded[name] = loaded
        while len(_loaded) > MAX_LOADED:
            _loaded.popitem(last=False)
        return loaded


def _load(base: str, adapter_path: str) -> tuple[Any, Any]:
    from peft import PeftModel

    from . import students, trainer

    spec = students.student_get(base)
    source = students.student_source(spec) if spec else base
    model, tokenizer = trainer.load_student(source)
    merged = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
    return merged.eval(), tokenizer


def forget(name: str | None = None) -> None:
    """Drop a loaded student (or all): the next request loads it again."""
    with _lock:
        if name is None:
            _loaded.clear()
        else:
            _loaded.pop(name, None)
