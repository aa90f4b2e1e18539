"""The clusters pages: start a run, its progress fragment, the clusters table (rename inline, flag,
merge, split) and a cluster's detail; outsiders get 404, anonymous visitors the login page."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from datasets.models import Cluster, ClusteringRun
from datasets.tests.cluster_support import banking, finish, write_banking

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HX-Request": "true"}


def _browser(user: Any) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_a_member_starts_a_run_follows_it_and_curates_the_clusters(people: dict[str, Any]) -> None:
    project = people["project"]
    write_banking(project.id, banking(per_intent=20, intents=("exchange_rate", "pin_blocked", "card_arrival")))
    member = _browser(people["member"])
    empty = member.get("/projects/acme/clusters")
    assert empty.status_code == 200 and b"No clustering yet" in empty.content
    assert b'href="/projects/acme/clusters"' in empty.content  # the project nav links here
    assert b'embedded with <span id="embedding-model">all-minilm-l6-v2</span>' in empty.content

    resp = member.post("/projects/acme/clusters/runs", {"range": "24h", "model": "", "alias": "", "namer": "namer"})
    assert resp.status_code == 302 and resp["Location"] == "/projects/acme/clusters"
    run = ClusteringRun.objects.get()
    assert run.filters == {"range": "24h"} and run.created_by == people["member"]
    if not run.finished:  # the embedded worker may have taken it already
        page = member.get("/projects/acme/clusters").content.decode()
        assert f'hx-get="/projects/acme/clusters/runs/{run.pk}/progress?polling=1"' in page
    run = finish(run)
    assert run.status == ClusteringRun.Status.DONE, run.message

    # The poll that finds the run finished reloads the page.
    fragment = member.get(f"/projects/acme/clusters/runs/{run.pk}/progress?polling=1", headers=HTMX)
    assert fragment["HX-Refresh"] == "true" and b"hx-trigger" not in fragment.content

    page = member.get("/projects/acme/clusters").content.decode()
    assert "Named from keywords (no namer reachable: the namer alias &#x27;namer&#x27; is not configured" in page
    clusters = list(Cluster.objects.filter(run=run))
    for c in clusters:
        assert f'id="cluster-{c.pk}"' in page and c.keywords[0] in page
    assert 'action="/projects/acme/datasets/create"' in page  # picked clusters become a dataset
    assert page.count('name="clusters"') == len(clusters)
    a, b = clusters[0], clusters[1]

    # Rename inline and flag: htmx swaps the row.
    row = member.post(f"/projects/acme/clusters/{a.pk}/update", {"name": "Exchange rates"}, headers=HTMX)
    assert row.status_code == 200 and b'value="Exchange rates"' in row.content and b"<tr" in row.content
    row = member.post(f"/projects/acme/clusters/{a.pk}/update", {"worth_distilling": "on"}, headers=HTMX)
    assert b"\xe2\x98\x85 yes" in row.content  # ★ yes
    a.refresh_from_db()
    assert a.name == "Exchange rates" and a.name_source == "person" and a.worth_distilling
    bad = member.post(f"/projects/acme/clusters/{a.pk}/update", {"name": " "}, headers=HTMX)
    assert b"Give a name." in bad.content

    detail = member.get(f"/projects/acme/clusters/{a.pk}").content.decode()
    assert "Exchange rates" in detail and "named by a person" in detail
    rep = a.representatives[0]
    assert f'href="/projects/acme/traces/{rep["trace_id"]}"' in detail
    assert "openai/gpt-4o-mini" in detail  # models served

    merged = member.post("/projects/acme/clusters/merge", {"into": a.pk, "other": b.pk}, follow=True)
    assert "Merged" in merged.content.decode()
    b.refresh_from_db()
    assert b.status == "merged" and b.merged_into_id == a.pk
    split = member.post(f"/projects/acme/clusters/{a.pk}/split", follow=True).content.decode()
    assert "Split “Exchange rates” into" in split
    a.refresh_from_db()
    assert a.status == "split"


def test_a_failed_run_shows_its_reason_and_bad_input_is_a_400(people: dict[str, Any]) -> None:
    owner = _browser(people["owner"])
    resp = owner.post("/projects/acme/clusters/runs", {"range": "1y", "namer": "namer"})
    assert resp.status_code == 400 and b"Use one of 1h, 24h, 7d, 30d, all or custom." in resp.content
    assert not ClusteringRun.objects.exists()
    owner.post("/projects/acme/clusters/runs", {"range": "1h", "namer": ""})
    run = finish(ClusteringRun.objects.get())
    assert run.status == ClusteringRun.Status.FAILED
    page = owner.get("/projects/acme/clusters").content.decode()
    assert 'id="run-message"' in page and "Too few traces: 0 traces with a prompt match the filters" in page


def test_the_progress_fragment_polls_while_running_and_cancel_stops_it(people: dict[str, Any]) -> None:
    run = ClusteringRun.objects.create(
        project=people["project"], status=ClusteringRun.Status.RUNNING, phase="embedding", progress=0.42
    )
    owner = _browser(people["owner"])
    fragment = owner.get(f"/projects/acme/clusters/runs/{run.pk}/progress?polling=1", headers=HTMX)
    html = fragment.content.decode()
    assert fragment.status_code == 200 and "HX-Refresh" not in fragment
    assert (
        'hx-trigger="every 1s [!this.dataset.live]"' in html
        and "progress/clustering/" in html
        and "embedding" in html
        and "42%" in html
    )
    cancelled = owner.post(f"/projects/acme/clusters/runs/{run.pk}/cancel", headers=HTMX).content.decode()
    assert "Cancelling" in cancelled
    run.refresh_from_db()
    assert run.cancel_requested


def test_outsiders_get_404_and_anonymous_visitors_the_login_page(people: dict[str, Any]) -> None:
    run = ClusteringRun.objects.create(project=people["project"], status=ClusteringRun.Status.DONE)
    cluster = Cluster.objects.create(project=people["project"], run=run, label=0, name="Secret")
    outsider = _browser(people["outsider"])
    gets = [
        "/projects/acme/clusters",
        f"/projects/acme/clusters/runs/{run.pk}/progress",
        f"/projects/acme/clusters/{cluster.pk}",
    ]
    posts = [
        "/projects/acme/clusters/runs",
        f"/projects/acme/clusters/runs/{run.pk}/cancel",
        f"/projects/acme/clusters/{cluster.pk}/update",
        f"/projects/acme/clusters/{cluster.pk}/split",
        "/projects/acme/clusters/merge",
    ]
    for path in gets:
        assert outsider.get(path).status_code == 404, path
        assert Client().get(path).status_code == 302, path
    for path in posts:
        assert outsider.post(path, {"name": "mine", "range": "24h"}).status_code == 404, path
        assert Client().post(path).status_code == 302, path
    # The outsider's own project does not reach this one's cluster either.
    assert outsider.get(f"/projects/other/clusters/{cluster.pk}").status_code == 404
    cluster.refresh_from_db()
    assert cluster.name == "Secret" and not ClusteringRun.objects.exclude(pk=run.pk).exists()
