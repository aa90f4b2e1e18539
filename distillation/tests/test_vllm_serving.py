"""Approved students served by vLLM: the approval loads the adapter into the project's vLLM server
(a fake speaking vLLM's dynamic LoRA API on loopback) under its versioned name and re-points the
alias at `vllm/<name>`; a chat through /v1 (the official SDK) then reaches vLLM under that name. A
failed load changes nothing; a rollback unloads (best effort) and restores the alias."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from django.test import Client

from distillation import services as S
from distillation.models import DistillationJob, Student, StudentCounter
from gateway.models import Alias, AliasChange
from gateway.services import alias_set, credential_set
from routing import learning
from routing.models import RoutingPolicy
from tests.fakes.vllm_upstream import FakeVllm

from .job_support import adapter, done_job

pytestmark = pytest.mark.django_db(transaction=True)

LOAD, UNLOAD, CHAT = "/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/v1/chat/completions"


def owner(people: dict[str, Any]) -> Client:
    client = Client()
    client.force_login(people["owner"])
    return client


def approve(client: Client, job: DistillationJob, **body: Any) -> Any:
    return client.post(f"/api/distillation/jobs/{job.pk}/approve", body, content_type="application/json")


def test_approve_loads_the_adapter_and_the_alias_reaches_vllm(
    people: dict[str, Any],
    vllm: FakeVllm,
    client: Any,
    server_url: str,
    outsider_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alias_set(project=people["project"], name="bot", target="openai/gpt-4o", changed_by="test")
    job = done_job(people, adapter(tmp_path / "a"))
    resp = approve(owner(people), job, alias="bot", serve="vllm")
    assert resp.status_code == 200, resp.json()
    name = "smollm2-135m-instruct-v1"
    assert resp.json() == {"student": name, "alias": "bot", "target": f"vllm/{name}", "serving": "vllm"}
    assert vllm.calls(LOAD) == [{"lora_name": name, "lora_path": str(tmp_path / "a")}]
    assert Alias.objects.get(project=people["project"], name="bot").target == f"vllm/{name}"

    reply = client.chat.completions.create(model="bot", messages=[{"role": "user", "content": "refund please"}])
    assert reply.choices[0].message.content == f"[{name}] You said: refund please"
    assert vllm.calls(CHAT)[-1]["model"] == name
    stream = client.chat.completions.create(model="bot", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == f"[{name}] You said: hi"
    # A name vLLM does not serve is OpenAI's 404, through the gateway.
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model=f"vllm/{name}-nope", messages=[{"role": "user", "content": "hi"}])
    chats = len(vllm.calls(CHAT))

    # On a vLLM server every project can reach (VLLM_BASE_URL), another project cannot call this
    # project's adapter, by name or through an alias of its own.
    monkeypatch.setenv("VLLM_BASE_URL", f"{vllm.base_url}/v1")
    outsider = openai.OpenAI(base_url=f"{server_url}/v1", api_key=outsider_key, max_retries=0, timeout=20)
    alias_set(project=people["other_project"], name="borrowed", target=f"vllm/{name}", changed_by="test")
    for model in (f"vllm/{name}", "borrowed"):
        with pytest.raises(openai.NotFoundError):
            outsider.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert len(vllm.calls(CHAT)) == chats  # refused by the gateway, never sent to vLLM
    mine = client.chat.completions.create(model=f"vllm/{name}", messages=[{"role": "user", "content": "x"}])
    assert mine.choices[0].message.content == f"[{name}] You said: x"

    # A second approval takes the next name; vLLM holds both, each under its own name.
    second = approve(owner(people), done_job(people, adapter(tmp_path / "b")), alias="bot", serve="vllm")
    assert second.json()["student"] == "smollm2-135m-instruct-v2"
    assert set(vllm.loaded) == {name, "smollm2-135m-instruct-v2"}


def test_a_failed_load_changes_nothing_and_says_why(people: dict[str, Any], vllm: FakeVllm, tmp_path: Path) -> None:
    project = people["project"]
    alias_set(project=project, name="bot", target="openai/gpt-4o", changed_by="test")
    history = AliasChange.objects.filter(project=project).count()
    client = owner(people)

    no_adapter = approve(client, done_job(people, tmp_path), alias="bot", serve="vllm")  # no adapter_config.json
    assert no_adapter.status_code == 502
    detail = no_adapter.json()["detail"]
    assert "could not be loaded into vLLM, so 'bot' was not changed" in detail and "No adapter found" in detail

    too_big = approve(client, done_job(people, adapter(tmp_path / "big", rank=128)), alias="bot", serve="vllm")
    assert too_big.status_code == 502 and "greater than max_lora_rank 64" in too_big.json()["detail"]

    vllm.runtime_updates = False
    off = approve(client, done_job(people, adapter(tmp_path / "a")), alias="bot", serve="vllm")
    assert off.status_code == 502 and "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in off.json()["detail"]

    assert Alias.objects.get(project=project, name="bot").target == "openai/gpt-4o"
    assert AliasChange.objects.filter(project=project).count() == history
    assert not Student.objects.exists() and not vllm.loaded
    # No vLLM server at all is the caller's to fix: 400, before a version number is taken.
    from gateway.models import ProviderCredential

    ProviderCredential.objects.filter(provider="vllm").delete()
    missing = approve(client, done_job(people, adapter(tmp_path / "c")), alias="bot", serve="vllm")
    assert missing.status_code == 400 and "No vLLM server for this project" in missing.json()["serve"][0]
    bad = approve(client, done_job(people, adapter(tmp_path / "c")), alias="bot", serve="tgi")
    assert bad.status_code == 400 and "serve" in bad.json()
    # The failed approvals burnt their numbers: a name never comes back with other weights.
    vllm.runtime_updates = True
    credential_set(project=project, provider="vllm", api_key="", base_url=f"{vllm.base_url}/v1")
    ok = approve(client, done_job(people, adapter(tmp_path / "d")), alias="bot", serve="vllm")
    assert ok.status_code == 200 and ok.json()["student"] == "smollm2-135m-instruct-v4"


def test_rollback_unloads_and_restores_the_alias(people: dict[str, Any], vllm: FakeVllm, tmp_path: Path) -> None:
    project, client = people["project"], owner(people)
    alias_set(project=project, name="bot", target="openai/gpt-4o", changed_by="test")
    first = done_job(people, adapter(tmp_path / "a"))
    assert approve(client, first, alias="bot", serve="vllm").status_code == 200
    back = client.post(f"/api/distillation/jobs/{first.pk}/rollback")
    assert back.status_code == 200 and back.json() == {"alias": "bot", "target": "openai/gpt-4o"}
    assert vllm.calls(UNLOAD) == [{"lora_name": "smollm2-135m-instruct-v1"}] and not vllm.loaded
    assert Alias.objects.get(project=project, name="bot").target == "openai/gpt-4o"

    # vLLM restarted and lost the adapter: the unload fails, is reported, and the alias still goes back.
    second = done_job(people, adapter(tmp_path / "b"))
    assert approve(client, second, alias="new-bot", serve="vllm").status_code == 200
    vllm.loaded.clear()
    lost = client.post(f"/api/distillation/jobs/{second.pk}/rollback")
    assert lost.status_code == 200 and lost.json()["target"] == ""
    assert "cannot be found" in lost.json()["warnings"][0] and "smollm2-135m-instruct-v2" in lost.json()["warnings"][0]
    assert not Alias.objects.filter(project=project, name="new-bot").exists()


def test_setting_picks_the_serving_and_routing_adds_the_served_model(
    people: dict[str, Any], vllm: FakeVllm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.setattr(learning, "student_approved", lambda student: None)
    project = people["project"]
    policy = RoutingPolicy.objects.create(project=project, name="support", candidates=["openai/gpt-4o"])
    settings.OPENTRACY_STUDENT_SERVING = "vllm"
    student = S.job_approve(job=done_job(people, adapter(tmp_path / "a")), alias="bot", user=people["owner"])
    assert student.serving == "vllm" and student.model == f"vllm/{student.name}" and student.name in vllm.loaded
    assert learning.student_join(student=student) == [policy.pk]
    policy.refresh_from_db()
    assert policy.candidates == ["openai/gpt-4o", f"vllm/{student.name}"]
    assert S.job_rollback(job=student.job, user=people["owner"]) == ""
    policy.refresh_from_db()
    assert policy.candidates == ["openai/gpt-4o"] and not vllm.loaded
    # Explicit local wins over the setting, and loads nothing into vLLM.
    local = S.job_approve(job=done_job(people, adapter(tmp_path / "b")), alias="bot", serve="local")
    assert local.model == f"local/{local.name}" and len(vllm.calls(LOAD)) == 1


def test_names_are_never_reused_even_after_students_are_deleted(people: dict[str, Any], tmp_path: Path) -> None:
    first = S.job_approve(job=done_job(people, adapter(tmp_path / "a")), alias="bot", serve="local")
    Student.objects.filter(pk=first.pk).delete()  # as a deleted project's students go
    again = S.job_approve(job=done_job(people, adapter(tmp_path / "b")), alias="bot", serve="local")
    assert (first.name, again.name) == ("smollm2-135m-instruct-v1", "smollm2-135m-instruct-v2")
    assert StudentCounter.objects.get(prefix="smollm2-135m-instruct").last == 2
    # Two local bases with the same folder name share one sequence instead of colliding.
    for base in ("a", "b"):
        (tmp_path / base / "tiny").mkdir(parents=True)
    names = []
    for base in ("a", "b"):
        job = done_job(people, adapter(tmp_path / f"ad-{base}"))
        DistillationJob.objects.filter(pk=job.pk).update(student=str(tmp_path / base / "tiny"))
        job.refresh_from_db()
        names.append(S.job_approve(job=job, alias=f"bot-{base}", serve="local").name)
    assert names == ["tiny-v1", "tiny-v2"]
