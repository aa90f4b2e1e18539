"""The traces dashboard pages (overview, traces, one trace) against real traces in chDB: made through
the live engine with the OpenAI SDK, or submitted through the trace writer."""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from typing import Any

import openai
import pytest
from django.test import Client

from tests.support import read_trace
from traces import stats
from traces.filters import parse_filters
from traces.writer import get_writer

pytestmark = pytest.mark.django_db(transaction=True)

XSS = "<script>alert(1)</script>"
HTMX = {"HX-Request": "true"}


@pytest.fixture
def traffic(client: Any) -> dict[str, str]:
    """Six traces in `project` (one failed, one with a script in its prompt); trace ids by label."""
    ids = {}
    for label, model, meta, text in [
        ("a", "gpt-4o-mini", {"team": "search"}, "question a zebraa"),
        ("b", "gpt-4o-mini", {"team": "billing"}, "question b zebrab"),
        ("c", "claude-haiku-4-5", {"team": "search"}, "question c zebrac"),
        ("d", "gpt-4o", {}, "question d zebrad"),
        ("x", "gpt-4o-mini", {}, XSS),
    ]:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}], metadata=meta, temperature=0.2
        )
        ids[label] = raw.headers["x-opentracy-trace-id"]
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="openai/gpt-error-500", messages=[{"role": "user", "content": "e"}])
    ids["e"] = err.value.response.headers["x-opentracy-trace-id"]
    for trace_id in ids.values():
        read_trace(trace_id)  # written
    return ids


def browser(user: Any = None) -> Client:
    c = Client()
    if user is not None:
        c.force_login(user)
    return c


def rows(html: str) -> list[str]:
    """Trace ids of the table's rows, in order."""
    return re.findall(r'<tr id="trace-([0-9a-f-]{36})"', html)


def tile(html: str, name: str) -> str:
    found = re.search(rf'data-kpi="{name}" data-value="([^"]*)"', html)
    assert found, f"no {name} tile"
    return found.group(1)


# ---------------------------------------------------------------- access


def test_owner_and_member_see_every_page(people: dict[str, Any], traffic: dict[str, str]) -> None:
    for who in ("owner", "member"):
        b = browser(people[who])
        overview = b.get("/projects/acme/overview")
        assert overview.status_code == 200 and 'id="kpis"' in overview.content.decode()
        listing = b.get("/projects/acme/traces")
        assert listing.status_code == 200 and set(rows(listing.content.decode())) == set(traffic.values())
        detail = b.get(f"/projects/acme/traces/{traffic['a']}")
        assert detail.status_code == 200 and "question a zebraa" in detail.content.decode()


def test_outsiders_get_404_and_anonymous_visitors_the_login_page(
    people: dict[str, Any], traffic: dict[str, str]
) -> None:
    outsider = browser(people["outsider"])
    urls = ["/projects/acme/overview", "/projects/acme/traces", f"/projects/acme/traces/{traffic['a']}"]
    for url in urls:
        assert outsider.get(url).status_code == 404, url
    # Their own project does not show another project's trace either.
    assert outsider.get(f"/projects/other/traces/{traffic['a']}").status_code == 404
    assert outsider.get(f"/projects/acme/traces/{uuid.uuid4()}").status_code == 404
    assert outsider.get("/projects/other/traces").status_code == 200
    assert rows(outsider.get("/projects/other/traces").content.decode()) == []
    member = browser(people["member"])
    assert member.get(f"/projects/acme/traces/{uuid.uuid4()}").status_code == 404
    anonymous = browser()
    for url in urls:
        resp = anonymous.get(url)
        assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/?next=/projects/acme/"), url


# ---------------------------------------------------------------- the traces page


def test_filters_in_the_url_filter_the_table(people: dict[str, Any], traffic: dict[str, str]) -> None:
    b = browser(people["member"])

    def ids(**params: str) -> set[str]:
        resp = b.get("/projects/acme/traces", params)
        assert resp.status_code == 200, resp.content
        return set(rows(resp.content.decode()))

    assert ids(provider="anthropic") == {traffic["c"]}
    assert ids(model="openai/gpt-4o-mini") == {traffic["a"], traffic["b"], traffic["x"]}
    assert ids(status="error") == {traffic["e"]}
    assert ids(metadata="team=search") == {traffic["a"], traffic["c"]}
    assert ids(q="ZEBRAb") == {traffic["b"]}
    assert ids(range="1h", min_latency_ms="0") == set(traffic.values())
    assert ids(range="custom", since="2099-01-01T00:00") == set()
    # The form shows the values it filtered by.
    html = b.get("/projects/acme/traces", {"provider": "anthropic", "q": "zebrac"}).content.decode()
    assert 'name="provider" value="anthropic"' in html and 'name="q" value="zebrac"' in html


