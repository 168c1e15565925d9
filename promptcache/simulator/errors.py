"""Provider-shaped errors: one exception, rendered in the dialect of the route it hit.

Clients (the official SDKs, the sidecar's retry logic) branch on the exact status code,
error ``type`` and headers, so the simulator raises ``ApiError`` anywhere in request
handling and a single place turns it into the Anthropic body
``{"type":"error","error":{"type":...,"message":...},"request_id":...}`` or the OpenAI
body ``{"error":{"message":...,"type":...,"param":...,"code":...}}``.
"""

from __future__ import annotations

import json
from typing import Literal

from aiohttp import web

Dialect = Literal["anthropic", "openai"]


class ApiError(Exception):
    """A request the simulated provider refuses, with what the body should say."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 whose ``type`` is ``invalid_request_error`` in both dialects."""
    return ApiError(400, "invalid_request_error", message, param=param, code=code)


def error_response(error: ApiError, *, dialect: Dialect, request_id: str) -> web.Response:
    """The HTTP response a real provider would send for ``error``."""
    payload: dict[str, object]
    if dialect == "anthropic":
        payload = {
            "type": "error",
            "error": {"type": error.error_type, "message": error.message},
            "request_id": request_id,
        }
        headers = {"request-id": request_id, **error.headers}
    else:
        payload = {
            "error": {
                "message": error.message,
                "type": error.error_type,
                "param": error.param,
                "code": error.code,
            }
        }
        headers = {"x-request-id": request_id, **error.headers}
    return web.Response(
        status=error.status,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        headers=headers,
    )


def fault_error(kind: str, *, dialect: Dialect, retry_after_s: float) -> ApiError:
    """The error a provider sends when rate limited, overloaded or failing internally."""
    if kind == "429":
        headers = {
            "retry-after": str(max(0, round(retry_after_s))),
            "retry-after-ms": str(max(0, round(retry_after_s * 1000))),
        }
        if dialect == "anthropic":
            return ApiError(
                429,
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of "
                "50 requests per minute. Please retry after the time in the retry-after header.",
                headers=headers,
            )
        return ApiError(
            429,
            "requests",
            "Rate limit reached for requests. Please try again later.",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if kind == "529":
        if dialect == "anthropic":
            return ApiError(529, "overloaded_error", "Overloaded")
        # OpenAI has no 529; its overload answer is a 503 server_error.
        return ApiError(
            503,
            "server_error",
            "The engine is currently overloaded, please try again later.",
        )
    if dialect == "anthropic":
        return ApiError(500, "api_error", "Internal server error")
    return ApiError(
        500,
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
    )
