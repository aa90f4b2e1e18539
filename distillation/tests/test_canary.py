"""Canaries: a finished job's student answers a share of an alias's live traffic (requests sent with
the official SDK through /v1) beside the alias's target, both sides are measured from the traces and
judged with the job's judge, then the student is promoted (the alias re-pointed, roll back works) or
stopped (the alias as before). The student is served by a fake vLLM server and the incumbent by the
fake OpenAI upstream, both on loopback speaking their wire formats."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from distillation import canary as C
from distillation import selectors
from distillation.models import Canary, CanaryVerdict, DistillationJob, Student
from gateway.models import Alias, AliasChange
from gateway.services import alias_set
from routing.models import RoutingPolicy
from tests.fakes.vllm_upstream import FakeVllm

from .job_support import adapter, done_job

pytestmark = pytest.mark.django_db(transaction=True)

STUDENT = "smollm2-135m-instruct-v1"


def incumbent_reply(body: dict[str, Any]) -> str:
    """The incumbent answers refunds exactly as the fake vLLM student does, anything else not."""
    text = body["messages"][-1]["content"]
    return f"[{STUDENT}] You said: {text}" if "refund" in text else "Please contact support."


def owner(people: dict[str, Any]) -> Client:
    client = Client()
    client.force_login(people["owner"])
    return client


def api(client: Client, method: str, path: str, **body: Any) -> Any:
    return getattr(client, method)(f"/api/distillation/jobs/{path}", body, content_type="application/json")


def chat(client: Any, prompts: list[str]) -> list[str]:
    return [
        client.chat.completions.create(model="bot", messages=[{"role": "user", "content": p}])
        .choices[0]
        .message.content
        for p in prompts
    ]


def served_by_student(vllm: FakeVllm) -> list[str]:
    """The prompts the canary's student answered (the incumbent answers refunds the same way)."""
    return [body["messages"][-1]["content"] for body in vllm.calls("/v1/chat/completions")]


def settled(canary: Canary, requests: int) -> dict[str, Any]:
    """The canary's report once the traces of `requests` requests are written."""
    from traces.writer import get_writer

    deadline = time.monotonic() + 15
    while True:
        get_writer().flush()
        report = selectors.canary_report(canary)
        if sum(side["requests"] for side in report["sides"].values()) >= requests:
            return report
        assert time.monotonic() < deadline, report
        time.sleep(0.1)


@pytest.fixture
def bot(people: dict[str, Any], providers: dict[str, Any]) -> None:
    providers["openai"].scripts["scripted-incumbent"] = [incumbent_reply]
    alias_set(project=people["project"], name="bot", target="openai/scripted-incumbent", changed_by="test")