def test_the_traces_page_defaults_to_the_last_7_days_and_all_time_is_a_link(
    people: dict[str, Any], traffic: dict[str, str]
) -> None:
    old = {"trace_id": str(uuid.uuid4()), "project_id": people["project"].id, "timestamp": time.time() - 8 * 86400}
    get_writer().submit({**old, "requested_model": "gpt-4o-mini", "provider": "openai", "latency_ms": 5.0})
    get_writer().flush()
    b = browser(people["member"])
    page = b.get("/projects/acme/traces").content.decode()
    assert '<option value="7d" selected>' in page and old["trace_id"] not in rows(page)
    assert set(rows(page)) == set(traffic.values())
    everything = b.get("/projects/acme/traces", {"range": "all", "limit": "3"}).content.decode()
    assert '<option value="all" selected>Any time</option>' in everything
    older = re.search(r'<a class="button" href="([^"]+)" hx-get=', everything)
    assert older and "range=all" in older.group(1)  # the Older and export links keep it
    assert "/api/traces/export?range=all&amp;project=acme" in everything
    assert old["trace_id"] in rows(b.get("/projects/acme/traces", {"range": "all"}).content.decode())
    # since without a range is a custom window, and the form says so (resubmitting keeps it).
    since = b.get("/projects/acme/traces", {"since": "2000-01-01T00:00"}).content.decode()
    assert '<option value="custom" selected>' in since and old["trace_id"] in rows(since)
    # The API keeps all time as its default and takes range=all; stats refuse it (they need a window).
    assert b.get("/api/traces", {"project": "acme", "range": "all"}).status_code == 200
    assert b.get("/api/stats/models", {"project": "acme", "range": "all"}).status_code == 400


def test_a_bad_filter_is_a_400_naming_the_field(people: dict[str, Any], traffic: dict[str, str]) -> None:
    resp = browser(people["member"]).get("/projects/acme/traces", {"min_cost": "lots", "status": "fine", "model": "x"})
    html = resp.content.decode()
    assert resp.status_code == 400
    errors = re.search(r'<ul class="errors" id="filter-errors">(.*?)</ul>', html, re.S)
    assert errors, html
    assert "<strong>min_cost</strong>: Must be a number." in errors.group(1)
    assert "<strong>status</strong>: Use ok, error or an HTTP status code." in errors.group(1)
    assert 'name="min_cost" value="lots"' in html and 'name="model" value="x"' in html  # the form, to fix it
    assert rows(html) == []
    bad_cursor = browser(people["member"]).get("/projects/acme/traces", {"cursor": "garbage"})
    assert bad_cursor.status_code == 400 and "<strong>cursor</strong>" in bad_cursor.content.decode()
    bad_range = browser(people["member"]).get("/projects/acme/overview", {"range": "2y"})
    assert bad_range.status_code == 400 and "<strong>range</strong>: Use one of 1h, 24h, 7d, 30d or custom." in (
        bad_range.content.decode()
    )


def test_older_link_pages_through_with_the_filters(people: dict[str, Any], traffic: dict[str, str]) -> None:
    b = browser(people["member"])
    first = b.get("/projects/acme/traces", {"limit": "2", "provider": "openai"}).content.decode()
    seen = rows(first)
    assert len(seen) == 2
    link = re.search(r'<a class="button" href="([^"]+)" hx-get="([^"]+)" hx-target="closest tr"', first)
    assert link and link.group(1) == link.group(2)
    url = link.group(1).replace("&amp;", "&")
    assert "provider=openai" in url and "limit=2" in url and "cursor=" in url
    # Without htmx: the whole page, older rows. With htmx: only the rows and the next link.
    page = b.get(f"/projects/acme/traces{url}").content.decode()
    assert "<html" in page and len(rows(page)) == 2 and not set(rows(page)) & set(seen)
    while url:
        fragment = b.get(f"/projects/acme/traces{url}", headers=HTMX).content.decode()
        assert "<html" not in fragment and "<tbody" not in fragment
        seen += rows(fragment)
        more = re.search(r'hx-get="([^"]+)"', fragment)
        url = more.group(1).replace("&amp;", "&") if more else ""
    openai_ids = {traffic[k] for k in ("a", "b", "d", "x", "e")}
    assert len(seen) == len(set(seen)) == 5 and set(seen) == openai_ids


