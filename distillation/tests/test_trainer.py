"""The trainer with the real SmolLM2-135M-Instruct on the CPU: a few steps on a handful of prompts.

The converted weights are cached under var/models of the checkout (as the local provider's tests do) unless
OPENTRACY_LOCAL_MODEL_DIR is set, so only the first run pays the GGUF conversion."""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from django.conf import settings

from distillation import trainer
from distillation.trainer import TrainExample, TrainSettings

BASE = "smollm2-135m-instruct"
EXAMPLES = [
    TrainExample([{"role": "user", "content": "Say hi"}], ["hello", "hi there", "yo"], [3.0, 5.0, 1.0], "hi there"),
    TrainExample([{"role": "user", "content": "2+2?"}], ["4", "four", "5"], [5.0, 4.0, 0.0], "4"),
]
STATS = ("step", "forward", "backward", "loss", "reward", "log_quantile", "kl", "seconds", "batch_size", "oom_retry")


@pytest.fixture(scope="module", autouse=True)
def shared_model_cache() -> Iterator[None]:
    old = settings.OPENTRACY_LOCAL_MODEL_DIR
    if "OPENTRACY_LOCAL_MODEL_DIR" not in os.environ:
        settings.OPENTRACY_LOCAL_MODEL_DIR = Path(settings.BASE_DIR) / "var" / "models"
    yield
    settings.OPENTRACY_LOCAL_MODEL_DIR = old
    trainer._gen_cache.clear()


def quick(**overrides: Any) -> TrainSettings:
    values: dict[str, Any] = {
        "steps": 2,
        "batch_size": 2,
        "max_new_tokens": 8,
        "lr": 1e-3,
        "lora_r": 8,
        "lora_alpha": 16,
        "checkpoint_every": 100,
    }
    return TrainSettings(**{**values, **overrides})


def length_scorer(messages: list[dict[str, Any]], answer: str) -> float:
    return float(len(answer) % 6)  # a programmatic judge on a small integer scale (ties happen)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> trainer.TrainResult:
    out = tmp_path_factory.mktemp("sft")
    return trainer.train(base=BASE, examples=EXAMPLES, out_dir=out, settings=quick(mode="sft", steps=3))


def test_sft_steps_reduce_the_nll_of_the_targets(sft_run: trainer.TrainResult) -> None:
    # Batch 2 of 2 examples: every step sees the same two targets, so the forward NLL must fall.
    forward = [h["forward"] for h in sft_run.history]
    assert sft_run.steps == 3 and [h["step"] for h in sft_run.history] == [1.0, 2.0, 3.0]
    assert forward[-1] < forward[0]
    assert all(h["backward"] == 0.0 for h in sft_run.history)  # SFT: no backward term
    before = trainer.evaluate_nll(base=BASE, adapter_dir=None, examples=EXAMPLES)
    after = trainer.evaluate_nll(base=BASE, adapter_dir=sft_run.adapter_dir, examples=EXAMPLES)
    assert after < before
    assert sft_run.device == "cpu" and sft_run.seconds > 0


def test_adapter_is_saved_and_reloads(sft_run: trainer.TrainResult, tmp_path: Path) -> None:
    adapter = sft_run.adapter_dir
    assert (adapter / "adapter_model.safetensors").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 8 and set(config["target_modules"]) == set(TrainSettings().target_modules)
    assert {"q_proj", "v_proj", "gate_proj", "down_proj"} <= set(config["target_modules"])  # attention and MLP
    tuned = trainer.generate(base=BASE, adapter_dir=adapter, messages=EXAMPLES[0].messages, max_new_tokens=8)
    plain = trainer.generate(base=BASE, adapter_dir=None, messages=EXAMPLES[0].messages, max_new_tokens=8)
    assert isinstance(tuned, str) and isinstance(plain, str) and tuned
    # The merged export answers exactly as base + adapter (greedy).
    merged = trainer.merge_adapter(BASE, adapter, tmp_path / "merged")
    assert (merged / "config.json").is_file() and (merged / "model.safetensors").is_file()
    again = trainer.generate(base=str(merged), adapter_dir=None, messages=EXAMPLES[0].messages, max_new_tokens=8)
    assert again == tuned


