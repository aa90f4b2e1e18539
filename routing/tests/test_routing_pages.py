"""The Routing page: the policies list and create form, a policy's page (heat map, curve data, λ
slider, traffic, savings), saving λ, profile runs from estimate to progress, and the admin; members
only (others 404, anonymous to the login page)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from routing import prior, profile_runs
from routing.models import ProfileRun, RoutingPolicy
from routing.services import policy_create

from .policy_support import CHEAP, DEAR, logged_in, routed, set_prices, unique, write

pytestmark = pytest.mark.django_db(transaction=True)


def _embedded(page: str, element_id: str) -> Any:
    return json.loads(page.split(f'id="{element_id}" type="application/json">', 1)[1].split("</script>", 1)[0])


def _policy(people: dict[str, Any], **data: Any) -> RoutingPolicy:
    return policy_create(project=people["project"], user=people["owner"],
                         data={"name": unique("p"), "candidates": [DEAR, CHEAP], **data})  # fmt: skip


def test_list_and_create(people: dict[str, Any]) -> None:
    member = logged_in(people["member"])
    empty = member.get("/projects/acme/routing").content.decode()
    assert 'id="no-policies"' in empty and 'href="/projects/acme/routing"' in empty  # the nav link
    bad = member.post("/projects/acme/routing", {"name": "Bad Name", "candidates": "nope/x", "lam": "-1",
                                                 "is_default": "0", "required_capabilities": ""})  # fmt: skip
    page = bad.content.decode()
    assert bad.status_code == 400 and "A slug" in page and "&#x27;nope/x&#x27; is not a known model" in page
    assert "λ must be 0 or more" in page and 'value="Bad Name"' in page  # what was sent is kept
    form = {
        "name": "support", "candidates": "openai/gpt-4o\r\ngpt-4o-mini", "lam": "0.2", "is_default": ["0", "1"],
        "required_capabilities": ["", "tools"], "temperature": "0.05", "shrinkage": "8",
        "expected_output_tokens": "200", "max_latency_ms": "", "min_context_tokens": "", "default_model": "",
        "clustering_run": "",
    }  # fmt: skip
    made = member.post("/projects/acme/routing", form)
    policy = RoutingPolicy.objects.get(project=people["project"], name="support")
    assert made.status_code == 302 and made["Location"] == f"/projects/acme/routing/{policy.pk}"
    assert policy.candidates == [DEAR, CHEAP] and policy.lam == 0.2 and policy.is_default
    assert policy.required_capabilities == ["tools"] and policy.max_latency_ms is None
    listing = member.get("/projects/acme/routing").content.decode()
    assert f'id="policy-{policy.pk}"' in listing and "router/support" in listing and "default" in listing


def test_policy_page_heat_map_curve_slider_and_saving_lambda(people: dict[str, Any]) -> None:
    set_prices(people["project"])
    policy = _policy(people, lam=0.05)
    write(
        [
            routed(people["project"].id, policy.name, CHEAP, cost=None),
            routed(people["project"].id, policy.name, DEAR, cost=None),
        ]
    )
    member = logged_in(people["member"])
    got = member.get(f"/projects/acme/routing/{policy.pk}")
    assert got.status_code == 200
    page = got.content.decode()

    # The heat map: a row per cluster, a cell per candidate coloured by its error, the interval in its title.
    heat = page.split('id="heatmap"', 1)[1].split("</table>", 1)[0]
    assert heat.count("<tr data-cluster=") == len(prior.clusters())
    cells = re.findall(r'<td class="num cell" style="background: (hsl\([^)]*\))" data-model="([^"]+)" '
                       r'data-error="([^"]+)" data-samples="(\d+)"\s+title="([^"]+)"', heat)  # fmt: skip
    assert len(cells) == 2 * len(prior.clusters())
    assert {c[1] for c in cells} == {DEAR, CHEAP} and all("95% interval" in c[4] for c in cells)
    worst = max(cells, key=lambda c: float(c[2]))
    best = min(cells, key=lambda c: float(c[2]))
    hue = lambda c: int(c[0][4:].split(",")[0])  # noqa: E731 - green for low error, red for high
    assert hue(best) > hue(worst)

    # The curve as the page embeds it for the slider and uPlot, the saved λ marked.
    curve = _embedded(page, "routing-curve")
    assert curve["lam"] == 0.05 and curve["current"]["lam"] == 0.05 and curve["baseline"]["model"] == DEAR
    lams = [p["lam"] for p in curve["points"]]
    # The slider: one position per curve point, cheapest (largest λ) first, at the saved λ.
    slider = re.search(r'<input type="range" id="lam-slider" min="0" max="(\d+)" step="1" value="(\d+)"', page)
    assert slider is not None and int(slider.group(1)) == len(lams) - 1
    assert sorted(lams, reverse=True)[int(slider.group(2))] == 0.05
    assert 'id="lam-readout"' in page and "per 1k requests" in page and "routing/routing.js" in page
    assert "uPlot.iife.min.js" in page
    traffic = _embedded(page, "routing-traffic")
    assert traffic["requests"] == 2 and set(traffic["series"]) == {DEAR, CHEAP}
    assert 'id="savings-table"' in page and 'id="savings-saved"' in page

    # Saving λ from the slider's form leaves the other fields as they were.
    saved = member.post(f"/projects/acme/routing/{policy.pk}", {"lam": "2"})
    assert saved.status_code == 302
    policy.refresh_from_db()
    assert policy.lam == 2 and policy.candidates == [DEAR, CHEAP]
    page = member.get(f"/projects/acme/routing/{policy.pk}").content.decode()
    assert _embedded(page, "routing-curve")["current"]["lam"] == 2
    refused = member.post(f"/projects/acme/routing/{policy.pk}", {"lam": "-3", "candidates": "openai/gpt-4o"})
    shown = refused.content.decode()
    assert refused.status_code == 400 and "λ must be 0 or more" in shown
    # The form shows what was sent, and the saved value of what was not.
    assert 'value="-3"' in shown and f'value="{policy.name}"' in shown
    policy.refresh_from_db()
    assert policy.lam == 2 and policy.candidates == [DEAR, CHEAP]


def test_profile_run_estimate_start_and_progress(people: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    enqueued: list[int] = []
    monkeypatch.setattr(profile_runs, "_enqueue", enqueued.append)
    policy = _policy(people)
    member = logged_in(people["member"])
    estimated = member.post(f"/projects/acme/routing/{policy.pk}/profile", {"per_cluster": "3", "judge": DEAR})
    assert estimated.status_code == 302 and estimated["Location"].endswith("#profile-runs")
    run = ProfileRun.objects.get(policy=policy)
    assert run.status == "draft" and enqueued == []
    page = member.get(f"/projects/acme/routing/{policy.pk}").content.decode()
    block = page.split(f'id="run-{run.pk}"', 1)[1].split("</div>", 1)[0]
    assert f"{run.estimate['prompts']} prompts, {run.estimate['calls']} calls" in block
    assert f'/projects/acme/routing/runs/{run.pk}/start"' in block and "hx-trigger" not in block

    started = member.post(f"/projects/acme/routing/runs/{run.pk}/start", HTTP_HX_REQUEST="true")
    fragment = started.content.decode()
    assert started.status_code == 200 and "<html" not in fragment and enqueued == [run.pk]
    assert (
        f'hx-get="/projects/acme/routing/runs/{run.pk}"' in fragment
        and 'hx-trigger="every 2s [!this.dataset.live]"' in fragment
    )
    assert f'data-progress="/ws/projects/acme/progress/profile/{run.pk}"' in fragment
    ProfileRun.objects.filter(pk=run.pk).update(status="running", progress=0.25)
    polled = member.get(f"/projects/acme/routing/runs/{run.pk}", HTTP_HX_REQUEST="true").content.decode()
    assert 'value="0.25"' in polled and "25.0%" in polled and 'hx-trigger="every 2s [!this.dataset.live]"' in polled
    ProfileRun.objects.filter(pk=run.pk).update(status="done", progress=1.0, results={"judged": 7, "failed": 1,
                                                                                     "cost_usd": 0.0})  # fmt: skip
    done = member.get(f"/projects/acme/routing/runs/{run.pk}", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in done and "7 judged, 1 failed" in done  # finished: no more polling
    plain = member.get(f"/projects/acme/routing/runs/{run.pk}")
    assert plain.status_code == 302 and plain["Location"] == f"/projects/acme/routing/{policy.pk}#profile-runs"

    refused = member.post(f"/projects/acme/routing/{policy.pk}/profile", {"per_cluster": "3", "judge": "nope"})
    assert refused.status_code == 302 and ProfileRun.objects.filter(policy=policy).count() == 1
    assert "neither an alias of this project" in member.get(refused["Location"]).content.decode()


def test_outsiders_are_refused(people: dict[str, Any]) -> None:
    policy = _policy(people)
    run = ProfileRun.objects.create(policy=policy, status=ProfileRun.Status.DRAFT, judge=DEAR)
    outsider = logged_in(people["outsider"])
    gets = ["/projects/acme/routing", f"/projects/acme/routing/{policy.pk}", f"/projects/acme/routing/runs/{run.pk}"]
    posts = [
        ("/projects/acme/routing", {"name": "mine", "candidates": DEAR}),
        (f"/projects/acme/routing/{policy.pk}", {"lam": "9"}),
        (f"/projects/acme/routing/{policy.pk}/delete", {}),
        (f"/projects/acme/routing/{policy.pk}/profile", {"judge": DEAR}),
        (f"/projects/acme/routing/runs/{run.pk}/start", {}),
        (f"/projects/acme/routing/runs/{run.pk}/cancel", {}),
    ]
    for url in gets:
        assert outsider.get(url).status_code == 404, url
        assert Client().get(url)["Location"].startswith("/accounts/login/")  # anonymous: to the login page
    for url, body in posts:
        assert outsider.post(url, body).status_code == 404, url
    # Their own project's slug does not reach this project's policy either.
    assert outsider.get(f"/projects/other/routing/{policy.pk}").status_code == 404
    policy.refresh_from_db()
    assert policy.lam == 0.1 and RoutingPolicy.objects.count() == 1
    assert ProfileRun.objects.get(pk=run.pk).status == "draft"

    member = logged_in(people["member"])
    deleted = member.post(f"/projects/acme/routing/{policy.pk}/delete")
    assert deleted.status_code == 302 and not RoutingPolicy.objects.exists()


def test_admin_checks_policies_like_the_api(people: dict[str, Any]) -> None:
    admin = get_user_model().objects.create_superuser("admin@example.com", password="pw-admin-123")
    staff = logged_in(admin)
    other = _policy(people, is_default=True)
    form = {"project": people["project"].pk, "name": "from-admin", "candidates": json.dumps([DEAR, DEAR]),
            "lam": "0.1", "temperature": "0.05", "shrinkage": "8", "expected_output_tokens": "200",
            "required_capabilities": "[]", "default_model": "", "is_default": "on",
            "cells-TOTAL_FORMS": "0", "cells-INITIAL_FORMS": "0"}  # fmt: skip
    refused = staff.post("/admin/routing/routingpolicy/add/", form)
    assert refused.status_code == 200 and "listed twice" in refused.content.decode()
    form["candidates"] = json.dumps([DEAR, "gpt-4o-mini"])
    added = staff.post("/admin/routing/routingpolicy/add/", form)
    assert added.status_code == 302, added.content.decode()[:2000]
    made = RoutingPolicy.objects.get(name="from-admin")
    assert made.candidates == [DEAR, CHEAP] and made.is_default and made.created_by == admin
    other.refresh_from_db()
    assert other.is_default is False  # one default per project, whoever saves
    for url in ("/admin/routing/routingpolicy/", "/admin/routing/profilecell/", "/admin/routing/profilerun/"):
        assert staff.get(url).status_code == 200, url
