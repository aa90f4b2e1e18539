"""Serving approved students through the `local` provider: `local/<student-name>` (a name like
`smollm2-135m-instruct-v3`). The provider asks `looks_like_student` on the event loop (no I/O), and
`student_model` on its worker thread (a database lookup, then the weights).

OPENTRACY_LOCAL_STUDENTS picks how the weights are held:
- "adapter" (default): one copy of each base in memory, with the LoRA adapters of its students
  loaded onto it (peft; the last MAX_ADAPTERS per base kept); the provider makes a request's adapter
  the active one before it generates (generation is serialised by the provider's lock).
- "merged": each student's adapter merged into a base copy of its own (slightly faster per token,
  a whole base's memory per student; the last MAX_MERGED kept).

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
MAX_MERGED = 2
MAX_ADAPTERS = 8  # per base: a LoRA adapter of a 135M base at r 16 is a few MB

_lock = threading.Lock()
_loaded: OrderedDict[str, Any] = OrderedDict()  # name -> gateway.providers.local.LoadedModel
_bases: dict[str, tuple[Any, Any]] = {}  # base -> (peft model holding its students' adapters, tokenizer)


def looks_like_student(name: str) -> bool:
    """Cheap check on the hot path: whether `name` could be a student (the worker thread confirms)."""
    return bool(STUDENT_NAME.match(name))


def student_model(name: str) -> Any:
    """The student's LoadedModel (its adapter on the shared base, or a merged copy). Raises the
    gateway's 404 for an unknown name and a 503 when the weights cannot be loaded."""
    from django.conf import settings

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
        shared = settings.OPENTRACY_LOCAL_STUDENTS == "adapter"
        try:
            if shared:
                model, tokenizer = _add_adapter(student.base, student.adapter_path, name)
            else:
                model, tokenizer = _merged(student.base, student.adapter_path)
        except Exception as exc:
            raise GatewayError(
                503, f"The student `{name}` could not be loaded: {exc}", type="server_error", code="student_unavailable"
            ) from exc
        seconds = time.perf_counter() - started
        loaded = LoadedModel(model, tokenizer, "student", seconds, adapter=name if shared else None)
        _loaded[name] = loaded
        _evict()
        return loaded


def _base_model(base: str) -> tuple[Any, Any]:
    from . import students, trainer

    spec = students.student_get(base)
    return trainer.load_student(students.student_source(spec) if spec else base)


def _merged(base: str, adapter_path: str) -> tuple[Any, Any]:
    from peft import PeftModel

    model, tokenizer = _base_model(base)
    return PeftModel.from_pretrained(model, adapter_path).merge_and_unload().eval(), tokenizer


def _add_adapter(base: str, adapter_path: str, name: str) -> tuple[Any, Any]:
    """Load the student's adapter onto its base's shared copy (the base is loaded the first time)."""
    from peft import PeftModel

    if base not in _bases:
        model, tokenizer = _base_model(base)
        _bases[base] = (PeftModel.from_pretrained(model, adapter_path, adapter_name=name).eval(), tokenizer)
    else:
        _bases[base][0].load_adapter(adapter_path, adapter_name=name)
    return _bases[base]


def _drop(name: str) -> None:
    """Unload one student: its adapter leaves the shared base (the base goes with its last one)."""
    loaded = _loaded.pop(name, None)
    if loaded is None or loaded.adapter is None:
        return
    for base, (model, _tokenizer) in list(_bases.items()):
        if model is loaded.model:
            if len(model.peft_config) > 1:
                model.delete_adapter(name)
            else:
                del _bases[base]


def _evict() -> None:
    """Keep the last MAX_MERGED merged students, and the last MAX_ADAPTERS adapters of each base."""
    groups: dict[int, list[str]] = {}  # oldest first: _loaded is kept in use order
    for name, loaded in _loaded.items():
        groups.setdefault(id(loaded.model) if loaded.adapter is not None else 0, []).append(name)
    for key, names in groups.items():
        for name in names[: max(0, len(names) - (MAX_MERGED if key == 0 else MAX_ADAPTERS))]:
            _drop(name)


def forget(name: str | None = None) -> None:
    """Drop a loaded student (or all): the next request loads it again."""
    with _lock:
        if name is None:
            _loaded.clear()
            _bases.clear()
        else:
            _drop(name)