def test_bond_step_with_a_programmatic_scorer_logs_all_stats(tmp_path: Path) -> None:
    calls: list[str] = []
    seen: list[dict[str, float]] = []

    def scorer(messages: list[dict[str, Any]], answer: str) -> float:
        calls.append(answer)
        return length_scorer(messages, answer)

    result = trainer.train(
        base=BASE, examples=EXAMPLES, out_dir=tmp_path, settings=quick(steps=1), scorer=scorer, on_step=seen.append
    )
    assert len(calls) == 2  # one student sample per prompt
    (entry,) = result.history
    assert seen == result.history
    for key in (*STATS, "reward_spread", "score"):
        assert key in entry and math.isfinite(entry[key]), key
    # Step 1: the LoRA B factors start at zero, so π = π_ref and the KL estimate is 0.
    assert abs(entry["kl"]) < 1e-3
    # The smoothed log-quantile of 2 samples against N = 3 candidates lies in [log(0.5/4), log(3.5/4)].
    assert math.log(0.5 / 4) - 1e-6 <= entry["log_quantile"] <= math.log(3.5 / 4) + 1e-6
    # β = 0.5: loss = 0.5·forward + 0.5·backward
    assert entry["loss"] == pytest.approx(0.5 * entry["forward"] + 0.5 * entry["backward"], rel=1e-4, abs=1e-4)


def test_exact_backward_term_with_a_local_teacher(tmp_path: Path) -> None:
    # The teacher here is the student's own base (same tokenizer): log π_teacher = log π_ref at step 1.
    result = trainer.train(
        base=BASE,
        examples=EXAMPLES[:1],
        out_dir=tmp_path,
        settings=quick(steps=1, batch_size=1, teacher_base=BASE),
        scorer=length_scorer,
    )
    (entry,) = result.history
    assert "kl_teacher" in entry and entry["kl_teacher"] == pytest.approx(entry["kl"], abs=1e-3)


def test_jbond_step_runs_with_gradient_checkpointing(tmp_path: Path) -> None:
    result = trainer.train(
        base=BASE,
        examples=EXAMPLES,
        out_dir=tmp_path,
        settings=quick(mode="jbond", steps=1, jbond_gamma=0.1, gradient_checkpointing=True),
        scorer=length_scorer,
    )
    (entry,) = result.history
    assert entry["kl_anchor"] == pytest.approx(0.0, abs=1e-3)  # the anchor starts as the policy
    assert entry["log_quantile"] in (pytest.approx(0.0), pytest.approx(-math.log(16.0) / 2), -math.log(16.0))


def test_should_stop_keeps_the_checkpoint_and_train_resumes(tmp_path: Path) -> None:
    asked = []

    def stop_after_two() -> bool:
        asked.append(1)
        return len(asked) > 2  # asked before each step: steps 1 and 2 run, then stop

    first: list[dict[str, float]] = []
    with pytest.raises(trainer.Stopped):
        trainer.train(
            base=BASE,
            examples=EXAMPLES,
            out_dir=tmp_path,
            settings=quick(mode="sft", steps=4),
            on_step=first.append,
            should_stop=stop_after_two,
        )
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and len(first) == 2
    assert (tmp_path / "checkpoint" / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "adapter").exists()  # no final adapter for a stopped run

    result = trainer.train(base=BASE, examples=EXAMPLES, out_dir=tmp_path, settings=quick(mode="sft", steps=3))
    assert result.steps == 3 and [h["step"] for h in result.history] == [1.0, 2.0, 3.0]
    assert result.history[:2] == first  # the resumed run carries the history on
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_out_of_memory_is_retried_once_with_half_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = trainer._micro_batch
    sizes: list[int] = []

    def flaky(run: Any, examples: Any, indices: list[int], rng: Any, beta: float) -> Any:
        sizes.append(len(indices))
        if len(sizes) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(run, examples, indices, rng, beta)

    monkeypatch.setattr(trainer, "_micro_batch", flaky)
    result = trainer.train(base=BASE, examples=EXAMPLES, out_dir=tmp_path, settings=quick(mode="sft", steps=1))
    assert sizes == [2, 1, 1]  # the failed micro-batch of 2, then two of 1 (same effective batch)
    assert result.oom_retries == 1 and result.history[0]["oom_retry"] == 1.0
    assert result.history[0]["batch_size"] == 2.0 and result.history[0]["grad_accum"] == 2.0