def test_split_measure_judge_against_the_incumbent_then_promote_and_roll_back(
    people: dict[str, Any], bot: None, vllm: FakeVllm, client: Any, outsider_key: str, tmp_path: Path
) -> None:
    job = done_job(people, adapter(tmp_path / "a"), judge_kind="exact")
    web = owner(people)
    resp = api(web, "post", f"{job.pk}/canary", alias="bot", percent=50, serve="vllm")
    assert resp.status_code == 201, resp.json()
    report = resp.json()
    assert (report["student"], report["incumbent"], report["percent"]) == (
        f"vllm/{STUDENT}",
        "openai/scripted-incumbent",
        50,
    )
    assert report["status"] == "running" and report["reference_judge"] is True
    alias = Alias.objects.get(project=people["project"], name="bot")
    assert (alias.target, alias.canary_target, alias.canary_percent) == (
        "openai/scripted-incumbent",
        f"vllm/{STUDENT}",
        50,
    )
    assert not AliasChange.objects.filter(name="bot", to_target=f"vllm/{STUDENT}").exists()  # not a target change yet
    student = Student.objects.get(name=STUDENT)
    assert student.approved_at is None and student.alias == ""  # served, not approved

    prompts = [f"refund please {i}" if i % 2 else f"where is my card {i}" for i in range(40)]
    chat(client, prompts)
    by_student = served_by_student(vllm)
    assert 0 < len(by_student) < 40  # both sides answered (each with probability 1 - 2^-40)
    canary = Canary.objects.get(job=job)
    report = settled(canary, 40)
    sides = report["sides"]
    assert sides["student"]["requests"] == len(by_student)
    assert sides["incumbent"]["requests"] == 40 - len(by_student)
    assert sides["student"]["errors"] == sides["incumbent"]["errors"] == 0
    assert sides["student"]["p50_latency_ms"] > 0
    # vLLM's answers have no price: no cost per 1k to show, rather than a misleading $0.
    assert sides["student"]["unpriced"] == len(by_student) and sides["student"]["per_1k_usd"] is None

    # Exact match needs a reference: each student answer is compared with the incumbent's answer to
    # the same prompt, asked directly (the engine's own call, outside the canary's numbers).
    assert C.canary_judge(canary=canary, per_side=100) == {"student": len(by_student)}
    right = sum(1 for prompt in by_student if "refund" in prompt)
    report = settled(canary, 40)
    judged = report["sides"]["student"]["judge"]
    assert judged == {"judged": len(by_student), "unjudged": 0, "pass_rate": round(right / len(by_student), 4),
                      "mean_score": round(right / len(by_student), 3)}  # fmt: skip
    assert report["sides"]["incumbent"]["judge"]["judged"] == 0  # the reference is not judged
    assert sum(side["requests"] for side in report["sides"].values()) == 40
    assert C.canary_judge(canary=canary, per_side=100) == {"student": 0}  # nothing new to judge

    # The share can change while it runs; an outsider cannot see or touch it.
    assert api(web, "patch", f"{job.pk}/canary", percent=20).json()["percent"] == 20
    assert Alias.objects.get(project=people["project"], name="bot").canary_percent == 20
    outsider = Client(headers={"authorization": f"Bearer {outsider_key}"})
    for method, path in (("get", "canary"), ("post", "canary/promote"), ("post", "canary/stop")):
        assert api(outsider, method, f"{job.pk}/{path}").status_code == 404

    # Promote: the full swap, in the alias history; every request now reaches the student.
    resp = api(web, "post", f"{job.pk}/canary/promote")
    assert resp.json() == {"student": STUDENT, "alias": "bot", "target": f"vllm/{STUDENT}"}
    alias.refresh_from_db()
    assert (alias.target, alias.canary_target, alias.canary_percent) == (f"vllm/{STUDENT}", "", 0)
    canary.refresh_from_db()
    assert canary.status == Canary.Status.PROMOTED and canary.ended_by == "owner@example.com"
    student.refresh_from_db()
    assert student.alias == "bot" and student.replaced_target == "openai/scripted-incumbent" and student.approved_at
    assert all(r.startswith(f"[{STUDENT}]") for r in chat(client, ["refund now", "hello", "card"]))
    assert api(web, "post", f"{job.pk}/canary/promote").status_code == 400  # it ended
    # The cost tile compares before the canary with after the promotion: the mixed traffic is neither.
    tile = selectors.cost_per_1k_around_approval(people["project"].id)
    assert tile is not None and tile["before"]["requests"] == 0 and tile["student"] == f"vllm/{STUDENT}"

    assert api(web, "post", f"{job.pk}/rollback").json()["target"] == "openai/scripted-incumbent"
    assert chat(client, ["hello"]) == ["Please contact support."]


def test_a_judge_of_one_answer_judges_both_sides_and_stop_restores_the_alias(
    people: dict[str, Any], bot: None, vllm: FakeVllm, client: Any, tmp_path: Path
) -> None:
    job = done_job(people, adapter(tmp_path / "a"), judge_kind="regex", judge_options={"pattern": r"^\[.*refund"})
    canary = C.canary_start(job=job, alias="bot", percent=60, serve="vllm", user=people["owner"])
    prompts = [f"refund {i}" if i % 4 == 0 else f"card {i}" for i in range(24)]
    chat(client, prompts)
    settled(canary, 24)
    counts = C.canary_judge(canary=canary, per_side=100)
    served = {"student": 0, "incumbent": 0}
    passed = {"student": 0, "incumbent": 0}
    by_student = served_by_student(vllm)
    for prompt in prompts:
        side = "student" if prompt in by_student else "incumbent"
        served[side] += 1
        passed[side] += "refund" in prompt  # both sides answer refunds as "[student] You said: refund …"
    assert counts == served and min(served.values()) > 0
    sides = selectors.canary_report(canary)["sides"]
    for side in served:
        assert sides[side]["judge"]["pass_rate"] == round(passed[side] / served[side], 4), side
    assert CanaryVerdict.objects.filter(canary=canary).count() == 24

    resp = api(owner(people), "post", f"{job.pk}/canary/stop")
    assert resp.status_code == 200 and resp.json()["status"] == "stopped"
    assert Alias.objects.get(project=people["project"], name="bot").canary_target == ""
    assert STUDENT not in vllm.loaded  # the adapter was unloaded
    assert chat(client, ["card", "card again"]) == ["Please contact support."] * 2
    assert api(owner(people), "post", f"{job.pk}/rollback").status_code == 400  # never approved: nothing to undo