def test_the_prompt_is_escaped_in_the_table_and_the_detail_page(
    people: dict[str, Any], traffic: dict[str, str]
) -> None:
    b = browser(people["member"])
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    table = b.get("/projects/acme/traces").content.decode()
    assert XSS not in table and escaped in table
    detail = b.get(f"/projects/acme/traces/{traffic['x']}").content.decode()
    assert XSS not in detail and detail.count(escaped) >= 2  # the prompt and the echoed answer


# ---------------------------------------------------------------- the trace page


def test_copy_as_curl_and_python_replay_the_request(people: dict[str, Any], traffic: dict[str, str]) -> None:
    resp = browser(people["member"]).get(f"/projects/acme/traces/{traffic['a']}")
    curl, python = resp.context["curl"], resp.context["python"]
    argv = shlex.split(curl.replace("\\\n", " "))
    assert argv[:2] == ["curl", "http://testserver/v1/chat/completions"]
    body = json.loads(argv[argv.index("-d") + 1])
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.2
    assert body["messages"] == [{"role": "user", "content": "question a zebraa"}]
    assert body["metadata"] == {"team": "search"}
    assert 'OpenAI(base_url="http://testserver/v1", api_key="<your key>")' in python
    assert "'model': 'gpt-4o-mini'" in python and "'content': 'question a zebraa'" in python
    html = resp.content.decode()
    assert 'id="replay-curl"' in html and "&quot;model&quot;: &quot;gpt-4o-mini&quot;" in html
    assert 'data-copy="#replay-curl"' in html and 'data-copy="#replay-python"' in html
    # The XSS prompt stays inside the shell quoting and the HTML escaping.
    x = browser(people["member"]).get(f"/projects/acme/traces/{traffic['x']}")
    assert XSS in x.context["curl"] and XSS not in x.content.decode()


def test_detail_shows_the_conversation_attempts_costs_and_annotations(
    people: dict[str, Any], traffic: dict[str, str], client: Any
) -> None:
    project = people["project"]
    trace_id = str(uuid.uuid4())
    messages = [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "image_url", "image_url": {"url": "javascript:alert(2)"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"cat","n":2}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
    ]
    get_writer().submit(
        {
            "trace_id": trace_id,
            "project_id": project.id,
            "timestamp": time.time(),
            "requested_model": "smart",
            "alias": "smart",
            "resolved_model": "openai/gpt-4o-mini",
            "provider": "openai",
            "request_messages": json.dumps(messages),
            "request_params": json.dumps({"temperature": 0.5, "max_tokens": 30}),
            "response_message": json.dumps({"role": "assistant", "content": "It is a cat."}),
            "prompt_tokens": 40,
            "completion_tokens": 5,
            "cached_tokens": 8,
            "latency_ms": 321.0,
            "ttft_ms": 120.0,
            "overhead_ms": 1.5,
            "attempts": [("openai/gpt-4o", 503, "upstream_unavailable", 12.0), ("openai/gpt-4o-mini", 200, "", 300.0)],
            "retries": 0,
            "fallbacks": 1,
            "metadata": {"team": "vision"},
            "tags": ["golden"],
        }
    )
    get_writer().flush()
    read_trace(trace_id)
    b = browser(people["member"])
    resp = b.get(f"/projects/acme/traces/{trace_id}")
    html = resp.content.decode()
    assert resp.status_code == 200
    for text in ("You are terse.", "What is in this picture?", "a cat", "It is a cat.", "lookup", "call_1"):
        assert text in html, text
    assert '<a href="https://example.com/cat.png"' in html
    assert 'href="javascript:' not in html and "javascript:alert(2)" in html  # shown, not linked
    assert "&quot;q&quot;: &quot;cat&quot;,\n  &quot;n&quot;: 2" in html  # arguments pretty-printed
    assert "&quot;max_tokens&quot;: 30" in html
    assert "upstream_unavailable" in html and "1 fallback" in html and "0 retries" in html
    assert "vision" in html and "golden" in html
    assert "321 ms" in html and "120 ms" in html and "1.5 ms" in html
    trace = resp.context["trace"]
    assert trace["cost_total_usd"] > 0 and trace["cost_input_usd"] > 0  # priced by the writer
    from traces.templatetags.traces_ui import usd

    for key in ("cost_input_usd", "cost_output_usd", "cost_total_usd"):
        assert usd(trace[key]) in html
    # Feedback given through the API shows too.
    from traces.services import annotation_add

    annotation_add(project_id=project.id, trace_id=uuid.UUID(trace_id), user_id=0, score=7, comment="fine <b>")
    html = b.get(f"/projects/acme/traces/{trace_id}").content.decode()
    assert "<strong>7.0</strong>/10" in html and "fine &lt;b&gt;" in html


