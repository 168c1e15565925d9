"""Shared fixtures of the local tier: real servers on loopback, driven by the official SDKs.

* ``fake_upstream``: a scripted Anthropic + OpenAI server (``FakeUpstream``) that answers
  with realistic bodies and event streams carrying cache usage, records what it got, and
  misbehaves on request (status codes, resets, slow headers).
* ``start_sidecar``: builds the real sidecar application (``sidecar.app``) on a free
  loopback port with a fresh metrics registry and an in-memory span exporter;
  ``Sidecar`` gives its URLs and reads its metrics.
* ``sidecar_process``: ``promptcache sidecar`` as a real child process (flags and
  environment as given), ready when it answers ``/readyz``; stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from sidecar.admin import create_admin_app
from sidecar.app import build_state, create_app
from sidecar.config import SidecarSettings
from sidecar.planner import Planner
from sidecar.state import SidecarState

REPLY = "The capital of France is Paris, a city on the Seine."
"""Response text of every fake answer (tests grep logs and metrics for it)."""


# --------------------------------------------------------------------------- fake upstream
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


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- the sidecar
@dataclass
class Sidecar:
    """A running sidecar application on loopback."""

    url: str
    admin_url: str
    state: SidecarState
    registry: CollectorRegistry
    spans: InMemorySpanExporter

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value (0.0 when it was never set)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def finished_spans(self) -> tuple[ReadableSpan, ...]:
        return self.spans.get_finished_spans()


StartSidecar = Callable[..., Awaitable[Sidecar]]


@pytest.fixture
async def start_sidecar(fake_upstream: FakeUpstream) -> AsyncIterator[StartSidecar]:
    """``await start_sidecar(**settings)``: a sidecar in front of ``fake_upstream``.

    ``planner=`` replaces the planner (a spy, or one that fails on purpose).
    """
    servers: list[TestServer] = []
    providers: list[TracerProvider] = []

    async def start(*, planner: Planner | None = None, **overrides: Any) -> Sidecar:
        values: dict[str, Any] = {
            "anthropic_upstream": fake_upstream.url,
            "openai_upstream": fake_upstream.url,
            "retry_backoff": 0.01,
        } | overrides
        settings = SidecarSettings(**values)
        registry = CollectorRegistry()
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
        state = build_state(settings, registry=registry, tracer_provider=provider, planner=planner)
        proxy = TestServer(create_app(state, tracer_provider=provider), host="127.0.0.1")
        admin = TestServer(create_admin_app(state), host="127.0.0.1")
        await proxy.start_server()
        await admin.start_server()
        servers.extend([proxy, admin])
        return Sidecar(
            url=str(proxy.make_url("")).rstrip("/"),
            admin_url=str(admin.make_url("")).rstrip("/"),
            state=state,
            registry=registry,
            spans=exporter,
        )

    try:
        yield start
    finally:
        for server in reversed(servers):
            await server.close()
        for provider in providers:
            provider.shutdown()


@dataclass
class SidecarProcess:
    """``promptcache sidecar`` running as a child process."""

    url: str
    admin_url: str
    process: asyncio.subprocess.Process

    async def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then the exit code (killed after ``timeout``)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise


RunSidecar = Callable[..., contextlib.AbstractAsyncContextManager[SidecarProcess]]


@contextlib.asynccontextmanager
async def _run_sidecar(
    args: Sequence[str] = (), env: Mapping[str, str] | None = None, *, ready_timeout: float = 20.0
) -> AsyncIterator[SidecarProcess]:
    port, admin = free_port(), free_port()
    argv = [
        sys.executable, "-m", "promptcache", "sidecar",
        "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}", *args,
    ]  # fmt: skip
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTCACHE_", "OTEL_"))}
    child_env.update(env or {})
    process = await asyncio.create_subprocess_exec(
        *argv, env=child_env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    running = SidecarProcess(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", process)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert process.returncode is None, "the sidecar exited during start-up"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(running.admin_url + "/readyz") as r:
                        if r.status == 200:
                            break
                assert loop.time() < deadline, "the sidecar did not become ready"
                await asyncio.sleep(0.1)
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
def sidecar_process() -> RunSidecar:
    """``async with sidecar_process(args, env) as proc``: a real sidecar process."""
    return _run_sidecar
