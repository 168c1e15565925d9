"""A scripted Anthropic + OpenAI API on loopback, for the sidecar's local tests.

``FakeUpstream`` answers ``/v1/messages``, ``/v1/chat/completions`` and
``/v1/responses`` with realistic bodies and event streams that carry cache usage
(``CacheUsage``), records every request it gets (``Recorded``) and, for the next calls,
behaves as ``then(...)`` says: an error status, a reset before the first byte or in
mid-stream, slow headers. Any other path answers a small JSON echo of the path.
Answers are deterministic (ids derive from the request), so a call made directly and
the same call made through the sidecar can be compared.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

REPLY = "The capital of France is Paris, a city on the Seine."
"""Response text of every fake answer (tests grep logs and metrics for it)."""


@dataclass
class CacheUsage:
    """The usage the fake reports: tokens by kind."""

    uncached: int = 120
    cache_read: int = 3500
    cache_write: int = 0
    output: int = 12


@dataclass
class Recorded:
    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes


Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeUpstream:
    """A loopback Anthropic + OpenAI API; ``script`` holds behaviours for the next calls."""

    usage: CacheUsage = field(default_factory=CacheUsage)
    script: deque[Behaviour] = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    def then(self, *behaviours: Behaviour) -> None:
        self.script.extend(behaviours)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(request.method, request.path_qs, CIMultiDict(request.headers), body)
        )
        if self.script:
            return await self.script.popleft()(request)
        return await self.answer(request, body)

    async def answer(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """The well-behaved answer for the path."""
        path = request.path
        if request.method != "POST" or path not in _ANSWERS:
            return web.json_response({"object": "list", "data": [], "path": path})
        try:
            payload = json.loads(body)
        except ValueError:
            return _bad_request(path)
        if not isinstance(payload, dict):
            return _bad_request(path)
        kind = _ANSWERS[path]
        if payload.get("stream"):
            return await _stream(request, kind, payload, self.usage)
        return web.json_response(_whole(kind, payload, self.usage))


def _bad_request(path: str) -> web.Response:
    if path == "/v1/messages":
        err: dict[str, Any] = {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "invalid JSON body"},
        }
    else:
        err = {
            "error": {
                "message": "invalid JSON body",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    return web.json_response(err, status=400)


_ANSWERS = {"/v1/messages": "anthropic", "/v1/chat/completions": "chat", "/v1/responses": "resp"}
_CREATED = 1_767_225_600


def _id(prefix: str, payload: dict[str, Any]) -> str:
    # Stable per conversation: options the sidecar may add (stream_options) do not count.
    keyed = {k: v for k, v in payload.items() if k != "stream_options"}
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()
    return f"{prefix}{digest[:24]}"


def _anthropic_usage(u: CacheUsage) -> dict[str, Any]:
    return {
        "input_tokens": u.uncached,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_write,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": u.output,
        "service_tier": "standard",
    }


def _openai_usage(u: CacheUsage, *, responses: bool) -> dict[str, Any]:
    prompt = u.uncached + u.cache_read
    if responses:
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": u.cache_read},
            "output_tokens": u.output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + u.output,
        }
    return {
        "prompt_tokens": prompt,
        "completion_tokens": u.output,
        "total_tokens": prompt + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _whole(kind: str, payload: dict[str, Any], u: CacheUsage) -> dict[str, Any]:
    model = payload.get("model", "unknown")
    if kind == "anthropic":
        return {
            "id": _id("msg_", payload),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": REPLY}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": _anthropic_usage(u),
        }
    if kind == "chat":
        return {
            "id": _id("chatcmpl-", payload),
            "object": "chat.completion",
            "created": _CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": REPLY, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _openai_usage(u, responses=False),
            "system_fingerprint": "fp_fake",
        }
    return _response_object(payload, u, status="completed")


def _response_object(payload: dict[str, Any], u: CacheUsage, *, status: str) -> dict[str, Any]:
    done = status == "completed"
    return {
        "id": _id("resp_", payload),
        "object": "response",
        "created_at": _CREATED,
        "status": status,
        "model": payload.get("model", "unknown"),
        "output": [
            {
                "type": "message",
                "id": _id("msg_", payload),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": REPLY, "annotations": []}],
            }
        ]
        if done
        else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": _openai_usage(u, responses=True) if done else None,
    }


def _words() -> list[str]:
    words = REPLY.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def sse(event: str | None, data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def stream_events(kind: str, payload: dict[str, Any], u: CacheUsage) -> list[bytes]:
    """The event stream the fake sends for a streamed call."""
    model = payload.get("model", "unknown")
    if kind == "anthropic":
        start_usage = _anthropic_usage(u) | {"output_tokens": 1}
        msg = _whole(kind, payload, u) | {"content": [], "stop_reason": None, "usage": start_usage}
        events = [
            sse("message_start", {"type": "message_start", "message": msg}),
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            sse("ping", {"type": "ping"}),
        ]
        for word in _words():
            delta = {"type": "text_delta", "text": word}
            events.append(
                sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                )
            )
        events += [
            sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    # Cumulative, as the API sends it: the cache fields repeat.
                    "usage": _anthropic_usage(u),
                },
            ),
            sse("message_stop", {"type": "message_stop"}),
        ]
        return events
    if kind == "chat":
        options = payload.get("stream_options") or {}
        with_usage = bool(options.get("include_usage"))
        base = {
            "id": _id("chatcmpl-", payload),
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": model,
            "system_fingerprint": "fp_fake",
        }
        extra = {"usage": None} if with_usage else {}
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": w} for w in _words()]
        events = []
        for delta in deltas:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
            events.append(sse(None, base | {"choices": [choice]} | extra))
        last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
        events.append(sse(None, base | {"choices": [last]} | extra))
        if with_usage:
            events.append(
                sse(None, base | {"choices": [], "usage": _openai_usage(u, responses=False)})
            )
        events.append(b"data: [DONE]\n\n")
        return events
    created = _response_object(payload, u, status="in_progress")
    done = _response_object(payload, u, status="completed")
    events = [
        sse(
            "response.created",
            {"type": "response.created", "response": created, "sequence_number": 0},
        )
    ]
    for i, word in enumerate(_words(), start=1):
        events.append(
            sse(
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "item_id": _id("msg_", payload),
                    "output_index": 0,
                    "content_index": 0,
                    "delta": word,
                    "sequence_number": i,
                },
            )
        )
    events.append(
        sse(
            "response.completed",
            {"type": "response.completed", "response": done, "sequence_number": 99},
        )
    )
    return events


async def _stream(
    request: web.Request, kind: str, payload: dict[str, Any], u: CacheUsage
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for event in stream_events(kind, payload, u):
        await response.write(event)
    await response.write_eof()
    return response


# Misbehaviours, for FakeUpstream.then(...)
def status(
    code: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            body or {"type": "error", "error": {"type": "x", "message": "x"}},
            status=code,
            headers=headers,
        )

    return behave


def reset_before_headers() -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError

    return behave


def reset_mid_stream(events: int = 3) -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        payload = json.loads(await request.read())
        kind = _ANSWERS[request.path]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in stream_events(kind, payload, CacheUsage())[:events]:
            await response.write(event)
        await response.write(b'event: content_block_delta\ndata: {"type":"cont')  # cut mid-event
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError

    return behave


def slow_headers(seconds: float) -> Behaviour:
    async def behave(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.json_response({})

    return behave
