"""Errors the sidecar itself answers with, in the shape of the provider the app talks to.

The app's SDK parses error bodies: an Anthropic client expects
``{"type":"error","error":{"type":..,"message":..}}``, an OpenAI client
``{"error":{"message":..,"type":..,"param":null,"code":..}}``. Answering in that shape
(and status) makes a sidecar fault look like the provider fault it stands for, so the
SDK's own handling (retries on 502/504, typed exceptions) keeps working. Messages name
the sidecar and the upstream, never request content.
"""

from __future__ import annotations

import json

from aiohttp import web

from promptcache.wire import Family

# status -> (anthropic error type, openai error type, openai code)
_TYPES: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request_error", "invalid_request"),
    408: ("timeout_error", "invalid_request_error", "request_timeout"),
    413: ("request_too_large", "invalid_request_error", "request_too_large"),
    502: ("api_error", "server_error", "upstream_unreachable"),
    503: ("overloaded_error", "server_error", "service_unavailable"),
    504: ("timeout_error", "server_error", "upstream_timeout"),
}


class SidecarError(Exception):
    """A failure the sidecar answers itself; ``status`` is the HTTP status to send.

    Tree: ``BodyTooLargeError`` (413), ``ClientTooSlowError`` (408), ``UpstreamUnreachableError``
    (502), ``UpstreamTimeoutError`` (504), ``ContextSourceFailedError`` (502).
    """

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BodyTooLargeError(SidecarError):
    status = 413


class ClientTooSlowError(SidecarError):
    status = 408


class UpstreamUnreachableError(SidecarError):
    status = 502


class UpstreamTimeoutError(SidecarError):
    status = 504


class ContextSourceFailedError(SidecarError):
    """A context source the policy marks required could not be fetched."""

    status = 502


def error_payload(family: Family, status: int, message: str) -> dict[str, object]:
    """The provider-shaped error object for ``status``."""
    anthropic_type, openai_type, code = _TYPES.get(status, ("api_error", "server_error", "error"))
    if family == "anthropic":
        return {"type": "error", "error": {"type": anthropic_type, "message": message}}
    return {"error": {"message": message, "type": openai_type, "param": None, "code": code}}


def error_response(family: Family, status: int, message: str) -> web.Response:
    """A JSON response the provider's SDK reads as an API error."""
    return web.json_response(
        error_payload(family, status, message),
        status=status,
        headers={"x-promptcache-error": "1"},
    )


def sse_error_event(family: Family, message: str) -> bytes:
    """A stream-ending error event, as the provider sends one mid-stream."""
    if family == "anthropic":
        data = json.dumps(error_payload("anthropic", 502, message), separators=(",", ":"))
        return b"event: error\ndata: " + data.encode() + b"\n\n"
    # OpenAI streams carry errors as a data chunk with an ``error`` object.
    data = json.dumps(error_payload("openai", 502, message), separators=(",", ":"))
    return b"data: " + data.encode() + b"\n\n"
