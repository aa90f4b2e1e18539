"""POST /v1/route: the routing decision for a prompt, without calling any model.

Body: {"model": "auto" | "router/<policy>" | an alias targeting a policy, "messages": [...]} or
{"model": ..., "prompt": "..."}; `model` defaults to "auto". Tools, response_format and image parts
count as the chat request would (capability constraints). Answers the Decision (routing/router.py
`as_dict`) with the same x-opentracy-route-* headers as a routed chat. Not traced: nothing was
called and nothing was spent; a routed chat records its decision on its own trace.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from django.conf import settings

from .errors import GatewayError, bad_request
from .io import Receive, Send, authenticate, read_body, send_json, trace_headers
from .resolve import AUTO, policy_ref
from .validation import validate_chat

log = logging.getLogger(__name__)


def parse(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("We could not parse the JSON body of your request. The body must be valid JSON.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    body.setdefault("model", AUTO)
    if "messages" not in body and "prompt" in body:
        prompt = body.pop("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise bad_request("'prompt' must be a non-empty string.", param="prompt")
        body["messages"] = [{"role": "user", "content": prompt}]
    return validate_chat(body)


async def route(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    key = await authenticate(scope)
    body = parse(await read_body(scope, receive, settings.OPENTRACY_MAX_BODY_BYTES))
    ref = await policy_ref(key.project_id, body["model"])
    if ref is None:
        raise GatewayError(
            404,
            f"`{body['model']}` does not name a routing policy: use `auto`, `router/<policy>` or an alias whose "
            "target is `router/<policy>`.",
            code="policy_not_found",
            param="model",
        )
    from routing import gateway as router  # numpy/scipy: imported by the first routed request

    decision = await router.decide_request(key.project_id, body, ref.policy)
    await send_json(send, 200, orjson.dumps(decision.as_dict()), router.headers(decision))


async def handle(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    try:
        await route(scope, receive, send)
    except GatewayError as exc:
        await send_json(send, exc.status, exc.body(), trace_headers("", "", 0.0))
    except Exception:
        log.exception("unexpected error in /v1/route")
        failure = GatewayError(500, "The engine failed to route this request.", type="server_error")
        await send_json(send, 500, failure.body(), trace_headers("", "", 0.0))