def test_bad_canaries_are_refused_with_the_reason(
    people: dict[str, Any], bot: None, vllm: FakeVllm, tmp_path: Path
) -> None:
    job = done_job(people, adapter(tmp_path / "a"))
    web = owner(people)

    def refused(field: str, **body: Any) -> str:
        resp = api(web, "post", f"{job.pk}/canary", **body)
        assert resp.status_code == 400, resp.json()
        return str(resp.json()[field])

    assert "no alias 'nope'" in refused("alias", alias="nope", percent=10, serve="vllm")
    assert "1" in refused("percent", alias="bot", percent=0) and "99" in refused("percent", alias="bot", percent=100)
    RoutingPolicy.objects.create(project=people["project"], name="support", candidates=["openai/gpt-4o"])
    alias_set(project=people["project"], name="routed", target="router/support", changed_by="test")
    assert "its policy picks" in refused("alias", alias="routed", percent=10, serve="vllm")
    queued = DistillationJob.objects.create(project=people["project"], dataset_version=job.dataset_version,
                                            teacher="openai/gpt-4o", student="smollm2-135m-instruct")  # fmt: skip
    resp = api(web, "post", f"{queued.pk}/canary", alias="bot", percent=10, serve="vllm")
    assert resp.status_code == 400 and "Only a finished job" in str(resp.json())
    assert api(web, "get", f"{queued.pk}/canary").status_code == 404

    assert api(web, "post", f"{job.pk}/canary", alias="bot", percent=10, serve="vllm").status_code == 201
    second = done_job(people, adapter(tmp_path / "b"))
    resp = api(web, "post", f"{second.pk}/canary", alias="bot", percent=10, serve="vllm")
    assert resp.status_code == 400 and "already runs on 'bot'" in str(resp.json())
    assert Student.objects.count() == 1  # the refused one registered nothing

    # Approving another student onto the alias ends the canary (its adapter goes).
    assert api(web, "post", f"{second.pk}/approve", alias="bot", serve="vllm").status_code == 200
    assert Canary.objects.get(job=job).status == Canary.Status.STOPPED
    assert Alias.objects.get(project=people["project"], name="bot").canary_target == ""
    assert set(vllm.loaded) == {"smollm2-135m-instruct-v2"}


def test_a_failing_canary_falls_back_to_the_incumbent(people: dict[str, Any], bot: None, client: Any) -> None:
    from gateway.services import alias_canary_set

    alias_canary_set(project=people["project"], name="bot", target="openai/error-503", percent=100)
    assert chat(client, ["card"]) == ["Please contact support."]


def test_the_job_page_starts_and_shows_the_canary_to_members_only(
    people: dict[str, Any], bot: None, vllm: FakeVllm, tmp_path: Path
) -> None:
    job = done_job(people, adapter(tmp_path / "a"), judge_kind="exact")
    web = owner(people)
    page = f"/projects/acme/distillation/{job.pk}"
    assert 'hx-get="' + page + '/canary"' in web.get(page).content.decode()
    panel = web.get(f"{page}/canary").content.decode()
    assert "Start canary" in panel and "canary-sides" not in panel

    refused = web.post(f"{page}/canary/start", {"alias": "bot", "percent": "0"}, HTTP_HX_REQUEST="true")
    assert "from 1 to 99 percent" in refused.content.decode()
    shown = web.post(f"{page}/canary/start", {"alias": "bot", "percent": "25", "serve": "vllm"}).content.decode()
    assert "canary-sides" in shown and f"vllm/{STUDENT}" in shown and "25% of alias" in shown
    assert "the reference the student is compared with" in shown and 'hx-trigger="every 10s"' in shown
    changed = web.post(f"{page}/canary/percent", {"percent": "40"}).content.decode()
    assert "40% of alias" in changed
    assert "Unknown canary action" in web.post(f"{page}/canary/explode").content.decode()

    outsider = Client()
    outsider.force_login(people["outsider"])
    assert outsider.get(f"/projects/acme/distillation/{job.pk}/canary").status_code == 404
    assert outsider.post(f"{page}/canary/stop").status_code == 404
    promoted = web.post(f"{page}/canary/promote", HTTP_HX_REQUEST="true")
    assert promoted.status_code == 204 and promoted["HX-Redirect"] == page
    assert Alias.objects.get(project=people["project"], name="bot").target == f"vllm/{STUDENT}"
