"""Students served by vLLM: an approved adapter is loaded into the project's vLLM server under its
versioned name through vLLM's dynamic LoRA API (`POST /v1/load_lora_adapter` {lora_name, lora_path};
the server runs with `--enable-lora` and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), and unloaded
(`POST /v1/unload_lora_adapter` {lora_name}) on rollback.

The servers are the ones the gateway's `vllm` provider calls for the project: every stored `vllm`
credential (the gateway load-balances over their labels, so each must hold the adapter), else the
environment's VLLM_BASE_URL. vLLM reads `lora_path` from its own filesystem: adapters live on a
volume mounted at the same path in the workers, the web tier and vLLM (OPENTRACY_ADAPTER_DIR)."""

from __future__ import annotations

import logging

import httpx

from gateway.crypto import decrypt, open_options
from gateway.models import Project, ProviderCredential
from gateway.providers import PROVIDERS
from gateway.providers.base import Credential, redact

logger = logging.getLogger(__name__)

PROVIDER = "vllm"
TIMEOUT_S = 120.0  # loading reads the adapter from disk and may wait for a free LoRA slot


class VllmNotConfigured(Exception):
    """The project has no vLLM server to load the adapter into."""


class VllmError(Exception):
    """A vLLM server refused the call or could not be reached; the message says which and why."""


def servers(project: Project) -> list[Credential]:
    """The vLLM servers the gateway would send `vllm/<name>` to for this project."""
    provider = PROVIDERS[PROVIDER]
    stored = [
        Credential(decrypt(c.api_key_encrypted), c.base_url.rstrip("/"), open_options(c.options or {}), c.label)
        for c in ProviderCredential.objects.filter(project=project, provider=PROVIDER).order_by("label")
    ]
    found = [cred for c in stored if (cred := provider.credential(c)) is not None]
    if not stored and (env := provider.credential(None)) is not None:
        found.append(env)
    if not found:
        raise VllmNotConfigured(
            "No vLLM server for this project: store a `vllm` credential with its base URL (e.g. "
            "http://vllm:8000/v1) or set VLLM_BASE_URL."
        )
    return found


def _where(cred: Credential) -> str:
    return f"vLLM at {cred.base_url}" + (f" (credential {cred.label})" if cred.label else "")


def _post(cred: Credential, path: str, body: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {cred.api_key}"} if cred.api_key else {}
    try:
        resp = httpx.post(f"{cred.base_url}/{path}", json=body, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise VllmError(f"Could not reach {_where(cred)}: {type(exc).__name__}.") from None
    if resp.status_code < 400:
        return
    message = _message(resp)
    if resp.status_code == 404 and message == "Not Found":  # FastAPI's: the route itself is missing
        raise VllmError(
            f"{_where(cred)} has no /{path}: start it with --enable-lora and the environment variable "
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True."
        )
    if resp.status_code in (401, 403):
        raise VllmError(f"{_where(cred)} rejected the credential's API key (HTTP {resp.status_code}).")
    raise VllmError(f"{_where(cred)}: {redact(message, cred.secrets())} (HTTP {resp.status_code}).")


def _message(resp: httpx.Response) -> str:
    """vLLM's error body: {"error": {"message", ...}} (recent), {"message", ...} (older), or FastAPI's
    {"detail": ...}."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for key in ("message", "detail"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return resp.text[:300]


def adapter_load(*, project: Project, name: str, path: str) -> int:
    """Load the adapter at `path` as `name` into every vLLM server of the project, or into none:
    when one refuses, those already loaded are unloaded again and VllmError says why. Returns the
    number of servers."""
    targets = servers(project)
    loaded: list[Credential] = []
    for cred in targets:
        try:
            _post(cred, "load_lora_adapter", {"lora_name": name, "lora_path": path})
        except VllmError:
            for done in loaded:
                try:
                    _post(done, "unload_lora_adapter", {"lora_name": name})
                except VllmError as exc:
                    logger.warning("vllm: undoing the load of %s failed: %s", name, exc)
            raise
        loaded.append(cred)
    return len(targets)


def adapter_unload(*, project: Project, name: str) -> list[str]:
    """Unload `name` from every vLLM server of the project, best effort: returns the problems
    (also logged), an empty list when all went well."""
    try:
        targets = servers(project)
    except VllmNotConfigured as exc:
        problems = [f"{name} was not unloaded: {exc}"]
    else:
        problems = []
        for cred in targets:
            try:
                _post(cred, "unload_lora_adapter", {"lora_name": name})
            except VllmError as exc:
                problems.append(f"{name} was not unloaded: {exc}")
    for problem in problems:
        logger.warning("vllm: %s", problem)
    return problems