def test_inputs_are_checked_before_loading_anything(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scorer"):
        trainer.train(base=BASE, examples=EXAMPLES, out_dir=tmp_path, settings=quick(mode="bond"))
    with pytest.raises(ValueError, match="no training examples"):
        trainer.train(base=BASE, examples=[], out_dir=tmp_path, settings=quick(mode="sft"))
    with pytest.raises(ValueError, match="fractions"):
        trainer.train(base=BASE, examples=EXAMPLES, out_dir=tmp_path, settings=quick(mode="sft", beta_warmup=1.5))
    with pytest.raises(ValueError, match="fractions"):
        trainer.train(base=BASE, examples=EXAMPLES, out_dir=tmp_path, settings=quick(mode="sft", lr_warmup=-0.1))
    with pytest.raises(trainer.StudentUnavailable, match="not a model directory"):
        trainer.load_student(str(tmp_path / "no-such-model"))


# ---------------------------------------------------------------- schedules: pure functions of the step


def test_beta_is_zero_during_the_warm_start_then_ramps_linearly() -> None:
    bond = TrainSettings(mode="bond", beta=0.5, steps=10, beta_warmup=0.4)  # W = 4 steps of β = 0
    assert [trainer.effective_beta(bond, t) for t in range(1, 11)] == pytest.approx(
        [0, 0, 0, 0, 0.5 / 6, 1 / 6, 1.5 / 6, 2 / 6, 2.5 / 6, 0.5]  # then (t − 4)/6 of β, β at the last step
    )
    assert trainer.effective_beta(TrainSettings(mode="bond", beta=0.5, steps=10, beta_warmup=0.0), 1) == 0.5
    assert trainer.effective_beta(TrainSettings(mode="jbond", beta=0.3, steps=4, beta_warmup=0.5), 3) == (
        pytest.approx(0.15)
    )
    assert all(trainer.effective_beta(TrainSettings(mode="bond", steps=5, beta_warmup=1.0), t) == 0 for t in range(6))
    assert trainer.effective_beta(TrainSettings(mode="sft", beta=0.5, steps=10, beta_warmup=0.0), 5) == 0.0
    assert trainer.backward_steps(bond) == 6 and trainer.backward_steps(TrainSettings(mode="sft", steps=10)) == 0
    # W need not be a whole number of steps: 0.25 × 3 = 0.75, so step 1 already ramps.
    odd = TrainSettings(mode="bond", beta=1.0, steps=3, beta_warmup=0.25)
    assert [trainer.effective_beta(odd, t) for t in (1, 2, 3)] == pytest.approx([0.25 / 2.25, 1.25 / 2.25, 1.0])


def test_learning_rate_warms_up_then_decays_on_a_cosine() -> None:
    s = TrainSettings(steps=10, lr_warmup=0.2, lr_decay=True)  # 2 warm-up steps, then 8 on the cosine
    factors = [trainer.lr_factor(s, t) for t in range(1, 11)]
    assert factors[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert factors[2:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)])
    assert all(a > b for a, b in itertools.pairwise(factors[2:])) and factors[-1] > 0
    flat = TrainSettings(steps=10, lr_warmup=0.0, lr_decay=False)
    assert [trainer.lr_factor(flat, t) for t in (1, 5, 10)] == [1.0, 1.0, 1.0]


def test_bond_warm_start_skips_the_backward_term_then_logs_beta_and_lr(tmp_path: Path) -> None:
    calls: list[str] = []

    def scorer(messages: list[dict[str, Any]], answer: str) -> float:
        calls.append(answer)
        return length_scorer(messages, answer)

    settings = quick(mode="bond", beta=0.5, steps=2, beta_warmup=0.5, lr_warmup=0.5)
    result = trainer.train(base=BASE, examples=EXAMPLES, out_dir=tmp_path, settings=settings, scorer=scorer)
    first, second = result.history
    assert first["beta"] == 0.0 and first["backward"] == 0.0 and "score" not in first  # step 1: SFT, no sampling
    assert first["loss"] == pytest.approx(first["forward"], rel=1e-5)
    assert second["beta"] == 0.5 and "score" in second and len(calls) == 2  # step 2: one sample per prompt
    assert second["loss"] == pytest.approx(0.5 * second["forward"] + 0.5 * second["backward"], rel=1e-4, abs=1e-4)
    assert [first["lr"], second["lr"]] == pytest.approx([1e-3, 1e-3])  # warm-up of 1 step, then cos(0)
