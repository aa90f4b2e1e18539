"""Local students through /v1 (the official SDK): by default several students' LoRA adapters sit on
one shared copy of their base, and each request is answered by its own adapter, token for token as
the same student merged into a copy of its own (OPENTRACY_LOCAL_STUDENTS=merged) answers.

The two adapters are made with random LoRA weights (peft, no training), so they answer differently;
the base is SmolLM2-135M-Instruct from the package, converted once under var/models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from django.conf import settings

from distillation import serving
from distillation.models import Student

from .job_support import done_job

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    import torch
    from peft import LoraConfig, get_peft_model

    from distillation import trainer

    old = settings.OPENTRACY_LOCAL_MODEL_DIR
    if "OPENTRACY_LOCAL_MODEL_DIR" not in os.environ:
        settings.OPENTRACY_LOCAL_MODEL_DIR = Path(settings.BASE_DIR) / "var" / "models"
    folders = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model, _tokenizer = trainer.load_student(BASE)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        folder = tmp_path_factory.mktemp(f"adapter{seed}")
        get_peft_model(model, config).save_pretrained(str(folder))
        folders.append(folder)
    yield folders
    serving.forget()
    settings.OPENTRACY_LOCAL_MODEL_DIR = old


def answers(client: Any, names: list[str]) -> list[str]:
    messages = [{"role": "user", "content": "Name a colour."}]
    return [
        client.chat.completions.create(model=f"local/{n}", messages=messages, max_tokens=8, temperature=0)
        .choices[0]
        .message.content
        for n in names
    ]


def test_students_share_their_base_and_answer_as_merged_copies(
    people: dict[str, Any], client: Any, adapters: list[Path], settings: Any
) -> None:
    names = []
    for i, folder in enumerate(adapters, start=1):
        job = done_job(people, folder, student=BASE)
        student = Student.objects.create(project=people["project"], job=job, base=BASE, adapter_path=str(folder),
                                         version=900 + i, name=f"{BASE}-v{900 + i}")  # fmt: skip
        names.append(student.name)
    serving.forget()

    settings.OPENTRACY_LOCAL_STUDENTS = "adapter"  # the default
    shared = answers(client, names)
    assert len(serving._bases) == 1  # one copy of the base in memory
    (model, _tokenizer) = next(iter(serving._bases.values()))
    assert set(model.peft_config) == set(names)
    assert shared[0] != shared[1]  # each request got its own adapter
    assert answers(client, names[::-1]) == shared[::-1]  # switching back and forth changes nothing

    serving.forget(names[0])  # its adapter leaves the base; the other stays
    assert set(model.peft_config) == {names[1]}

    settings.OPENTRACY_LOCAL_STUDENTS = "merged"
    serving.forget()
    assert answers(client, names) == shared  # token for token what the merged copies say
    assert serving._bases == {}
