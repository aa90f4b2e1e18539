"""Exporting a trained student through the live server: the adapter zip loads with peft, the merged
zip with transformers (and answers as base + adapter), the merged folder is made once; a job without
an adapter is a clear 400; another project's caller gets 404.

One real LoRA step on SmolLM2-135M-Instruct on the CPU; the converted weights are cached under
var/models of the checkout (as the trainer's tests do) unless OPENTRACY_LOCAL_MODEL_DIR is set."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import pytest
from django.conf import settings
from django.test import Client

from distillation import services as S
from distillation import trainer
from distillation.models import DistillationJob
from distillation.trainer import TrainExample, TrainSettings

from .job_support import frozen_version, teacher_alias

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "smollm2-135m-instruct"
PROMPT = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A job folder with a real adapter from one SFT step."""
    old = settings.OPENTRACY_LOCAL_MODEL_DIR
    if "OPENTRACY_LOCAL_MODEL_DIR" not in os.environ:
        settings.OPENTRACY_LOCAL_MODEL_DIR = Path(settings.BASE_DIR) / "var" / "models"
    out = tmp_path_factory.mktemp("job")
    example = TrainExample(PROMPT, ["hello", "hi there"], [3.0, 5.0], "hi there")
    quick = TrainSettings(mode="sft", steps=1, batch_size=1, lr=1e-3, lora_r=4, lora_alpha=8, checkpoint_every=100)
    result = trainer.train(base=BASE, examples=[example], out_dir=out, settings=quick)
    yield result.adapter_dir
    settings.OPENTRACY_LOCAL_MODEL_DIR = old
    trainer._gen_cache.clear()


def done_job(people: dict[str, Any], adapter_path: str) -> DistillationJob:
    return DistillationJob.objects.create(
        project=people["project"],
        dataset_version=frozen_version(people, rows=2),
        teacher="openai/gpt-4o",
        student=BASE,
        status=DistillationJob.Status.DONE,
        adapter_path=adapter_path,
    )


def download(server_url: str, key: str, job: DistillationJob, kind: str) -> httpx.Response:
    url = f"{server_url}/api/distillation/jobs/{job.pk}/export"
    return httpx.get(url, params={"kind": kind}, headers={"Authorization": f"Bearer {key}"}, timeout=300)


def unzip(resp: httpx.Response, into: Path) -> set[str]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(resp.content)) as archive:
        assert archive.testzip() is None
        archive.extractall(into)
        return set(archive.namelist())


def test_adapter_and_merged_exports_load(
    server_url: str,
    api_key: str,
    people: dict[str, Any],
    trained: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = done_job(people, str(trained))
    resp = download(server_url, api_key, job, "adapter")
    assert f"distillation-job-{job.pk}-adapter.zip" in resp.headers["content-disposition"]
    names = unzip(resp, tmp_path / "adapter")
    assert {"adapter_model.safetensors", "adapter_config.json"} <= names
    # The weights are the trained ones, and peft loads the folder onto the base.
    got, want = (
        load_file(tmp_path / "adapter" / "adapter_model.safetensors"),
        load_file(trained / "adapter_model.safetensors"),
    )
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    base, _tokenizer = trainer.load_student(BASE)
    peft_model = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    assert getattr(peft_model.peft_config["default"], "r", None) == 4

    names = unzip(download(server_url, api_key, job, "merged"), tmp_path / "merged")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged", local_files_only=True)
    assert model.config.model_type == "llama" and tokenizer.eos_token
    # The merged model answers exactly as base + adapter (greedy).
    merged = trainer.generate(base=str(tmp_path / "merged"), adapter_dir=None, messages=PROMPT, max_new_tokens=6)
    assert merged == trainer.generate(base=BASE, adapter_dir=trained, messages=PROMPT, max_new_tokens=6)

    # The merged folder is made once: a second download does not merge again.
    def no_second_merge(*args: Any, **kwargs: Any) -> Path:
        raise AssertionError("merged twice")

    monkeypatch.setattr(trainer, "merge_adapter", no_second_merge)
    again = download(server_url, api_key, job, "merged")
    assert again.status_code == 200 and again.content[:2] == b"PK"
    assert (trained.parent / "merged" / "model.safetensors").is_file()


def test_no_adapter_bad_kind_and_outsiders(
    server_url: str, api_key: str, outsider_key: str, people: dict[str, Any], tmp_path: Path
) -> None:
    draft = done_job(people, "")
    DistillationJob.objects.filter(pk=draft.pk).update(status=DistillationJob.Status.RUNNING)
    for kind in ("adapter", "merged"):
        resp = download(server_url, api_key, draft, kind)
        assert resp.status_code == 400 and "no trained adapter to export (it is running)" in resp.json()["detail"][0]
    empty = done_job(people, str(tmp_path))  # the folder is there, the adapter files are not
    resp = download(server_url, api_key, empty, "adapter")
    assert resp.status_code == 400 and "has no adapter_model.safetensors and adapter_config.json" in resp.text
    bad = download(server_url, api_key, empty, "gguf")
    assert bad.status_code == 400 and "Use one of adapter, merged" in bad.json()["kind"][0]
    # Another project's key, or an outsider's session naming this project: 404.
    assert download(server_url, outsider_key, empty, "adapter").status_code == 404
    outsider = Client()
    outsider.force_login(people["outsider"])
    assert outsider.get(f"/api/distillation/jobs/{empty.pk}/export?kind=adapter&project=acme").status_code == 404
    assert httpx.get(f"{server_url}/api/distillation/jobs/{empty.pk}/export").status_code in (401, 403)


def test_the_job_page_links_both_exports(people: dict[str, Any], providers: dict[str, Any], tmp_path: Path) -> None:
    teacher_alias(people, providers["openai"])
    job = S.job_create(
        project=people["project"], dataset_version=frozen_version(people, rows=3), teacher="teacher",
        judge={"kind": "exact"}, settings={"steps": 1}, start=False,
    )  # fmt: skip
    member = Client()
    member.force_login(people["member"])
    assert "/export?" not in member.get(f"/projects/acme/distillation/{job.pk}").content.decode()
    DistillationJob.objects.filter(pk=job.pk).update(status="done", adapter_path=str(tmp_path))
    page = member.get(f"/projects/acme/distillation/{job.pk}").content.decode()
    assert f"/api/distillation/jobs/{job.pk}/export?kind=adapter&amp;project=acme" in page
    assert f"/api/distillation/jobs/{job.pk}/export?kind=merged&amp;project=acme" in page
