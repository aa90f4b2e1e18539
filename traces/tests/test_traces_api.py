"""GET /api/traces and /api/traces/<id>: filters, cursor pagination, project scoping."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import openai
import orjson
import pyarrow.parquet as pq
import pytest
import yaml
from django.test import Client

from tests.support import read_trace

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def traffic(client: Any) -> dict[str, str]:
    """Five traces of known shape in `project`; returns trace ids by label."""
    ids = {}
    for label, model, meta in [
        ("a", "gpt-4o-mini", {"team": "search"}),
        ("b", "gpt-4o-mini", {"team": "billing"}),
        ("c", "claude-haiku-4-5", {"team": "search"}),
        ("d", "gpt-4o", {}),
    ]:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": f"question {label} zebra{label}"}], metadata=meta
        )
        ids[label] = raw.headers["x-opentracy-trace-id"]
    with pytest.raises(openai.InternalServerError) as err:  # a failed request is traced too
        client.chat.completions.create(model="openai/gpt-error-500", messages=[{"role": "user", "content": "e"}])
    for trace_id in [*ids.values(), err.value.response.headers["x-opentracy-trace-id"]]:
        read_trace(trace_id)  # written
    return ids


@pytest.fixture
def api(server_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)


def _ids(resp: httpx.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [t["trace_id"] for t in resp.json()["data"]]


def test_filters(api: httpx.Client, traffic: dict[str, str]) -> None:
    assert len(_ids(api.get("/api/traces"))) == 5
    assert set(_ids(api.get("/api/traces", params={"provider": "anthropic"}))) == {traffic["c"]}
    assert set(_ids(api.get("/api/traces", params={"model": "openai/gpt-4o-mini"}))) == {traffic["a"], traffic["b"]}
    assert len(_ids(api.get("/api/traces", params={"status": "error"}))) == 1
    assert len(_ids(api.get("/api/traces", params={"status": "502"}))) == 1
    search = api.get("/api/traces", params={"metadata_key": "team", "metadata_value": "search"})
    assert set(_ids(search)) == {traffic["a"], traffic["c"]}
    assert set(_ids(api.get("/api/traces", params={"q": "ZEBRAb"}))) == {traffic["b"]}
    assert _ids(api.get("/api/traces", params={"since": "2099-01-01T00:00:00Z"})) == []
    assert api.get("/api/traces", params={"since": "yesterday"}).status_code == 400
    assert api.get("/api/traces", params={"cursor": "garbage"}).status_code == 400


def test_cursor_pagination_walks_every_trace_once(api: httpx.Client, traffic: dict[str, str]) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = api.get("/api/traces", params=params).json()
        seen += [t["trace_id"] for t in page["data"]]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 5
    assert set(traffic.values()) <= set(seen)


def test_detail_has_the_full_trace(api: httpx.Client, traffic: dict[str, str]) -> None:
    trace = api.get(f"/api/traces/{traffic['a']}").json()
    assert trace["request_messages"] == [{"role": "user", "content": "question a zebraa"}]
    assert trace["response_message"]["content"] == "You said: question a zebraa"
    assert trace["metadata"] == {"team": "search"} and trace["cost_total_usd"] > 0
    assert trace["retention_days"] == 90  # the project's setting, stamped by the gateway


def test_outsiders_are_refused(
    server_url: str, outsider_key: str, traffic: dict[str, str], people: dict[str, Any]
) -> None:
    outsider = httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {outsider_key}"})
    assert _ids(outsider.get("/api/traces")) == []
    assert outsider.get(f"/api/traces/{traffic['a']}").status_code == 404
    assert httpx.get(f"{server_url}/api/traces").status_code in (401, 403)

    browser = Client()
    browser.force_login(people["outsider"])
    assert browser.get("/api/traces", {"project": "acme"}).status_code == 404
    browser.force_login(people["member"])
    assert len(browser.get("/api/traces", {"project": "acme"}).json()["data"]) == 5


# ---------------------------------------------------------------- stats, annotations, export, schema


def test_stats_endpoints(api: httpx.Client, traffic: dict[str, str]) -> None:
    models = api.get("/api/stats/models", params={"range": "1h"}).json()
    assert models["source"] == "traces_hourly" and models["totals"]["requests"] == 5
    assert models["totals"]["errors"] == 1 and models["totals"]["cost_usd"] > 0
    by_name = {m["model"]: m["requests"] for m in models["models"]}
    assert by_name["openai/gpt-4o-mini"] == 2 and by_name["anthropic/claude-haiku-4-5"] == 1
    series = api.get("/api/stats/timeseries", params={"range": "24h", "bucket": "hour"}).json()
    assert series["bucket"] == "hour" and sum(p["requests"] for p in series["points"]) == 5
    assert len(series["points"]) in (24, 25)  # every hour, empty ones included
    # A raw-only filter is answered from the traces table, in the same shape.
    searched = api.get("/api/stats/models", params={"range": "1h", "q": "zebraa"}).json()
    assert searched["source"] == "traces" and searched["totals"]["requests"] == 1
    bad = api.get("/api/stats/timeseries", params={"bucket": "week", "min_cost": "x"})
    assert bad.status_code == 400 and set(bad.json()) == {"bucket", "min_cost"}  # every bad field named
    assert api.get("/api/stats/timeseries", params={"bucket": "week"}).json() == {
        "bucket": ["Use one of minute, hour, day."]
    }
    too_many = api.get("/api/stats/timeseries", params={"range": "30d", "bucket": "minute"})
    assert too_many.status_code == 400 and "more than 2000 points" in too_many.json()["bucket"][0]


def test_tags_and_feedback(api: httpx.Client, traffic: dict[str, str], people: dict[str, Any]) -> None:
    url = f"/api/traces/{traffic['a']}"
    trace = api.patch(url, json={"tags": ["golden", "reviewed"], "score": 9, "comment": "exact"}).json()
    assert trace["tags"] == ["golden", "reviewed"] and trace["feedback"]["score"] == 9
    assert trace["feedback"]["user_id"] == 0  # made with a key
    browser = Client()
    browser.force_login(people["member"])
    resp = browser.patch(f"{url}?project=acme", {"remove_tags": ["reviewed"]}, content_type="application/json")
    assert resp.status_code == 200 and resp.json()["tags"] == ["golden"]
    assert _ids(api.get("/api/traces", params={"tag": "golden"})) == [traffic["a"]]
    assert api.patch(url, json={}).status_code == 400
    bad = api.patch(url, json={"score": 11, "tags": "x"})
    assert bad.status_code == 400 and set(bad.json()) == {"score", "tags"}
    assert api.patch("/api/traces/00000000-0000-0000-0000-000000000000", json={"score": 1}).status_code == 404


def test_export_streams_every_format(api: httpx.Client, traffic: dict[str, str]) -> None:
    with api.stream("GET", "/api/traces/export", params={"format": "jsonl"}) as resp:
        assert resp.headers["content-type"] == "application/x-ndjson"
        assert resp.headers["content-disposition"].startswith('attachment; filename="traces-acme-')
        lines = [orjson.loads(line) for line in resp.iter_lines() if line]
    assert {t["trace_id"] for t in lines} >= set(traffic.values()) and len(lines) == 5
    assert lines[0]["request_messages"][0]["role"] == "user"

    tuned = api.get("/api/traces/export", params={"format": "openai", "model": "openai/gpt-4o-mini"}).text
    examples = [orjson.loads(line) for line in tuned.splitlines()]
    assert len(examples) == 2 and all(set(e) == {"messages"} for e in examples)
    assert examples[0]["messages"][-1]["role"] == "assistant" and "You said" in examples[0]["messages"][-1]["content"]

    rows = list(csv.DictReader(io.StringIO(api.get("/api/traces/export", params={"format": "csv"}).text)))
    assert len(rows) == 5 and {r["status"] for r in rows} == {"200", "502"}

    table = pq.read_table(io.BytesIO(api.get("/api/traces/export", params={"format": "parquet"}).content))
    assert table.num_rows == 5 and "request_messages" in table.column_names
    assert api.get("/api/traces/export", params={"format": "xml"}).status_code == 400


def test_outsiders_see_no_stats_export_or_annotations(
    server_url: str, outsider_key: str, traffic: dict[str, str]
) -> None:
    outsider = httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {outsider_key}"})
    assert outsider.get("/api/stats/models", params={"range": "1h"}).json()["totals"]["requests"] == 0
    assert outsider.get("/api/traces/export").text == ""
    assert outsider.patch(f"/api/traces/{traffic['a']}", json={"score": 1}).status_code == 404
    for path in ("/api/stats/models", "/api/stats/timeseries", "/api/traces/export"):
        assert httpx.get(f"{server_url}{path}").status_code in (401, 403)


def test_openapi_schema_and_docs_page(api: httpx.Client) -> None:
    schema = yaml.safe_load(api.get("/api/schema/").text)
    paths = schema["paths"]
    assert {"/api/traces", "/api/traces/export", "/api/stats/timeseries", "/api/aliases/{name}"} <= set(paths)
    names = {p["name"] for p in paths["/api/traces"]["get"]["parameters"]}
    assert {"model", "q", "tag", "min_cost", "cursor", "range"} <= names
    assert schema["components"]["securitySchemes"]["engineKey"]["scheme"] == "bearer"
    page = api.get("/api/docs/").text
    assert "swagger-ui" in page and "drf_spectacular_sidecar" in page and "cdn" not in page.lower()