# ---------------------------------------------------------------- the overview


def test_overview_shows_the_totals_of_by_model(people: dict[str, Any], traffic: dict[str, str]) -> None:
    project = people["project"]
    b = browser(people["member"])
    resp = b.get("/projects/acme/overview", {"range": "24h"})
    html = resp.content.decode()
    assert resp.status_code == 200 and 'id="empty-state"' not in html
    totals = stats.by_model(project_id=project.id, filters=parse_filters({"range": "24h"}))["totals"]
    assert totals["requests"] == 6 and totals["errors"] == 1
    assert tile(html, "requests") == "6" and float(tile(html, "error_rate")) == totals["error_rate"]
    assert float(tile(html, "cost_usd")) == totals["cost_usd"] > 0
    lat = [totals["latency_p50_ms"], totals["latency_p95_ms"], totals["latency_p99_ms"]]
    assert [float(v) for v in tile(html, "latency").split()] == lat
    assert tile(html, "tokens") == f"{totals['prompt_tokens']} {totals['completion_tokens']}"
    assert 'hx-get="/projects/acme/overview/saved?range=24h"' in html  # loaded after the page
    saved = b.get("/projects/acme/overview/saved", {"range": "24h"}).content.decode()
    assert tile(saved, "saved") == "0" and "available once routing or a distilled model serves traffic" in saved
    assert "<b>16.7%</b>" in html  # 1 error in 6
    # Charts: the series embedded as JSON for uPlot, with every request counted.
    series = resp.context["chart"]
    assert sum(series["requests"]) == 6 and sum(series["errors"]) == 1
    assert len(series["t"]) == len(series["p99"]) == len(series["cost"])
    assert 'id="overview-series"' in html and "vendor/uPlot.iife.min.js" in html and "traces/overview.js" in html
    # Per-model rows, each linking to its traces.
    assert "/projects/acme/traces?range=24h&amp;model=anthropic%2Fclaude-haiku-4-5" in html
    filtered = b.get("/projects/acme/overview", {"range": "24h", "provider": "anthropic"}).content.decode()
    assert tile(filtered, "requests") == "1" and 'name="provider" value="anthropic"' in filtered


def test_empty_state_tells_the_base_url(people: dict[str, Any]) -> None:
    html = browser(people["owner"]).get("/projects/acme/overview").content.decode()
    assert 'id="empty-state"' in html and 'id="kpis"' not in html
    assert 'OpenAI(base_url="http://testserver/v1", api_key="&lt;your key&gt;")' in html
    assert 'href="/projects/acme/settings#keys"' in html and 'href="/projects/acme/providers"' in html


def test_header_switches_project_keeping_the_page_kind(people: dict[str, Any], traffic: dict[str, str]) -> None:
    from gateway.services import membership_add

    membership_add(project=people["other_project"], user=people["member"])
    b = browser(people["member"])
    listing = b.get("/projects/acme/traces").content.decode()
    assert 'href="/projects/other/traces"' in listing and 'href="/projects/acme/overview"' in listing
    overview = b.get("/projects/other/overview").content.decode()
    assert 'href="/projects/acme/overview"' in overview and 'href="/projects/other/providers"' in overview
    detail = b.get(f"/projects/acme/traces/{traffic['a']}").content.decode()
    assert 'href="/projects/other/traces"' in detail
    outsider = browser(people["outsider"]).get("/projects/other/traces").content.decode()
    assert "/projects/acme/" not in outsider
