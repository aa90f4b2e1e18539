"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with matching statuses,
so the official SDKs raise their usual exception classes."""

from __future__ import annotations

import orjson


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        # A transient upstream failure (connect error, timeout, 429, 5xx): worth another try.
        self.retryable = retryable
        # Seconds the upstream asked us to wait (its Retry-After), if it said.
        self.retry_after = retry_after
        # The upstream's own HTTP status, when this error came from one (recorded per attempt).
        self.upstream_status: int | None = None

    @property
    def context_length(self) -> bool:
        """The prompt did not fit the model: a longer-context fallback may still answer."""
        text = f"{self.code} {self.message}".lower()
        return self.code == "context_length_exceeded" or "context length" in text or "context window" in text

    @property
    def error_class(self) -> str:
        """Short label recorded on the trace."""
        return self.code or self.type

    def payload(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return orjson.dumps(self.payload())


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def unauthorized(message: str = "Missing or invalid API key. Send `Authorization: Bearer ot-...`.") -> GatewayError:
    return GatewayError(401, message, code="invalid_api_key")


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def not_found(message: str) -> GatewayError:
    return GatewayError(404, message, code="not_found")


def too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"Request body is larger than the limit of {limit} bytes.", code="request_too_large")


def unsupported_parameter(provider: str, param: str, detail: str = "") -> GatewayError:
    message = f"Parameter `{param}` is not supported by provider `{provider}`."
    return GatewayError(422, f"{message} {detail}".strip(), code="unsupported_parameter", param=param)


def bad_gateway(message: str, code: str = "upstream_error", *, retryable: bool = False) -> GatewayError:
    return GatewayError(502, message, type="server_error", code=code, retryable=retryable)


def gateway_timeout(message: str) -> GatewayError:
    return GatewayError(504, message, type="server_error", code="upstream_timeout", retryable=True)


def rate_limited(message: str, retry_after: float, code: str = "rate_limit_exceeded") -> GatewayError:
    """The engine's own limits (not an upstream's 429)."""
    return GatewayError(429, message, type="rate_limit_error", code=code, retry_after=retry_after)
