"""The request path: an LLM call in, planned, forwarded, relayed and measured.

``llm_call`` serves the three proxied routes; ``passthrough`` every other path and
method, byte for byte, to the upstream the request belongs to. Both fail open: whatever
the sidecar cannot do (parse, plan, fetch optional context) it skips, and the request
goes upstream as the app sent it. The only answers the sidecar makes itself are its own
limits (413 body too large, 408 client too slow) and upstream faults (502, 504), each in
the provider's error shape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import nullcontext

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from opentelemetry import trace

from promptcache.policy import LoadedPolicy
from promptcache.sidecar.accounting import Call, finish, finish_soon
from promptcache.sidecar.errors import (
    BodyTooLargeError,
    ClientTooSlowError,
    ContextSourceFailedError,
    SidecarError,
    error_response,
)
from promptcache.sidecar.headers import upstream_request_headers
from promptcache.sidecar.metrics import NO_POLICY
from promptcache.sidecar.planner import ContextBlock
from promptcache.sidecar.prepare import Prepared, parse_body, prepare, request_model
from promptcache.sidecar.relay import (
    WHOLE_LIMIT,
    is_event_stream,
    relay_raw,
    relay_stream,
    relay_whole,
)
from promptcache.sidecar.sse import AnthropicTap, OpenAIChatTap, ResponsesTap, UsageTap
from promptcache.sidecar.state import STATE, SidecarState
from promptcache.sidecar.upstream import Body, Upstream
from promptcache.wire import ROUTES, Route, family_of_path, family_of_route, provider_of

log = logging.getLogger(__name__)

_OPERATION = "chat"  # GenAI semconv operation for all three routes


async def read_body(request: web.Request, state: SidecarState) -> bytes:
    """The whole request body within the size and time limits."""
    limit = state.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLargeError(
            f"promptcache: request body over the sidecar's limit of {limit} bytes"
        )
    try:
        if request.content.is_eof():  # all of it arrived with the headers: no timer needed
            return await request.read()
        async with asyncio.timeout(state.settings.client_body_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise BodyTooLargeError(
            f"promptcache: request body over the sidecar's limit of {limit} bytes"
        ) from exc
    except TimeoutError as exc:
        raise ClientTooSlowError(
            f"promptcache: request body not received within {state.settings.client_body_timeout:g}s"
        ) from exc


def _tap(route: Route, prepared: Prepared) -> UsageTap:
    if route == "messages":
        return AnthropicTap()
    if route == "chat":
        return OpenAIChatTap(strip=prepared.inject_usage)
    return ResponsesTap()


async def _context(
    request: web.Request, state: SidecarState, call: Call, policy: LoadedPolicy, parsed: object
) -> list[ContextBlock]:
    """Context blocks for this request (the ``sidecar.context`` hook); fails open."""
    if state.context is None or not policy.spec.context_sources:
        return []
    started = time.perf_counter()
    try:
        with trace.use_span(call.span, end_on_exit=False) if call.span else nullcontext():
            return await state.context.fetch(
                policy_name=policy.name, policy=policy.spec, headers=request.headers, body=parsed
            )
    except SidecarError:
        raise
    except Exception as exc:
        source = getattr(exc, "source", None)
        if source is not None:  # sidecar.context.RequiredSourceError
            reason = getattr(exc, "reason", "failed")
            raise ContextSourceFailedError(
                f"promptcache: required context source {source!r} failed ({reason})"
            ) from exc
        state.metrics.transform_errors.labels(call.provider, "context").inc()
        log.warning("context fetch failed, going on without it: %s", type(exc).__name__)
        return []
    finally:
        call.excluded += time.perf_counter() - started


async def llm_call(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages``, ``/v1/chat/completions``, ``/v1/responses``."""
    arrived = time.perf_counter()
    state = request.app[STATE]
    route = ROUTES[request.path]
    family = family_of_route(route)
    upstream = state.upstreams.get(family)
    if upstream is None:  # shutting down: the sessions are gone
        return error_response(family, 503, "promptcache: the sidecar is shutting down")
    policy = state.policy.current
    provider = provider_of(route, policy.spec.provider if policy else None)
    call = Call(
        arrived=arrived,
        family=family,
        provider=provider,
        policy=policy,
        policy_label=policy.name if policy else NO_POLICY,
    )
    try:
        return await _llm_call(request, state, route, upstream, call)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug of ours must not cost the app its answer
        state.metrics.transform_errors.labels(provider, "internal").inc()
        log.error("internal error, failing open: %s", type(exc).__name__)
        if call.sent_at is None:  # nothing went upstream yet: forward the app's request as is
            return await passthrough(request)
        return error_response(family, 502, "promptcache: internal error relaying the answer")


