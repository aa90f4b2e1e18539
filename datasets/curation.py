"""Curation of datasets by people: a dataset made from clusters' traces or imported from JSONL,
rows kept, dropped or corrected (the correction is the training target, the original answer
stays), bulk actions on a filter, and frozen versions a distillation job can pin.

Every change to a row bumps its revision and writes a RowEdit. A writer passes the revision it saw;
a stale one is refused with who changed the row since (two people on one row never silently
overwrite each other). Writes lock the version row first, so a freeze never races an edit."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import orjson
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from gateway.models import Project
from opentracy_site import clickhouse
from traces.ch_sql import TRACES_TABLE

from .models import Cluster, Dataset, DatasetRow, DatasetVersion, RowEdit, Verdict
from .selectors import cluster_member_ids

MAX_IMPORT_BYTES = 50 * 1024 * 1024
MAX_IMPORT_ROWS = 100_000
MAX_IMPORT_ERRORS = 20  # listed in one error; the rest are counted
TRACE_BATCH = 500  # trace ids per ClickHouse query when building a dataset from clusters
ROW_BATCH = 1000
ROLES = {"system", "developer", "user", "assistant", "tool"}


class CurationError(Exception):
    """A change that cannot be made; the message says why, for people."""


class VersionFrozen(CurationError):
    pass


class EditConflict(CurationError):
    """The row changed since the writer read it."""

    def __init__(self, row: DatasetRow, edit: RowEdit | None) -> None:
        self.row, self.edit = row, edit
        who = _who(edit.user if edit else row.updated_by)
        when = (edit.created_at if edit else row.updated_at).strftime("%Y-%m-%d %H:%M:%S UTC")
        self.changed_by, self.changed_at = who, when
        super().__init__(
            f"Row {row.pk} was changed by {who} at {when} (now revision {row.revision}): reload it and try again."
        )


class ImportFormatError(CurationError):
    """Bad lines in an import: nothing was imported."""

    def __init__(self, errors: list[tuple[int, str]], more: int = 0) -> None:
        self.errors = errors
        text = "; ".join(f"line {n}: {msg}" for n, msg in errors)
        super().__init__(text + (f" (and {more} more bad lines)" if more else ""))


def _who(user: Any) -> str:
    return str(user.get_username()) if user is not None else "an API client"


def acting_user(user: Any) -> Any:
    """A user to record, or None (API-key principals and anonymous are not users)."""
    return user if getattr(user, "pk", None) is not None and isinstance(user, AbstractBaseUser) else None


# ---------------------------------------------------------------- reads


def open_version(*, dataset: Dataset) -> DatasetVersion:
    """The version rows are edited on (the newest; always open unless something went wrong)."""
    return dataset.versions.order_by("-number").first() or DatasetVersion.objects.create(dataset=dataset, number=1)


def version_get(*, dataset: Dataset, number: int | None) -> DatasetVersion | None:
    if number is None:
        return open_version(dataset=dataset)
    return dataset.versions.filter(number=number).first()


def version_counts(*, version: DatasetVersion) -> dict[str, int]:
    """The progress counter: kept, dropped and pending of the total."""
    counts = {s: 0 for s in DatasetRow.Status.values}
    for row in version.rows.values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return {**counts, "total": sum(counts.values())}


@dataclass(frozen=True)
class RowFilter:
    """The curation page's filter, which bulk actions also apply to. flagged: True for rows with a
    failing verdict (after any person's override), False for rows with none."""

    model: str = ""
    status: str = ""
    flagged: bool | None = None
    cluster: int | None = None
    q: str = ""

    @classmethod
    def from_query(cls, query: Any) -> RowFilter:
        """From a QueryDict or dict; raises CurationError naming a bad value."""
        status = str(query.get("status") or "")
        if status and status not in DatasetRow.Status.values:
            raise CurationError(f"status: use one of {', '.join(DatasetRow.Status.values)}.")
        flagged_raw = str(query.get("flagged") or "").lower()
        flags = {"": None, "true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if flagged_raw not in flags:
            raise CurationError("flagged: use true or false.")
        cluster_raw = query.get("cluster") or ""
        try:
            cluster = int(cluster_raw) if cluster_raw not in ("", None) else None
        except (TypeError, ValueError):
            raise CurationError("cluster: must be a cluster id.") from None
        return cls(
            model=str(query.get("model") or "").strip(),
            status=status,
            flagged=flags[flagged_raw],
            cluster=cluster,
            q=str(query.get("q") or "").strip(),
        )

    def query_dict(self) -> dict[str, str]:
        out = {"model": self.model, "status": self.status, "q": self.q}
        if self.flagged is not None:
            out["flagged"] = "true" if self.flagged else "false"
        if self.cluster is not None:
            out["cluster"] = str(self.cluster)
        return {k: v for k, v in out.items() if v}


def flagged_verdicts() -> QuerySet[Verdict]:
    """Verdicts that fail after a person's override (judged ones only: an error is no verdict)."""
    return Verdict.objects.filter(error="").filter(
        Q(override_passed=False) | Q(override_passed__isnull=True, passed=False)
    )


def rows_filtered(*, version: DatasetVersion, filter: RowFilter) -> QuerySet[DatasetRow]:
    rows = version.rows.all()
    if filter.model:
        rows = rows.filter(model=filter.model)
    if filter.status:
        rows = rows.filter(status=filter.status)
    if filter.cluster is not None:
        rows = rows.filter(cluster_id=filter.cluster)
    if filter.flagged is not None:
        flagged = Exists(flagged_verdicts().filter(row=OuterRef("pk")))
        rows = rows.filter(flagged) if filter.flagged else rows.exclude(flagged)
    if filter.q:
        rows = rows.annotate(messages_text=Cast("messages", output_field=TextField())).filter(
            Q(messages_text__icontains=filter.q)
            | Q(response__icontains=filter.q)
            | Q(edited_response__icontains=filter.q)
        )
    return rows.order_by("id")


# ---------------------------------------------------------------- creating


def answer_text(message: Any) -> str:
    """The assistant's text from a trace's response_message (tool calls as their JSON)."""
    if isinstance(message, str):
        try:
            message = orjson.loads(message)
        except orjson.JSONDecodeError:
            return message
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if content:
        return str(content)
    if message.get("tool_calls"):
        return orjson.dumps(message["tool_calls"]).decode()
    return ""


def _traces(project_id: int, ids: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The traces with these ids (successful calls only: a failed one has no answer to learn from)."""
    sql = (
        "SELECT trace_id, request_messages, response_message, resolved_model, requested_model, cost_total_usd,"  # noqa: S608
        f" metadata FROM {TRACES_TABLE} WHERE project_id = {{p:UInt64}} AND trace_id IN {{ids:Array(UUID)}}"
        " AND status = 200 ORDER BY trace_id LIMIT 1 BY trace_id"
    )
    for start in range(0, len(ids), TRACE_BATCH):
        columns, rows = clickhouse.query(sql, {"p": project_id, "ids": list(ids[start : start + TRACE_BATCH])})
        for row in rows:
            yield dict(zip(columns, row, strict=True))


def trace_messages(raw: Any) -> list[Any]:
    """A trace's request_messages as a list (text that is not JSON becomes one user message)."""
    try:
        value = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError:
        return [{"role": "user", "content": str(raw)}]
    return value if isinstance(value, list) else []


def dataset_create_from_clusters(
    *, project: Project, name: str, clusters: Iterable[Cluster | int], user: Any = None, description: str = ""
) -> Dataset:
    """A dataset with version 1 (open) holding one pending row per successful member trace of the
    clusters (a trace in two clusters is taken once, with the first)."""
    name = name.strip()
    if not name:
        raise CurationError("Give the dataset a name.")
    ids = [c.pk if isinstance(c, Cluster) else int(c) for c in clusters]
    if not ids:
        raise CurationError("Choose at least one cluster.")
    found = {c.pk: c for c in Cluster.objects.filter(project=project, pk__in=ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise CurationError(f"No such cluster in this project: {', '.join(map(str, missing))}.")
    # ClickHouse is read first, outside the transaction, so no DB lock is held while it answers.
    seen: set[str] = set()
    rows: list[DatasetRow] = []
    for cluster_id in dict.fromkeys(ids):
        cluster = found[cluster_id]
        member_ids = [t for t in cluster_member_ids(cluster=cluster) if t not in seen]
        seen.update(member_ids)
        for trace in _traces(project.id, member_ids):
            meta = trace.get("metadata")
            rows.append(
                DatasetRow(
                    trace_id=trace["trace_id"],
                    cluster=cluster,
                    messages=trace_messages(trace["request_messages"]),
                    response=answer_text(trace["response_message"]),
                    model=trace["resolved_model"] or trace["requested_model"],
                    cost_usd=trace["cost_total_usd"],
                    metadata=dict(meta) if isinstance(meta, dict) else {},
                )
            )
    with transaction.atomic():
        dataset = Dataset.objects.create(
            project=project, name=name, description=description, created_by=acting_user(user)
        )
        dataset.clusters.set(found.values())
        version = DatasetVersion.objects.create(dataset=dataset, number=1)
        for row in rows:
            row.version = version
        DatasetRow.objects.bulk_create(rows, batch_size=ROW_BATCH)
    return dataset


def _message_list(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"'{where}' must be a non-empty list of chat messages")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise ValueError(f"{where}[{i}] must be an object")
        if message.get("role") not in ROLES:
            raise ValueError(f"{where}[{i}].role must be one of {', '.join(sorted(ROLES))}")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise ValueError(f"{where}[{i}].content must be a string or a list of parts")
    return value


def _import_row(obj: Any) -> DatasetRow:
    """One JSONL line as a row; raises ValueError saying what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError("must be a JSON object")
    if "response" in obj:
        if not isinstance(obj["response"], str):
            raise ValueError("'response' must be a string")
        response = obj["response"]
        if "messages" in obj:
            messages = _message_list(obj["messages"], "messages")
        elif isinstance(obj.get("prompt"), str) and obj["prompt"]:
            messages = [{"role": "user", "content": obj["prompt"]}]
        else:
            raise ValueError("give 'prompt' (a non-empty string) or 'messages' with the 'response'")
    elif "messages" in obj:  # OpenAI fine-tuning: the last message is the assistant's answer
        messages = _message_list(obj["messages"], "messages")
        last = messages[-1]
        if last.get("role") != "assistant" or len(messages) < 2:
            raise ValueError("the last message must be the assistant's answer (or give 'response')")
        response = answer_text(last)
        messages = messages[:-1]
    else:
        raise ValueError("give 'messages' (OpenAI fine-tuning) or 'prompt'/'messages' with 'response'")
    reference = obj.get("reference", "")
    if not isinstance(reference, str):
        raise ValueError("'reference' must be a string")
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError("'metadata' must be an object")
    model = obj.get("model", "")
    if not isinstance(model, str):
        raise ValueError("'model' must be a string")
    return DatasetRow(messages=messages, response=response, reference=reference, metadata=metadata, model=model)


def _read(file: IO[bytes] | bytes) -> bytes:
    data = file if isinstance(file, bytes) else file.read(MAX_IMPORT_BYTES + 1)
    if len(data) > MAX_IMPORT_BYTES:
        raise CurationError(f"The file is over the import limit of {MAX_IMPORT_BYTES // (1024 * 1024)} MB.")
    return data


def dataset_import_jsonl(
    *, project: Project, name: str, file: IO[bytes] | bytes, user: Any = None, description: str = ""
) -> Dataset:
    """A dataset from JSON Lines: OpenAI fine-tuning lines ({"messages": [..., assistant]}) or plain
    ones ({"prompt" or "messages", "response", "reference"?, "metadata"?, "model"?}). All lines or
    none: any bad line raises ImportFormatError naming the line numbers and what is wrong."""
    name = name.strip()
    if not name:
        raise CurationError("Give the dataset a name.")
    data = _read(file)
    rows: list[DatasetRow] = []
    errors: list[tuple[int, str]] = []
    bad = 0
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc})") from None
            rows.append(_import_row(obj))
        except ValueError as exc:
            bad += 1
            if len(errors) < MAX_IMPORT_ERRORS:
                errors.append((number, str(exc)))
        if len(rows) > MAX_IMPORT_ROWS:
            raise CurationError(f"The file has more than {MAX_IMPORT_ROWS:,} rows: split it.")
    if errors:
        raise ImportFormatError(errors, bad - len(errors))
    if not rows:
        raise CurationError("The file has no rows.")
    with transaction.atomic():
        dataset = Dataset.objects.create(
            project=project, name=name, description=description, created_by=acting_user(user)
        )
        version = DatasetVersion.objects.create(dataset=dataset, number=1)
        for row in rows:
            row.version = version
        DatasetRow.objects.bulk_create(rows, batch_size=ROW_BATCH)
    return dataset


# ---------------------------------------------------------------- changing rows


def _lock_open_version(version_id: int) -> DatasetVersion:
    """Inside a transaction: the version, locked against a concurrent freeze; refused if frozen."""
    version = DatasetVersion.objects.select_for_update().get(pk=version_id)
    if version.frozen:
        raise VersionFrozen(f"Version {version.number} is frozen: edit the open version instead.")
    return version


def _change(*, row: DatasetRow, field: str, value: str, user: Any, revision: int | None) -> DatasetRow:
    """Set one field of a row, compare-and-swap on the revision, with its audit record."""
    person = acting_user(user)
    with transaction.atomic():
        _lock_open_version(row.version_id)
        current = DatasetRow.objects.select_for_update().get(pk=row.pk)
        if revision is not None and current.revision != revision:
            raise EditConflict(current, current.edits.select_related("user").first())
        old = getattr(current, field)
        if old == value:
            return current
        updated = DatasetRow.objects.filter(pk=row.pk, revision=current.revision).update(
            **{field: value}, revision=F("revision") + 1, updated_by=person, updated_at=timezone.now()
        )
        if not updated:  # changed between the read and the write (a database without row locks)
            current.refresh_from_db()
            raise EditConflict(current, current.edits.select_related("user").first())
        RowEdit.objects.create(row=current, user=person, field=field, old=old, new=value)
    current.refresh_from_db()
    return current


def row_set_status(*, row: DatasetRow, status: str, user: Any = None, revision: int | None = None) -> DatasetRow:
    """Keep, drop (or back to pending). The revision is optional here: a status has no text to lose."""
    if status not in DatasetRow.Status.values:
        raise CurationError(f"Status must be one of {', '.join(DatasetRow.Status.values)}.")
    return _change(row=row, field="status", value=status, user=user, revision=revision)


def row_edit_response(*, row: DatasetRow, text: str, user: Any = None, revision: int) -> DatasetRow:
    """A person's correction becomes the training target; `response` keeps what the model said.
    Text equal to the original clears the correction."""
    value = "" if text == row.response else text
    return _change(row=row, field="edited_response", value=value, user=user, revision=revision)


def row_set_reference(*, row: DatasetRow, text: str, user: Any = None, revision: int | None = None) -> DatasetRow:
    """The expected answer the exact-match check compares against."""
    return _change(row=row, field="reference", value=text, user=user, revision=revision)


def rows_bulk_status(*, version: DatasetVersion, filter: RowFilter, status: str, user: Any = None) -> int:
    """Set the status of every row matching the filter ("keep all from model X", "drop all
    flagged by the judge"); returns how many rows changed, each with its audit record."""
    if status not in DatasetRow.Status.values:
        raise CurationError(f"Status must be one of {', '.join(DatasetRow.Status.values)}.")
    person = acting_user(user)
    changed = 0
    with transaction.atomic():
        _lock_open_version(version.pk)
        matching = rows_filtered(version=version, filter=filter).exclude(status=status)
        while True:
            batch = list(matching.values_list("pk", "status")[:ROW_BATCH])
            if not batch:
                return changed
            pks = [pk for pk, _ in batch]
            DatasetRow.objects.filter(pk__in=pks).update(
                status=status, revision=F("revision") + 1, updated_by=person, updated_at=timezone.now()
            )
            RowEdit.objects.bulk_create(
                [RowEdit(row_id=pk, user=person, field="status", old=old, new=status) for pk, old in batch]
            )
            changed += len(batch)


# ---------------------------------------------------------------- versions and verdicts


def version_freeze(*, version: DatasetVersion, user: Any = None, note: str = "") -> DatasetVersion:
    """Freeze the open version (it never changes again) and open the next one with copies of its
    rows and their verdicts; returns the new open version."""
    person = acting_user(user)
    with transaction.atomic():
        locked = _lock_open_version(version.pk)
        locked.frozen_at, locked.frozen_by, locked.note = timezone.now(), person, note[:500]
        locked.save(update_fields=["frozen_at", "frozen_by", "note"])
        nxt = DatasetVersion.objects.create(dataset_id=locked.dataset_id, number=locked.number + 1)
        after = 0
        while True:
            olds = list(locked.rows.filter(pk__gt=after).order_by("pk")[:ROW_BATCH])
            if not olds:
                break
            after = olds[-1].pk
            copies = DatasetRow.objects.bulk_create(
                [
                    DatasetRow(
                        version=nxt,
                        **{
                            f: getattr(old, f)
                            for f in (
                                "trace_id",
                                "cluster_id",
                                "messages",
                                "response",
                                "edited_response",
                                "reference",
                                "model",
                                "cost_usd",
                                "metadata",
                                "status",
                                "updated_by_id",
                            )
                        },
                    )
                    for old in olds
                ]
            )
            new_of = {old.pk: new.pk for old, new in zip(olds, copies, strict=True)}
            Verdict.objects.bulk_create(
                [
                    Verdict(
                        row_id=new_of[v.row_id],
                        **{
                            f: getattr(v, f)
                            for f in (
                                "judge_run_id",
                                "judge",
                                "judge_version",
                                "kind",
                                "score",
                                "scores",
                                "passed",
                                "reason",
                                "error",
                                "override_passed",
                                "override_reason",
                                "overridden_by_id",
                            )
                        },
                    )
                    for v in Verdict.objects.filter(row_id__in=new_of)
                ]
            )
    version.refresh_from_db()
    return nxt


def verdict_override(*, verdict: Verdict, passed: bool | None, reason: str = "", user: Any = None) -> Verdict:
    """A person's word over the judge's (passed None removes the override); not on a frozen version."""
    if DatasetVersion.objects.filter(rows=verdict.row_id, frozen_at__isnull=False).exists():
        raise VersionFrozen("This verdict is on a frozen version: override it on the open version.")
    verdict.override_passed = passed
    verdict.override_reason = reason if passed is not None else ""
    verdict.overridden_by = acting_user(user) if passed is not None else None
    verdict.save(update_fields=["override_passed", "override_reason", "overridden_by"])
    RowEdit.objects.create(
        row_id=verdict.row_id,
        user=acting_user(user),
        field="verdict",
        old="",
        new=f"{verdict.judge}: {'cleared' if passed is None else 'pass' if passed else 'fail'} {reason}".strip(),
    )
    return verdict


def last_change(row: DatasetRow) -> tuple[str, datetime | None]:
    edit = row.edits.select_related("user").first()
    return (_who(edit.user), edit.created_at) if edit else ("", None)
