"""The request path: an LLM call in, planned, forwarded, relayed and measured.

The stages, each returning an immutable result to ``_llm_call``, which strings them
together: read (``read_body``: bytes) -> parse (``prepare.parse_body``) -> context
(``fetch_context``: context blocks) -> plan (``prepare.prepare``: ``Prepared``) -> send
(``sending.send``: ``Sent``) -> relay (``relay``: ``relay.Relayed``) -> record
(``accounting.Recording``, the one owner of the call's record, whichever way it ends).

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
from opentelemetry import trace

from promptcache.policy import LoadedPolicy
from promptcache.sidecar.accounting import Call, Recording
from promptcache.sidecar.context import RequiredSourceError
from promptcache.sidecar.diagnostics import answer_facts
from promptcache.sidecar.errors import (
    BodyTooLargeError,
    ClientTooSlowError,
    ContextSourceFailedError,
    SidecarError,
    error_response,
)
from promptcache.sidecar.headers import (
    client_retries,
    readable_encodings,
    upstream_request_headers,
)
from promptcache.sidecar.metrics import NO_POLICY
from promptcache.sidecar.planner import ContextBlock
from promptcache.sidecar.prepare import Prepared, parse_body, prepare, request_model
from promptcache.sidecar.relay import (
    WHOLE_LIMIT,
    Relayed,
    is_event_stream,
    relay_raw,
    relay_stream,
    relay_whole,
)
from promptcache.sidecar.sending import Sent, send
from promptcache.sidecar.sse import AnthropicTap, OpenAIChatTap, ResponsesTap, UsageTap
from promptcache.sidecar.state import STATE, SidecarState
from promptcache.sidecar.upstream import Answer, Body, Upstream
from promptcache.wire import ROUTES, Family, Route, family_of_path, family_of_route, provider_of

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


async def fetch_context(
    request: web.Request,
    state: SidecarState,
    call: Call,
    policy: LoadedPolicy | None,
    parsed: object,
) -> list[ContextBlock]:
    """The context stage: this request's context blocks; an optional source fails open."""
    context = state.context
    if policy is None or context is None or not policy.spec.context_sources:
        return []
    try:
        with trace.use_span(call.span, end_on_exit=False) if call.span else nullcontext():
            return await context.fetch(
                policy_name=policy.name, policy=policy.spec, headers=request.headers, body=parsed
            )
    except RequiredSourceError as exc:
        raise ContextSourceFailedError(
            f"promptcache: required context source {exc.source!r} failed ({exc.reason})"
        ) from exc
    except SidecarError:
        raise
    except Exception as exc:
        state.metrics.transform_errors.labels(call.provider, "context").inc()
        log.warning("context fetch failed, going on without it: %s", type(exc).__name__)
        return []


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
        with Recording(state, call) as recording:
            return await _llm_call(request, state, route, upstream, recording)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug of ours must not cost the app its answer
        state.metrics.transform_errors.labels(provider, "internal").inc()
        log.error("internal error, failing open: %s", type(exc).__name__)
        if call.sent_at is None:  # nothing went upstream yet: forward the app's request as is
            return await passthrough(request)
        return error_response(family, 502, "promptcache: internal error relaying the answer")


async def _llm_call(
    request: web.Request,
    state: SidecarState,
    route: Route,
    upstream: Upstream,
    recording: Recording,
) -> web.StreamResponse:
    """read -> parse -> context -> plan -> send -> relay; ``recording`` records the call."""
    call = recording.call
    family, provider, policy = call.family, call.provider, call.policy
    try:
        raw = await read_body(request, state)
    except SidecarError as exc:
        recording.failed("rejected")
        return error_response(family, exc.status, exc.message)
    call.excluded = time.perf_counter() - call.arrived  # the app's upload is the app's time

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

    started = time.perf_counter()
    try:
        context = await fetch_context(request, state, call, policy, parsed)
    except SidecarError as exc:
        recording.failed("context_failed", exc.status)
        return error_response(family, exc.status, exc.message)
    finally:
        call.excluded += time.perf_counter() - started  # waiting for sources is not ours

    if route == "messages" and parsed is not None and state.settings.mode == "apply":
        spec = policy.spec if policy else None
        if (
            state.diagnostics_on(spec.anthropic_diagnostics if spec else None)
            and (spec is None or spec.mode == "enforce")  # observe mode sends the app's bytes
            and not state.refused.refused(upstream.label, "diagnostics")
        ):
            call.link = state.chain.link(parsed)
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
        add_usage=not state.refused.refused(upstream.label, "include_usage"),
        extra=call.link.fields() if call.link else None,
    )
    call.plan = prepared.plan

    headers = upstream_request_headers(request.headers)
    readable_encodings(headers, stream=prepared.stream)
    state.tracer.inject(call.span, headers)
    metrics = state.metrics

    def on_retry(reason: str) -> None:
        call.retries += 1
        metrics.retries.labels(provider, reason).inc()

    try:
        call.sent_at = time.perf_counter()
        sent = await send(
            upstream,
            request.rel_url.raw_path_qs,
            headers,
            prepared,
            provider=provider,
            metrics=metrics,
            backlog=state.backlog,
            refused=state.refused,
            client_retries=client_retries(request.headers),
            on_retry=on_retry,
        )
        if sent.prepared is not prepared:  # the app's bytes went: the plan was not applied
            call.plan = None
        out, seen = await relay(request, sent, route=route, family=family, label=upstream.label)
    except SidecarError as exc:
        recording.failed("timeout" if exc.status == 504 else "unreachable", exc.status)
        return error_response(family, exc.status, exc.message)
    if call.link is not None and seen.status == 200:
        # On the path, not in the record backlog: the conversation's next turn may come
        # before the backlog runs, and must find this answer's id.
        message_id, call.provider_diagnostics = answer_facts(seen)
        if message_id is not None:
            state.chain.remember(call.link, message_id)
    # A whole answer is written as the handler returns; a relayed stream is over already.
    recording.answered(seen)
    return out


async def relay(
    request: web.Request, sent: Sent, *, route: Route, family: Family, label: str
) -> tuple[web.StreamResponse, Relayed]:
    """The relay stage: the answer to the app in the shape it came, usage tapped."""
    answer = sent.answer
    tap = _tap(route, sent.prepared) if is_event_stream(answer.response) else None
    return await _relay(request, answer, tap=tap, family=family, label=label)


async def _relay(
    request: web.Request,
    answer: Answer,
    *,
    tap: UsageTap | None,
    family: Family | None,
    label: str,
) -> tuple[web.StreamResponse, Relayed]:
    response = answer.response
    if family is not None and is_event_stream(response):
        return await relay_stream(request, response, family=family, tap=tap, label=label)
    if answer.read is not None or (_small(response) and request.method != "HEAD"):
        out, seen = await relay_whole(response, answer.read, family=family, label=label)
        if answer.retries_spent:
            # The sidecar made the attempts it would; a client that retries must not
            # multiply them (the official SDKs obey this header).
            out.headers["x-should-retry"] = "false"
        return out, seen
    return await relay_raw(request, response)


def _small(response: aiohttp.ClientResponse) -> bool:
    length = response.content_length
    return length is not None and length <= WHOLE_LIMIT


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
        answer = await upstream.send(
            request.method,
            request.rel_url.raw_path_qs,
            headers,
            body,
            on_retry=lambda reason: metrics.retries.labels(family, reason).inc(),
            client_retries=client_retries(request.headers),
        )
        out, _ = await _relay(request, answer, tap=None, family=None, label=upstream.label)
        return out
    except SidecarError as exc:
        return error_response(family, exc.status, exc.message)
