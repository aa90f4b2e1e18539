"""Live progress of long jobs over Channels (opentracy_site/progress.py and progress_consumer.py):
a judge run executed by the real embedded worker pushes its progress, ETA and final state to a
member's websocket through the real server; outsiders, anonymous sockets and other projects' jobs
are refused; the throttle coalesces bursts and always lets the final state through."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from datasets import curation as C
from datasets import judge as J
from opentracy_site import progress
from opentracy_site.progress_consumer import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from traces.tests.test_live import close_code, session_cookie

ROWS = 12
SECONDS_PER_VERDICT = 0.25  # the run lasts about 3 s: long enough for an ETA (progress.ETA_MIN_S)


def open_progress(server_url: str, cookie: str | None, kind: str, pk: int, slug: str = "acme") -> ClientConnection:
    url = server_url.replace("http://", "ws://") + f"/ws/projects/{slug}/progress/{kind}/{pk}"
    headers = {"Cookie": cookie} if cookie else {}
    return connect(url, additional_headers=headers, origin=Origin(server_url), open_timeout=5)


def _judge_run(people: dict[str, Any], rows: int = ROWS) -> Any:
    lines = "\n".join(json.dumps({"prompt": f"Question {i}", "response": f"answer {i}"}) for i in range(rows))
    dataset = C.dataset_import_jsonl(
        project=people["project"], name="Watched", file=lines.encode(), user=people["owner"]
    )
    return J.judge_run_create(version=C.open_version(dataset=dataset), kind="pointwise", user=people["owner"])


@pytest.fixture
def slow_judge(people: dict[str, Any], providers: dict[str, Any]) -> Any:
    from gateway.services import alias_set

    alias_set(project=people["project"], name="judge", target="openai/scripted-judge", changed_by="test")
    fake = providers["openai"]

    def verdict(body: dict[str, Any]) -> str:
        time.sleep(SECONDS_PER_VERDICT)
        return json.dumps({"correctness": 8, "helpfulness": 8, "format": 8, "reason": "fine"})

    fake.scripts["scripted-judge"] = [verdict]
    yield fake
    fake.scripts.clear()


@pytest.mark.django_db(transaction=True)
def test_a_members_socket_follows_a_judge_run_to_its_final_state(
    server_url: str, people: dict[str, Any], slow_judge: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentracy_site.worker import start_embedded_worker

    start_embedded_worker()
    monkeypatch.setattr(J, "PROGRESS_EVERY", 1)  # a progress write per row (the worker runs in this process)
    enqueue = J._enqueue
    monkeypatch.setattr(J, "_enqueue", lambda run_id: None)  # queued only once the socket listens
    run = _judge_run(people)
    events: list[dict[str, Any]] = []
    with open_progress(server_url, session_cookie(people["member"]), "judge", run.pk) as ws:
        first = json.loads(ws.recv(timeout=5))
        assert first == {"status": "queued", "progress": 0.0, "message": "", "initial": True}
        started = time.monotonic()
        enqueue(run.pk)
        deadline = started + 60
        while not events or events[-1].get("status") not in progress.FINISHED:
            assert time.monotonic() < deadline, f"no final state; got {events}"
            events.append(json.loads(ws.recv(timeout=deadline - time.monotonic())))
        elapsed = time.monotonic() - started
    run.refresh_from_db()
    assert run.status == "done"
    final = events[-1]
    assert final["status"] == "done" and final["progress"] == 1.0 and final["message"] == f"Judged {ROWS} rows."
    moving = [e["progress"] for e in events[:-1] if "progress" in e]
    assert any(0 < p < 1 for p in moving), events
    assert moving == sorted(moving)  # in order, never backwards
    assert any(e.get("status") == "running" for e in events)
    # Throttled: one progress write per row, but at most one event per interval (plus the final).
    assert len(events) <= elapsed / progress.INTERVAL_S + 2
    etas = [e["eta_s"] for e in events if e.get("eta_s") is not None]
    assert etas and all(0 <= eta < 60 for eta in etas), events


@pytest.mark.django_db(transaction=True)
def test_outsiders_anonymous_sockets_and_other_projects_jobs_are_refused(
    server_url: str, people: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datasets.models import ClusteringRun

    monkeypatch.setattr(J, "_enqueue", lambda run_id: None)
    run = _judge_run(people, rows=2)
    theirs = ClusteringRun.objects.create(project=people["other_project"])
    with open_progress(server_url, None, "judge", run.pk) as ws:
        assert close_code(ws) == CLOSE_UNAUTHENTICATED
    with open_progress(server_url, session_cookie(people["outsider"]), "judge", run.pk) as ws:
        assert close_code(ws) == CLOSE_FORBIDDEN  # not a member of acme
    # The outsider's own project, someone else's job: not found, exactly like a missing one.
    with open_progress(server_url, session_cookie(people["outsider"]), "judge", run.pk, slug="other") as ws:
        assert close_code(ws) == CLOSE_NOT_FOUND
    member = session_cookie(people["member"])
    for kind, pk in (("clustering", theirs.pk), ("clustering", theirs.pk + 1000), ("nonsense", run.pk)):
        with open_progress(server_url, member, kind, pk) as ws:
            assert close_code(ws) == CLOSE_NOT_FOUND
    with open_progress(server_url, session_cookie(people["outsider"]), "clustering", theirs.pk, slug="other") as ws:
        assert json.loads(ws.recv(timeout=5))["status"] == "queued"  # its owner sees it


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_coalesces_a_burst_and_always_sends_the_final_state() -> None:
    clock = Clock()
    c = progress.Coalescer(interval=0.25, clock=clock)
    c.offer("g", {"status": "running", "phase": "embedding", "progress": 0.0})
    assert c.take_due() == [("g", {"status": "running", "phase": "embedding", "progress": 0.0, "eta_s": None})]
    sent: list[dict[str, Any]] = []
    step = 1 / 64  # exact in binary, so the interval boundaries are too
    for i in range(1, 65):  # 64 updates over one second
        clock.now += step
        c.offer("g", {"progress": i / 200})
        sent += [e for _, e in c.take_due()]
    assert len(sent) == 4  # one per 0.25 s, not 64
    clock.now += step
    c.offer("g", {"progress": 0.5})
    assert c.take_due() == [] and c.wait_s() == 0.25 - step  # the newest is pending, due later
    clock.now += 0.25
    sent += [e for _, e in c.take_due()]
    assert sent[-1]["progress"] == 0.5  # nothing newer is lost, only coalesced
    assert c.take_due() == [] and c.wait_s() is None
    # The final state goes at once, even inside the interval, and the job is forgotten.
    c.offer("g", {"progress": 0.6})
    c.offer("g", {"status": "done", "progress": 1.0, "message": "Clustered."})
    ((group, final),) = c.take_due()
    assert group == "g" and final["status"] == "done" and final["message"] == "Clustered." and final["progress"] == 1.0
    assert c.jobs == {}


def test_eta_comes_from_the_rate_since_the_phase_began() -> None:
    clock = Clock()
    c = progress.Coalescer(interval=0.0, clock=clock)
    c.offer("g", {"phase": "sampling", "progress": 0.0})
    clock.now += 1.0
    c.offer("g", {"progress": 0.1})
    assert c.take_due()[0][1]["eta_s"] is None  # too early to say
    clock.now += 3.0
    c.offer("g", {"progress": 0.2})  # 0.2 in 4 s: 0.8 left takes 16 s
    assert c.take_due()[0][1]["eta_s"] == 16.0
    clock.now += 1.0
    c.offer("g", {"phase": "training", "progress": 0.5})  # a new phase restarts the clock
    assert c.take_due()[0][1]["eta_s"] is None
    clock.now += 10.0
    c.offer("g", {"progress": 0.75})  # 0.25 in 10 s: 0.25 left takes 10 s
    assert c.take_due()[0][1]["eta_s"] == 10.0


def test_compact_events_carry_step_loss_and_the_newest_points() -> None:
    history = [{"step": i, "loss": 1.0 / i, "kl": 0.1} for i in range(1, 81)]
    event = progress.compact({"metrics": {"history": history, "steps": 200}, "progress": 0.6, "finished_at": "x"})
    assert event["step"] == 80 and event["steps"] == 200 and event["loss"] == pytest.approx(1 / 80)
    assert len(event["points"]) == progress.HISTORY_POINTS and event["points"][-1]["step"] == 80
    assert "finished_at" not in event and progress.compact({"cancel_requested": True}) == {}


def test_publish_never_raises_on_bad_fields() -> None:
    progress.publish("judge", 987654, progress="not a number")  # logged, not raised
    assert progress.group_name("judge", 987654) not in progress._coalescer.jobs


@pytest.mark.django_db(transaction=True)
def test_a_job_cancelled_before_a_worker_took_it_reaches_open_sockets(server_url: str, people: dict[str, Any]) -> None:
    """No worker publishes for a queued job cancelled at once: the service does, or a watching page
    (its polling paused while the socket is up) would wait for ever."""
    from datasets import runs
    from datasets.models import ClusteringRun

    run = ClusteringRun.objects.create(project=people["project"])
    with open_progress(server_url, session_cookie(people["member"]), "clustering", run.pk) as ws:
        assert json.loads(ws.recv(timeout=5))["status"] == "queued"
        runs.run_cancel(run=run)
        event = json.loads(ws.recv(timeout=5))
    assert event["status"] == "cancelled" and event["message"] == "Cancelled before it started."
