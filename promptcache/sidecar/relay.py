"""Relaying the upstream's answer to the app: status, headers and body as received.

Three shapes. An event stream is written event by event as it arrives, through a usage
tap; if the upstream breaks mid-stream the app gets a provider-shaped error event and a
clean end of stream. A small answer (known length up to ``WHOLE_LIMIT``) is read whole
and sent in one write, which is the cheapest path and lets a failure before its end
still become a clean 502. Anything else (downloads, unknown lengths) is relayed chunk by
chunk; a failure there can only cut the connection, as the upstream itself would have.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from promptcache.sidecar.errors import (
    UpstreamTimeoutError,
    UpstreamUnreachableError,
    sse_error_event,
)
from promptcache.sidecar.headers import client_response_headers
from promptcache.sidecar.sse import EventSplitter, UsageTap, usage_from_body
from promptcache.usage import Usage
from promptcache.wire import Family

log = logging.getLogger(__name__)

WHOLE_LIMIT = 4 * 1024 * 1024
"""Answers up to this many bytes (by Content-Length) are read whole, then sent."""
_STREAM_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Relayed:
    """What the relay saw (the relay stage's result)."""

    status: int
    outcome: str
    usage: Usage | None = None
    model: str | None = None
    first_byte_at: float | None = None
    """``perf_counter`` when the first body byte went to the app."""
    busy: float = 0.0
    """Seconds the relay spent on its own work (header copying, usage taps)."""
    unread: tuple[Family, bytes, str] | None = None
    """A whole answer whose usage is still to be read: family, body, content encoding."""
    anthropic_message: dict[str, Any] | None = None
    """A streamed Anthropic answer's ``id`` and ``diagnostics`` (from ``message_start``)."""

    def read_usage(self) -> tuple[Usage | None, str | None]:
        """Usage and model, read from a whole answer's body if need be (off the app's
        critical path: the record stage calls this once the answer is on its way)."""
        if self.unread is None:
            return self.usage, self.model
        family, body, encoding = self.unread
        decoded = _decoded(body, encoding)
        if decoded is None:
            return None, None
        return usage_from_body(family, decoded)


def outcome_for(status: int) -> str:
    """The ``outcome`` label of an answer relayed in full."""
    if status < 400:
        return "ok"
    if status == 429:
        return "rate_limited"
    return "client_error" if status < 500 else "server_error"


def _decoded(body: bytes, encoding: str) -> bytes | None:
    if not encoding or encoding == "identity":
        return body
    if encoding in ("gzip", "deflate", "x-gzip"):
        try:
            return zlib.decompress(body, wbits=47)  # 32 + 15: gzip or zlib header, auto
        except zlib.error:
            return None
    return None  # br, zstd: usage stays unknown rather than pulling in a decoder


def is_event_stream(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


async def relay_whole(
    response: aiohttp.ClientResponse, body: bytes | None, *, family: Family | None, label: str
) -> tuple[web.Response, Relayed]:
    """Read the answer whole (unless already read) and build one response."""
    try:
        if body is None:
            body = await response.read()
    except TimeoutError as exc:
        response.close()
        raise UpstreamTimeoutError(f"promptcache: upstream {label} stopped sending") from exc
    except _STREAM_ERRORS as exc:
        response.close()
        raise UpstreamUnreachableError(
            f"promptcache: upstream {label} broke off its answer ({type(exc).__name__})"
        ) from exc
    finally:
        response.release()
    started = time.perf_counter()
    headers = client_response_headers(response.headers, keep_length=False)
    out = web.Response(status=response.status, reason=response.reason, headers=headers, body=body)
    unread = None
    if family is not None and response.status == 200:
        # Read after the answer is on its way (``read_usage``), not before.
        unread = (family, body, response.headers.get("content-encoding", "").lower())
    first_byte_at = time.perf_counter()
    seen = Relayed(
        response.status,
        outcome_for(response.status),
        first_byte_at=first_byte_at,
        busy=first_byte_at - started,
        unread=unread,
    )
    return out, seen


@dataclass(slots=True)
class _Seen:
    """What a relay has seen so far; frozen into a ``Relayed`` when it is over."""

    status: int
    outcome: str
    first_byte_at: float | None = None
    busy: float = 0.0

    def done(
        self,
        usage: Usage | None = None,
        model: str | None = None,
        message: dict[str, Any] | None = None,
    ) -> Relayed:
        return Relayed(
            self.status,
            self.outcome,
            usage,
            model,
            self.first_byte_at,
            self.busy,
            anthropic_message=message,
        )


async def relay_stream(
    request: web.Request,
    response: aiohttp.ClientResponse,
    *,
    family: Family,
    tap: UsageTap | None,
    label: str,
) -> tuple[web.StreamResponse, Relayed]:
    """Relay an event stream event by event, reading usage on the way."""
    started = time.perf_counter()
    headers = client_response_headers(response.headers, keep_length=False)
    encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
    if encoded:
        tap = None  # a compressed stream is relayed as is; its usage stays unknown
    out = web.StreamResponse(status=response.status, reason=response.reason, headers=headers)
    seen = _Seen(response.status, outcome_for(response.status))
    splitter = EventSplitter()
    try:
        await out.prepare(request)
    except _STREAM_ERRORS:
        response.close()
        seen.outcome = "client_closed"
        return out, seen.done()
    busy = time.perf_counter() - started
    try:
        async for chunk in response.content.iter_any():
            t = time.perf_counter()
            block = chunk if encoded else splitter.feed(chunk)
            if tap is not None and block:
                block = tap.process(block)
            busy += time.perf_counter() - t
            if block:
                if seen.first_byte_at is None:
                    seen.first_byte_at = time.perf_counter()
                await out.write(block)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError) as exc:
        if _app_gone(request):
            response.close()
            seen.outcome = "client_closed"
            return out, seen.done()
        await _end_with_error(out, family, label, exc, seen)
    except _STREAM_ERRORS as exc:
        await _end_with_error(out, family, label, exc, seen)
    else:
        if splitter.pending:  # the upstream ended without a final blank line
            await _write_quietly(out, splitter.pending, seen)
        if tap is not None and tap.error:
            seen.outcome = "stream_error"
        try:
            await out.write_eof()
        except _STREAM_ERRORS:
            seen.outcome = "client_closed"
    finally:
        response.release()
    seen.busy = busy
    if tap is not None:
        return out, seen.done(tap.usage, tap.model, getattr(tap, "message", None))
    return out, seen.done()


async def relay_raw(
    request: web.Request, response: aiohttp.ClientResponse
) -> tuple[web.StreamResponse, Relayed]:
    """Relay any other answer chunk by chunk, byte for byte."""
    started = time.perf_counter()
    has_length = "content-length" in response.headers
    headers = client_response_headers(response.headers, keep_length=has_length)
    out = web.StreamResponse(status=response.status, reason=response.reason, headers=headers)
    seen = _Seen(response.status, outcome_for(response.status))
    try:
        await out.prepare(request)
        seen.busy = time.perf_counter() - started
        async for chunk in response.content.iter_any():
            if seen.first_byte_at is None:
                seen.first_byte_at = time.perf_counter()
            await out.write(chunk)
        await out.write_eof()
    except _STREAM_ERRORS as exc:
        seen.outcome = "client_closed" if _app_gone(request) else "stream_error"
        log.warning("relay from upstream ended early: %s", type(exc).__name__)
        response.close()
        if request.transport is not None:
            request.transport.close()  # the length promised can no longer be met
    finally:
        response.release()
    return out, seen.done()


def _app_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _write_quietly(out: web.StreamResponse, data: bytes, seen: _Seen) -> None:
    try:
        await out.write(data)
    except _STREAM_ERRORS:
        seen.outcome = "client_closed"


async def _end_with_error(
    out: web.StreamResponse, family: Family, label: str, exc: BaseException, seen: _Seen
) -> None:
    kind = "stopped sending" if isinstance(exc, TimeoutError) else "broke off the stream"
    log.warning("upstream %s %s: %s", label, kind, type(exc).__name__)
    seen.outcome = "stream_error"
    message = f"promptcache: upstream {label} {kind} ({type(exc).__name__})"
    await _write_quietly(out, sse_error_event(family, message), seen)
    try:
        await out.write_eof()
    except _STREAM_ERRORS:
        seen.outcome = "client_closed"