async def _llm_call(
    request: web.Request, state: SidecarState, route: Route, upstream: Upstream, call: Call
) -> web.StreamResponse:
    family, provider, policy, arrived = call.family, call.provider, call.policy, call.arrived
    try:
        raw = await read_body(request, state)
    except SidecarError as exc:
        call.outcome = "rejected"
        finish(state, call, None)
        return error_response(family, exc.status, exc.message)
    call.excluded = time.perf_counter() - arrived  # reading the app's body is the app's time
    parsed = parse_body(
        raw, request.headers.get("content-type", ""), provider=provider, metrics=state.metrics
    )
    call.model = request_model(parsed)
    call.span = state.tracer.start(
        incoming=request.headers,
        operation=_OPERATION,
        provider=provider,
        model=call.model,
        server_address=upstream.base.host,
        server_port=upstream.base.port,
    )
    try:
        context = await _context(request, state, call, policy, parsed) if policy else []
    except SidecarError as exc:
        call.outcome = "context_failed"
        call.status = exc.status
        finish(state, call, None)
        return error_response(family, exc.status, exc.message)
    prepared = prepare(
        route=route,
        raw=raw,
        parsed=parsed,
        provider=provider,
        policy=policy,
        planner=state.planner if state.settings.planner_enabled else None,
        context=context,
        now=time.monotonic(),
        metrics=state.metrics,
    )
    call.plan = prepared.plan
    headers = upstream_request_headers(request.headers)
    state.tracer.inject(call.span, headers)
    try:
        response, read = await _send(upstream, request, headers, prepared, call, state)
        if is_event_stream(response):
            out, seen = await relay_stream(
                request, response, family=family, tap=_tap(route, prepared), label=upstream.label
            )
        elif read is not None or _small(response):
            out, seen = await relay_whole(response, read, family=family, label=upstream.label)
        else:
            out, seen = await relay_raw(request, response)
    except SidecarError as exc:
        call.outcome = "timeout" if exc.status == 504 else "unreachable"
        call.status = exc.status
        finish(state, call, None)
        return error_response(family, exc.status, exc.message)
    except asyncio.CancelledError:  # the app hung up (handler cancellation on)
        call.outcome = "client_closed"
        finish(state, call, None)
        raise
    # A whole answer is written as the handler returns; a relayed stream is over already.
    finish_soon(state, call, seen)
    return out


def _small(response: aiohttp.ClientResponse) -> bool:
    length = response.content_length
    return length is not None and length <= WHOLE_LIMIT


async def _send(
    upstream: Upstream,
    request: web.Request,
    headers: CIMultiDict[str],
    prepared: Prepared,
    call: Call,
    state: SidecarState,
) -> tuple[aiohttp.ClientResponse, bytes | None]:
    metrics = state.metrics

    def on_retry(reason: str) -> None:
        call.retries += 1
        metrics.retries.labels(call.provider, reason).inc()

    path = request.rel_url.raw_path_qs
    call.sent_at = time.perf_counter()
    metrics.ledger.backlog.run_soon()  # earlier calls' counting, while the upstream works
    response, read = await upstream.send("POST", path, headers, prepared.body, on_retry=on_retry)
    if response.status == 400 and prepared.body is not prepared.original:
        # Fail open: the upstream refused what the sidecar changed (a field an
        # OpenAI-compatible server does not know, say); the app's own bytes go instead.
        if read is None:
            read = await upstream.read_small(response)
        if b"stream_options" in read or (prepared.plan is not None and prepared.plan.changed):
            metrics.transform_errors.labels(call.provider, "upstream_rejected").inc()
            log.warning(
                "upstream %s refused the planned request; resending it unchanged", upstream.label
            )
            prepared.inject_usage = False
            prepared.body = prepared.original
            response, read = await upstream.send(
                "POST", path, headers, prepared.original, on_retry=on_retry
            )
    return response, read


async def passthrough(request: web.Request) -> web.StreamResponse:
    """Every other path and method: relayed untouched, without measuring."""
    state = request.app[STATE]
    family = family_of_path(request.path, request.headers)
    upstream = state.upstreams.get(family)
    if upstream is None:
        return error_response(family, 503, "promptcache: the sidecar is shutting down")
    body: Body = None
    if request.body_exists:
        length = request.content_length
        if length is not None and length <= state.settings.max_body_bytes:
            try:
                body = await read_body(request, state)
            except SidecarError as exc:
                return error_response(family, exc.status, exc.message)
        else:
            body = request.content.iter_any()  # large or unknown: streamed, never retried
    headers = upstream_request_headers(request.headers)
    metrics = state.metrics
    try:
        response, read = await upstream.send(
            request.method,
            request.rel_url.raw_path_qs,
            headers,
            body,
            on_retry=lambda reason: metrics.retries.labels(family, reason).inc(),
        )
        if read is not None or (_small(response) and request.method != "HEAD"):
            return (await relay_whole(response, read, family=None, label=upstream.label))[0]
        return (await relay_raw(request, response))[0]
    except SidecarError as exc:
        return error_response(family, exc.status, exc.message)
