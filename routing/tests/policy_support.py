"""Shared set-up of the policy API and page tests: routed traces written through the real trace
writer into chDB, price overrides, a distilled student, logged-in clients."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from django.test import Client

from gateway.models import ModelPrice, Project
from traces.cost import invalidate_overrides
from traces.writer import get_writer

# chDB outlives each test's database and SQLite may reuse project ids: policy names are unique in
# the session, so one test's routed traces never count as another's.
_N = itertools.count(1)

DEAR, CHEAP = "openai/gpt-4o", "openai/gpt-4o-mini"
# USD per million tokens (input, output): exact numbers to check savings against.
PRICES = {DEAR: (Decimal("2.5"), Decimal("10")), CHEAP: (Decimal("0.15"), Decimal("0.6"))}


def unique(name: str) -> str:
    return f"{name}-{next(_N)}-{uuid.uuid4().hex[:6]}"


def set_prices(project: Project) -> None:
    for model, (inp, out) in PRICES.items():
        ModelPrice.objects.create(project=project, model=model, input_per_mtok=inp, output_per_mtok=out)
    invalidate_overrides()


def routed(project_id: int, policy: str, model: str, *, hours_ago: float = 0, prompt: str = "hello",
           prompt_tokens: int = 1000, completion_tokens: int = 100, cost: float | None = 0.001,
           status: int = 200) -> dict[str, Any]:  # fmt: skip
    """A trace as the gateway writes one for a request routed by `policy`."""
    return {
        "trace_id": str(uuid.uuid4()),
        "project_id": project_id,
        "timestamp": (datetime.now(UTC) - timedelta(hours=hours_ago)).timestamp(),
        "requested_model": "auto" if policy == "auto" else f"router/{policy}",
        "resolved_model": model,
        "provider": model.split("/")[0],
        "request_messages": orjson.dumps([{"role": "user", "content": prompt}]).decode(),
        "response_message": orjson.dumps({"role": "assistant", "content": "ok"}).decode(),
        "status": status,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "latency_ms": 10.0,
        "cost_total_usd": cost,
        "route_policy": policy,
        "route_cluster": "prior:code",
        "route_predicted": {DEAR: 0.1, CHEAP: 0.2},
        "route_decision_ms": 3.0,
    }


def write(records: list[dict[str, Any]]) -> None:
    writer = get_writer()
    for record in records:
        writer.submit(record)
    writer.flush()


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def student(people: dict[str, Any], name: str) -> Any:
    """An approved student of `people["project"]` (its weights are never loaded here)."""
    from distillation.models import DistillationJob, Student
    from distillation.tests.job_support import frozen_version

    job = DistillationJob.objects.create(
        project=people["project"], dataset_version=frozen_version(people, rows=2), teacher=DEAR, student="smollm2"
    )
    return Student.objects.create(
        project=people["project"], job=job, base="smollm2-135m-instruct", adapter_path="/nonexistent",
        version=1, name=name,
    )  # fmt: skip
