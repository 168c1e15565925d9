"""Server-sent events as the providers frame them, and the response that carries them.

Anthropic and OpenAI Responses name each event (``event: X`` then ``data: {...}``);
Chat Completions sends bare ``data:`` lines and ends with ``data: [DONE]``. Events are
built as bytes up front so a stream's writes are just joins of ready-made chunks.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

DONE = b"data: [DONE]\n\n"


def event(name: str | None, data: Any) -> bytes:
    """One SSE frame; ``name`` None gives a bare ``data:`` frame (Chat Completions)."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if name is None:
        return f"data: {payload}\n\n".encode()
    return f"event: {name}\ndata: {payload}\n\n".encode()


async def open_stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    """Send the status line and headers of an event stream."""
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            **headers,
        },
    )
    await response.prepare(request)
    return response


async def send_partial_then_abort(
    request: web.Request, body: bytes, headers: dict[str, str]
) -> web.StreamResponse:
    """Headers promising ``body``, half of it, then a reset (non-streaming ``reset-during``)."""
    response = web.StreamResponse(
        status=200, headers={"Content-Type": "application/json", **headers}
    )
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.abort()
    return response


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


async def send_json(
    request: web.Request, payload: Any, headers: dict[str, str], *, abort: bool = False
) -> web.StreamResponse:
    """A JSON answer; with ``abort`` only half of it arrives before the connection is cut."""
    body = dumps(payload)
    if abort:
        return await send_partial_then_abort(request, body, headers)
    return web.Response(body=body, content_type="application/json", headers=headers)
