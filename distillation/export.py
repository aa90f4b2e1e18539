"""Exporting a trained student: the LoRA adapter as peft saved it (adapter_model.safetensors +
adapter_config.json), or the base with the adapter merged in (a plain transformers folder:
config.json, model.safetensors, tokenizer files), each as a zip written while it is sent.

The merged folder is made once per job by trainer.merge_adapter, next to the adapter (under
OPENTRACY_ADAPTER_DIR), and reused; a file lock keeps two requests (or two replicas on a shared
volume) from merging at once."""

from __future__ import annotations

import fcntl
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

from django.core.exceptions import ValidationError

from . import students
from .models import DistillationJob

KINDS = ("adapter", "merged")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
MERGED_FILES = ("config.json", "model.safetensors")
READ_BYTES = 1 << 20


def adapter_folder(job: DistillationJob) -> Path:
    """The job's trained adapter, or a ValidationError saying why there is none."""
    folder = Path(job.adapter_path) if job.adapter_path else None
    if folder is None or not all((folder / name).is_file() for name in ADAPTER_FILES):
        where = f" ({job.adapter_path} has no {' and '.join(ADAPTER_FILES)})" if job.adapter_path else ""
        raise ValidationError(f"This job has no trained adapter to export (it is {job.status}){where}.")
    return folder


def merged_folder(job: DistillationJob) -> Path:
    """The merged model, made on the first call (seconds for a small base, minutes for a large one)."""
    adapter = adapter_folder(job)
    out = adapter.parent / "merged"
    if _complete(out):
        return out
    with (adapter.parent / ".merge.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not _complete(out):
            from . import trainer

            spec = students.student_get(job.student)
            try:
                source = students.student_source(spec) if spec else job.student
                trainer.merge_adapter(source, adapter, out)
            except students.StudentUnavailable as exc:
                raise ValidationError(f"The merged model cannot be made here: {exc}") from None
    return out


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in MERGED_FILES)


def export_folder(*, job: DistillationJob, kind: str) -> Path:
    if kind not in KINDS:
        raise ValidationError({"kind": f"Use one of {', '.join(KINDS)}."})
    return adapter_folder(job) if kind == "adapter" else merged_folder(job)


def zip_name(job: DistillationJob, kind: str) -> str:
    return f"distillation-job-{job.pk}-{kind}.zip"


class _Sink(io.RawIOBase):
    """An unseekable file for ZipFile: what it writes is collected and handed out in pieces, so the
    archive is never whole in memory (zipfile then writes sizes after each file's data)."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.pieces.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.pieces = b"".join(self.pieces), []
        return out


def zip_stream(folder: Path) -> Iterator[bytes]:
    """The folder's files (not hidden ones, not sub-folders) as a zip, a megabyte at a time.
    Weights are stored as they are (safetensors barely compress); the rest is deflated."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as archive:
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            info = zipfile.ZipInfo.from_file(path, path.name)
            info.compress_type = zipfile.ZIP_STORED if path.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
            with path.open("rb") as src, archive.open(info, "w") as dest:
                while block := src.read(READ_BYTES):
                    dest.write(block)
                    yield sink.take()
    yield sink.take()  # the central directory, written on close
