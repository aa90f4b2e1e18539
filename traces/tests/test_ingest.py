"""POST /api/traces/ingest: JSON and JSON Lines in, traces written through the real writer into
chDB, read back through the traces API; all-or-nothing validation, limits, project scoping."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from django.test import Client

from opentracy_site import clickhouse
from traces.cost import compute_cost
from traces.ingest import MAX_BODY_BYTES, MAX_ITEMS
from traces.writer import get_writer

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/traces/ingest"
WHEN = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
CREATED = int(time.time()) - 3600  # within the traces' retention, or ClickHouse's TTL would drop them


def pair(content: str = "hello", *, model: str = "openai/gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    """One logged OpenAI request/response pair."""
    return {
        "request": {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0.2},
        "response": {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": CREATED,
            "model": model.split("/")[-1],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": f"re: {content}"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 200}},
        },
        **extra,
    }


def failure(status: int = 429) -> dict[str, Any]:
    return {
        "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": "too fast"}]},
        "response": {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
        "status": status,
    }


@pytest.fixture
def api(server_url: str, api_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as c:
        yield c


def post(api: httpx.Client, body: Any, content_type: str = "application/json") -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return api.post(URL, content=content, headers={"Content-Type": content_type})


def ingested(resp: httpx.Response, n: int) -> list[str]:
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["ingested"] == n and len(body["trace_ids"]) == n
    get_writer().flush()  # the view submits before it answers; this waits for the writer's insert
    return list(body["trace_ids"])


def count_traces(project_id: int) -> int:
    get_writer().flush()
    _cols, rows = clickhouse.query("SELECT count() FROM traces WHERE project_id = {p:UInt64}", {"p": project_id})
    return int(rows[0][0])


def test_single_json_trace_reads_back_with_model_tokens_cost_and_source(
    api: httpx.Client, people: dict[str, Any]
) -> None:
    item = pair(
        "what is 2+2?",
        timestamp=WHEN.strftime("%Y-%m-%dT%H:%M:%SZ"),
        latency_ms=812.5,
        metadata={"team": "search", "source": "mine"},
        tags=["prod", "v1"],
        user="user-7",
    )
    [trace_id] = ingested(post(api, item), 1)
    trace = api.get(f"/api/traces/{trace_id}").json()
    assert trace["trace_id"] == trace_id and trace["status"] == 200 and trace["endpoint"] == "ingest"
    assert (trace["requested_model"], trace["resolved_model"], trace["provider"]) == (
        "openai/gpt-4o-mini",
        "openai/gpt-4o-mini",
        "openai",
    )
    assert trace["request_messages"] == [{"role": "user", "content": "what is 2+2?"}]
    assert trace["request_params"] == {"temperature": 0.2}
    assert trace["response_message"] == {"role": "assistant", "content": "re: what is 2+2?"}
    assert trace["finish_reason"] == "stop"
    assert (trace["prompt_tokens"], trace["completion_tokens"], trace["cached_tokens"]) == (1200, 300, 200)
    expected = compute_cost(
        project_id=people["project"].id, provider="openai", model="gpt-4o-mini", prompt=1200, completion=300, cached=200
    )
    assert expected[2] is not None and expected[2] > 0
    assert trace["cost_total_usd"] == pytest.approx(expected[2])
    assert trace["cost_input_usd"] == pytest.approx(expected[0])
    assert trace["metadata"] == {"team": "search", "source": "ingest"}  # the ingest mark always wins
    assert trace["tags"] == ["prod", "v1"] and trace["user"] == "user-7" and trace["latency_ms"] == 812.5
    assert trace["timestamp"].startswith(WHEN.strftime("%Y-%m-%dT%H:%M:%S"))
    assert trace["project_id"] == people["project"].id
    # Filterable like any trace: by the ingest mark and by model.
    listed = api.get("/api/traces", params={"metadata_key": "source", "metadata_value": "ingest"}).json()["data"]
    assert [t["trace_id"] for t in listed] == [trace_id]
    assert len(api.get("/api/traces", params={"model": "openai/gpt-4o-mini"}).json()["data"]) == 1


def test_json_list_and_traces_wrapper_keep_order(api: httpx.Client, people: dict[str, Any]) -> None:
    bare = pair("bare name", model="gpt-4o-mini")  # provider guessed from the name, as the gateway does
    bare["response"]["model"] = "gpt-4o-mini-2024-07-18"  # the exact version that answered
    other = pair("elsewhere", model="meta-llama/Llama-3.1-8B-Instruct", provider="together")
    other["response"]["model"] = "meta-llama/Llama-3.1-8B-Instruct"  # not a provider's prefix: a model name
    unknown = pair("unknown", model="my-model")
    unknown["response"].pop("created")
    ids = ingested(post(api, [bare, other, unknown]), 3)
    ids += ingested(post(api, {"traces": [pair("wrapped")]}), 1)
    rows = [api.get(f"/api/traces/{i}").json() for i in ids]
    assert [(t["provider"], t["resolved_model"]) for t in rows] == [
        ("openai", "openai/gpt-4o-mini-2024-07-18"),
        ("together", "together/meta-llama/Llama-3.1-8B-Instruct"),
        ("", "my-model"),
        ("openai", "openai/gpt-4o-mini"),
    ]
    assert rows[0]["requested_model"] == "gpt-4o-mini" and rows[0]["cost_total_usd"] > 0
    assert rows[2]["cost_total_usd"] is None  # no provider: unknown price, never 0
    assert datetime.fromisoformat(rows[0]["timestamp"]).timestamp() == CREATED  # the response's `created`
    assert [r["response_message"]["content"] for r in rows] == [
        "re: bare name",
        "re: elsewhere",
        "re: unknown",
        "re: wrapped",
    ]
    assert count_traces(people["project"].id) == 4


def test_jsonl_with_blank_lines_and_crlf(api: httpx.Client, people: dict[str, Any]) -> None:
    lines = [orjson.dumps(pair("one")), b"", orjson.dumps(failure()), b"   ", orjson.dumps(pair("three"))]
    body = b"\r\n".join(lines) + b"\r\n"
    ids = ingested(post(api, body, "application/x-ndjson; charset=utf-8"), 3)
    assert [api.get(f"/api/traces/{i}").json()["status"] for i in ids] == [200, 429, 200]
    assert ingested(post(api, orjson.dumps(pair("four")) + b"\n", "application/jsonl"), 1)
    assert count_traces(people["project"].id) == 4


def test_error_responses_become_failed_traces(api: httpx.Client) -> None:
    [trace_id] = ingested(post(api, failure(429)), 1)
    trace = api.get(f"/api/traces/{trace_id}").json()
    assert trace["status"] == 429 and trace["error_class"] == "rate_limit_exceeded"
    assert trace["error_message"] == "Rate limit reached" and trace["response_message"] == ""
    assert trace["provider"] == "openai" and trace["cost_total_usd"] is None  # failures are not priced
    assert api.get("/api/traces", params={"status": "error"}).json()["data"][0]["trace_id"] == trace_id

    no_status = failure()
    del no_status["status"]
    assert post(api, no_status).json() == {
        "traces": {"0": {"status": "An error response needs its HTTP status, an integer from 400 to 599."}}
    }


def test_a_bad_item_rejects_the_whole_request(api: httpx.Client, people: dict[str, Any]) -> None:
    missing_messages = pair("x")
    del missing_messages["request"]["messages"]
    bad_metadata = pair("y", metadata={"n": 1})
    submitted = get_writer().stats["submitted"]
    resp = post(api, [pair("ok 1"), missing_messages, pair("ok 2"), bad_metadata, pair("ok 3")])
    assert resp.status_code == 400, resp.text
    errors = resp.json()["traces"]
    assert set(errors) == {"1", "3"}
    assert list(errors["1"]) == ["request.messages"] and "messages" in errors["1"]["request.messages"]
    assert errors["3"] == {"metadata": "Must map strings to strings."}
    assert get_writer().stats["submitted"] == submitted  # nothing handed to the writer
    assert count_traces(people["project"].id) == 0

    # JSON Lines errors are named by line number (blank lines counted), unparsable lines included.
    body = b"\n".join([orjson.dumps(pair("ok")), b"", b"{not json", orjson.dumps({**pair("z"), "project_id": 2})])
    resp = post(api, body, "application/x-ndjson")
    assert resp.status_code == 400
    errors = resp.json()["lines"]
    assert set(errors) == {"3", "4"} and "Not valid JSON" in errors["3"]["non_field_errors"]
    assert "Unknown field" in errors["4"]["project_id"]  # a project never comes from the body
    assert count_traces(people["project"].id) == 0


def test_timestamps_are_checked(api: httpx.Client, people: dict[str, Any]) -> None:
    epoch = ingested(post(api, pair("epoch seconds", timestamp=CREATED - 60.5)), 1)
    assert datetime.fromisoformat(api.get(f"/api/traces/{epoch[0]}").json()["timestamp"]).timestamp() == CREATED - 60.5
    old_log = pair("from 2020")
    old_log["response"]["created"] = 1_577_836_800
    resp = post(
        api,
        [
            pair("ms", timestamp=CREATED * 1000),  # milliseconds, not seconds
            pair("words", timestamp="last tuesday"),
            pair("past retention", timestamp=(WHEN - timedelta(days=400)).isoformat()),
            old_log,
        ],
    )
    assert resp.status_code == 400, resp.text
    errors = resp.json()["traces"]
    assert "milliseconds" in errors["0"]["timestamp"] and "ISO 8601" in errors["1"]["timestamp"]
    assert "retention" in errors["2"]["timestamp"] and "retention" in errors["3"]["response.created"]
    assert count_traces(people["project"].id) == 1

    # The project's own retention decides, and the rows carry it (the table's TTL reads it).
    project = people["project"]
    project.retention_days = 450
    project.save(update_fields=["retention_days"])
    [kept] = ingested(post(api, pair("past retention", timestamp=(WHEN - timedelta(days=400)).isoformat())), 1)
    trace = api.get(f"/api/traces/{kept}").json()
    assert trace["retention_days"] == 450 and trace["timestamp"].startswith(str((WHEN - timedelta(days=400)).date()))


@pytest.mark.parametrize(
    ("body", "content_type", "field"),
    [
        (b"this is not json", "application/json", "body"),
        (b"", "application/json", "body"),
        (b'{"traces": {"a": 1}}', "application/json", "traces"),
        (orjson.dumps(pair("a")) + b"\n" + orjson.dumps(pair("b")), "application/json", "body"),  # JSONL, JSON type
    ],
)
def test_a_body_that_is_not_json_is_refused(api: httpx.Client, body: bytes, content_type: str, field: str) -> None:
    resp = post(api, body, content_type)
    assert resp.status_code == 400, resp.text
    assert field in resp.json()


def test_limits(api: httpx.Client, people: dict[str, Any]) -> None:
    small = {
        "request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        "response": pair()["response"],
    }
    resp = post(api, [small] * (MAX_ITEMS + 1))
    assert resp.status_code == 413 and f"At most {MAX_ITEMS} traces" in resp.json()["detail"]

    too_big = b"[" + b" " * MAX_BODY_BYTES + b"]"
    resp = post(api, too_big)
    assert resp.status_code == 413 and "10 MiB" in resp.json()["detail"]
    # Without a Content-Length (a chunked upload) the body is still read, and still capped.
    resp = api.post(URL, content=iter([too_big[:MAX_BODY_BYTES], too_big[MAX_BODY_BYTES:]]))
    assert resp.status_code == 413
    assert count_traces(people["project"].id) == 0

    chunked = api.post(
        URL,
        content=iter(
            [
                b'[{"request": ',
                orjson.dumps(pair()["request"]),
                b', "response": ',
                orjson.dumps(pair()["response"]),
                b"}]",
            ]
        ),
    )
    assert ingested(chunked, 1)


def test_unauthenticated_is_refused(server_url: str, people: dict[str, Any]) -> None:
    assert httpx.post(f"{server_url}{URL}", json=pair()).status_code in (401, 403)
    bad_key = httpx.post(f"{server_url}{URL}", json=pair(), headers={"Authorization": "Bearer ot-nope"})
    assert bad_key.status_code in (401, 403)
    assert count_traces(people["project"].id) == 0


def test_traces_stay_in_the_callers_project(
    api: httpx.Client, server_url: str, outsider_key: str, people: dict[str, Any]
) -> None:
    [trace_id] = ingested(post(api, pair("acme secret")), 1)
    with httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {outsider_key}"}) as outsider:
        assert outsider.get("/api/traces").json()["data"] == []
        assert outsider.get(f"/api/traces/{trace_id}").status_code == 404
        [own_id] = ingested(outsider.post(URL, json=pair("other secret")), 1)
        assert outsider.get(f"/api/traces/{own_id}").json()["project_id"] == people["other_project"].id
    assert api.get(f"/api/traces/{own_id}").status_code == 404
    assert [t["trace_id"] for t in api.get("/api/traces").json()["data"]] == [trace_id]

    # Session auth: a member ingests into the project they name; an outsider cannot name it.
    browser = Client()
    browser.force_login(people["member"])
    resp = browser.post(
        f"{URL}?project=acme", orjson.dumps(pair("from the dashboard")), content_type="application/json"
    )
    assert resp.status_code == 201, resp.content
    browser.force_login(people["outsider"])
    resp = browser.post(f"{URL}?project=acme", orjson.dumps(pair("intruder")), content_type="application/json")
    assert resp.status_code == 404
    assert count_traces(people["project"].id) == 2
    assert count_traces(people["other_project"].id) == 1


def test_ingested_traces_are_not_spend_through_the_engine(api: httpx.Client, people: dict[str, Any]) -> None:
    from asgiref.sync import async_to_sync

    from gateway import limits

    project = people["project"]
    # Stamped now, not at CREATED: an hour before the module loaded falls in the previous month in the
    # first hour of a month, where this month's spend would be 0.0 whatever the engine counted.
    trace_id = ingested(post(api, pair("a priced call", timestamp=time.time())), 1)[0]
    _cols, rows = clickhouse.query("SELECT cost_total_usd FROM traces WHERE trace_id = {t:UUID}", {"t": trace_id})
    assert rows[0][0] > 0  # priced like a gateway trace...
    assert async_to_sync(limits.spent)(project.id, "month")[0] == 0.0  # ...but not counted against budgets
