"""Test helpers for dataset curation: traces written through the real trace writer into chDB, and
clusters made without running the clustering (ClusteringRun/Cluster rows plus assignment rows)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from datasets.ch_sql import ASSIGNMENT_COLUMNS, ASSIGNMENTS_TABLE
from datasets.models import Cluster, ClusteringRun
from gateway.models import Project
from opentracy_site import clickhouse
from traces.writer import get_writer

# chDB outlives each test's database and SQLite may reuse ids: runs and clusters get ids unique
# in the session, so one test's assignments never count as another's members.
_IDS = itertools.count(7_000_001)


def write_traces(project: Project, items: list[dict[str, Any]]) -> list[str]:
    """One trace per item: {"prompt", "answer", "model"?, "cost"?, "status"?}; returns trace ids."""
    now = datetime.now(UTC).timestamp()
    ids, writer = [], get_writer()
    for item in items:
        trace_id = str(uuid.uuid4())
        model = item.get("model", "openai/gpt-4o-mini")
        writer.submit(
            {
                "trace_id": trace_id,
                "project_id": project.id,
                "timestamp": now,
                "requested_model": model,
                "resolved_model": model,
                "provider": model.split("/")[0],
                "request_messages": orjson.dumps([{"role": "user", "content": item["prompt"]}]).decode(),
                "response_message": orjson.dumps({"role": "assistant", "content": item["answer"]}).decode(),
                "status": item.get("status", 200),
                "prompt_tokens": 5,
                "completion_tokens": 5,
                "latency_ms": 10.0,
                "cost_total_usd": item.get("cost", 0.001),
            }
        )
        ids.append(trace_id)
    writer.flush()
    return ids


def make_cluster(
    project: Project, trace_ids: list[str], *, name: str = "Invoices", run: ClusteringRun | None = None
) -> Cluster:
    if run is None:
        run = ClusteringRun.objects.create(pk=next(_IDS), project=project, status=ClusteringRun.Status.DONE)
    cluster = Cluster.objects.create(
        pk=next(_IDS), project=project, run=run, label=next(_IDS), name=name, size=len(trace_ids)
    )
    now = datetime.now(UTC)
    rows = [(project.id, run.pk, uuid.UUID(t), cluster.pk, 0.1, "run", now) for t in trace_ids]
    clickhouse.insert(ASSIGNMENTS_TABLE, rows, ASSIGNMENT_COLUMNS)
    return cluster


def cluster_of(project: Project, items: list[dict[str, Any]], **kw: Any) -> Cluster:
    return make_cluster(project, write_traces(project, items), **kw)
