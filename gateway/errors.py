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
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

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


def bad_gateway(message: str, code: str = "upstream_error") -> GatewayError:
    return GatewayError(502, message, type="server_error", code=code)


def gateway_timeout(message: str) -> GatewayError:
    return GatewayError(504, message, type="server_error", code="upstream_timeout")
