"""A fake vLLM OpenAI-compatible server started with `--enable-lora --max-lora-rank 64` and
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, speaking vLLM's wire format:

- POST /v1/load_lora_adapter {"lora_name", "lora_path"}: 200 with vLLM's plain-text "Success: …";
  400 InvalidUserInput when a field is missing or the name is already loaded; 404 NotFoundError
  "… No adapter found for <path>" when the path holds no adapter_config.json (read from this
  machine's filesystem, as vLLM reads its own); 400 BadRequestError for a rank above max_lora_rank.
- POST /v1/unload_lora_adapter {"lora_name"}: 200 "Success: …", 404 when the name is not loaded.
- `runtime_updates = False` (the variable not set): both routes are FastAPI's 404 {"detail": "Not Found"}.
- POST /v1/chat/completions: answers for the base model or a loaded lora_name ("[<model>] You said:
  <last user text>", JSON or SSE); any other model is 404 in OpenAI's error shape ("The model `x`
  does not exist.", type NotFoundError), as vLLM answers.
- GET /v1/models: the base model and the loaded adapters (with `parent`).
Errors use recent vLLM's body {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from .server import LoopbackServer

BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _error(status: int, message: str, type_: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return web.json_response(body, status=status)


def _last_user_text(body: dict[str, Any]) -> str:
    for msg in reversed(body.get("messages") or []):
        if msg.get("role") == "user":
            content = msg.get("content")
            return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content or [])
    return ""


class FakeVllm(LoopbackServer):
    name = "fake-vllm"

    def __init__(self, max_lora_rank: int = 64) -> None:
        super().__init__()
        self.max_lora_rank = max_lora_rank
        self.runtime_updates = True
        self.loaded: dict[str, str] = {}  # lora_name -> lora_path

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/load_lora_adapter", self._load)
        app.router.add_post("/v1/unload_lora_adapter", self._unload)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        return dict(body)

    async def _load(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not self.runtime_updates:
            return web.json_response({"detail": "Not Found"}, status=404)
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return _error(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        if name in self.loaded:
            return _error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
        config = Path(path) / "adapter_config.json"
        if not config.is_file():
            return _error(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError")
        rank = int(json.loads(config.read_text()).get("r", 0))
        if rank > self.max_lora_rank:
            message = f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}."
            return _error(400, message, "BadRequestError")
        self.loaded[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not self.runtime_updates:
            return web.json_response({"detail": "Not Found"}, status=404)
        name = body.get("lora_name")
        if not name:
            return _error(400, "either 'lora_name' and 'lora_int_id' needs to be provided.", "InvalidUserInput")
        if name not in self.loaded:
            return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        del self.loaded[name]
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        model = str(body.get("model"))
        if model != BASE_MODEL and model not in self.loaded:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        text = f"[{model}] You said: {_last_user_text(body)}"
        prompt, completion = len(_last_user_text(body).split()), len(text.split())
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        created = int(time.time())
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            return web.json_response(
                {
                    "id": "chatcmpl-vllm0",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "chatcmpl-vllm0", "object": "chat.completion.chunk", "created": created, "model": model}
        deltas = [{"role": "assistant", "content": ""}, {"content": text}]
        for i, delta in enumerate(deltas):
            finish = "stop" if i == len(deltas) - 1 else None
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def _models(self, request: web.Request) -> web.Response:
        cards = [{"id": BASE_MODEL, "object": "model", "root": BASE_MODEL, "parent": None}]
        cards += [{"id": n, "object": "model", "root": p, "parent": BASE_MODEL} for n, p in self.loaded.items()]
        return web.json_response({"object": "list", "data": cards})

    def calls(self, path: str) -> list[dict[str, Any]]:
        """The bodies received on one path, in order."""
        return [r["body"] for r in self.requests if r.get("path") == path]
