"""The context phase: every declared source fetched at once, under one deadline.

``ContextFetcher.fetch`` starts one task per source, each bounded by the policy's
``contextDeadline``; a task renders its URL and headers from the request's variables,
answers from the ``cacheFor`` memo when it can (or, for such a memoisable source, waits
for a concurrent request's fetch of the same key: single flight, so a cold or expired
entry costs one fetch, not one per caller), and otherwise sends the request with its
own ``timeout`` per attempt, retrying (tenacity) only connection errors, timeouts and
5xx answers. Every outcome is a text or a failure reason; a required source's
failure cancels the rest and raises ``RequiredSourceError``, an optional one becomes
its placeholder text. Nothing here can make a request wait past the deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential, wait_random
from yarl import URL

from promptcache.policy.schema import ContextSource, PolicySpec, parse_duration
from promptcache.sidecar.context.errors import FailureReason, RequiredSourceError, SourceError
from promptcache.sidecar.context.memo import Memo, MemoKey
from promptcache.sidecar.context.metrics import ContextMetrics
from promptcache.sidecar.context.reading import read_text
from promptcache.sidecar.context.variables import (
    render_body,
    render_headers,
    render_url,
    resolve_variables,
)
from promptcache.sidecar.planner.types import ContextBlock

log = logging.getLogger(__name__)

TRACER_NAME = "promptcache.sidecar"
DEFAULT_ACCEPT = "text/plain, text/markdown, application/json, text/*;q=0.9"
"""Sent unless the source sets ``Accept`` itself."""
RETRY_INITIAL_WAIT = 0.05
"""Seconds before the first retry; doubles each time, plus jitter."""
RETRY_MAX_WAIT = 0.5
"""Seconds between retries at most (the deadline still cuts them short)."""
_GRACE = 0.05
"""Seconds past the deadline after which a task that ignored it is abandoned."""


class _ServerError(SourceError):
    """A 5xx answer: the one status worth another attempt."""


_RETRYABLE = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError, _ServerError)


@dataclass(frozen=True, slots=True)
class SourceResult:
    """One source's outcome: ``text`` on success, else ``reason``."""

    name: str
    text: str | None = None
    reason: FailureReason | None = None
    status: int | None = None
    nbytes: int = 0
    attempts: int = 0
    memo_hit: bool = False
    coalesced: bool = False
    """Shared with a concurrent request's fetch of the same memoisable source."""

    @property
    def outcome(self) -> str:
        if self.reason:
            return self.reason
        return "memo_hit" if self.memo_hit else "coalesced" if self.coalesced else "ok"


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One source's request as rendered for this call."""

    url: str
    headers: CIMultiDict[str]
    body: bytes | None


@dataclass(slots=True)
class _Attempts:
    count: int = 0
    status: int | None = None


class ContextFetcher:
    """Fetches a policy's context sources for one request; shared by all requests.

    ``session`` is owned by the application (created and closed in its lifecycle);
    ``memo`` defaults to a fresh bounded ``Memo``; ``tracer_provider`` defaults to the
    global one (tests pass their own).
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        metrics: ContextMetrics,
        memo: Memo | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self._session = session
        self._metrics = metrics
        self._memo = memo if memo is not None else Memo()
        self._inflight: dict[MemoKey, asyncio.Future[SourceResult | None]] = {}
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)

    @property
    def memo(self) -> Memo:
        return self._memo

    async def fetch(
        self,
        *,
        policy_name: str,
        policy: PolicySpec,
        headers: Mapping[str, str],
        body: object,
    ) -> list[ContextBlock]:
        """The context blocks for one request, in declaration order.

        Raises ``RequiredSourceError`` as soon as a required source fails. Returns at
        the latest shortly after ``policy.context_deadline``.
        """
        sources = policy.context_sources
        if not sources:
            return []
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + parse_duration(policy.context_deadline)
        values = resolve_variables(policy.context_variables, headers=headers, body=body)
        tasks = {
            asyncio.create_task(self._source(policy_name, src, values, deadline)): src
            for src in sources
        }
        order = {src.name: i for i, src in enumerate(sources)}
        results: dict[str, SourceResult] = {}
        pending: set[asyncio.Task[SourceResult]] = set(tasks)
        try:
            while pending:
                timeout = max(0.0, deadline - loop.time()) + _GRACE
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    break
                for task in sorted(done, key=lambda t: order[tasks[t].name]):
                    result = task.result()
                    results[result.name] = result
                    if result.reason is not None and tasks[task].required:
                        raise RequiredSourceError(result.name, result.reason)
            for task in pending:
                self._failed(policy_name, tasks[task].name, "deadline", status=None)
            return _blocks(sources, results)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=_GRACE)
            self._metrics.phase.labels(policy_name).observe(loop.time() - started)

    async def _source(
        self, policy_name: str, src: ContextSource, values: Mapping[str, str], deadline: float
    ) -> SourceResult:
        with self._tracer.start_as_current_span(
            f"context.fetch {src.name}",
            kind=SpanKind.CLIENT,
            attributes={
                "promptcache.policy": policy_name,
                "promptcache.context.source": src.name,
                "http.request.method": src.method,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await self._run(policy_name, src, values, deadline)
            except asyncio.CancelledError:
                span.set_attribute("promptcache.context.outcome", "cancelled")
                raise
            except Exception as exc:  # fail open: a bug here costs one source, not the request
                # The type only: an exception's text may hold the URL, i.e. variable values.
                log.error(
                    "context source %s of policy %s: unexpected %s",
                    src.name,
                    policy_name,
                    type(exc).__name__,
                )
                result = SourceResult(src.name, reason="error")
            span.set_attribute("promptcache.context.outcome", result.outcome)
            span.set_attribute("promptcache.context.bytes", result.nbytes)
            span.set_attribute("promptcache.context.attempts", result.attempts)
            if result.status is not None:
                span.set_attribute("http.response.status_code", result.status)
            if result.reason is not None:
                span.set_status(Status(StatusCode.ERROR, result.reason))
                self._failed(policy_name, src.name, result.reason, status=result.status)
        return result

    async def _run(
        self, policy_name: str, src: ContextSource, values: Mapping[str, str], deadline: float
    ) -> SourceResult:
        try:
            out = _Outgoing(
                url=render_url(src.url, values),
                headers=render_headers(src.headers, values),
                body=render_body(src.body, values) if src.body is not None else None,
            )
        except SourceError as exc:
            return SourceResult(src.name, reason=exc.reason)
        if out.body is not None:
            out.headers.setdefault("Content-Type", "application/json")
        if src.cache_for is None:
            return await self._fetch(policy_name, src, out, deadline, None)
        key = MemoKey.of(
            policy=policy_name,
            source=src.name,
            method=src.method,
            url=out.url,
            headers=out.headers,
            body=out.body or b"",
        )
        while True:
            text = self._memo.get(key)
            if text is not None:
                self._metrics.memo_hits.labels(policy_name, src.name).inc()
                return SourceResult(src.name, text=text, memo_hit=True)
            shared = self._inflight.get(key)
            if shared is None:
                return await self._lead(policy_name, src, out, deadline, key)
            try:
                async with asyncio.timeout_at(deadline):
                    result = await asyncio.shield(shared)
            except TimeoutError:
                return SourceResult(src.name, reason="deadline")
            if result is not None and result.reason != "deadline":
                self._metrics.coalesced.labels(policy_name, src.name).inc()
                return dataclasses.replace(result, coalesced=True, attempts=0)
            # The fetch we waited for was cancelled or ran out of its own (earlier)
            # deadline: try again ourselves, from the memo or as the new leader.

    async def _lead(
        self, policy_name: str, src: ContextSource, out: _Outgoing, deadline: float, key: MemoKey
    ) -> SourceResult:
        """Fetch ``key`` while concurrent requests for the same key wait for this result
        (single flight: a cold or expired memo entry costs one fetch, not one per caller)."""
        shared: asyncio.Future[SourceResult | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = shared
        result: SourceResult | None = None
        try:
            result = await self._fetch(policy_name, src, out, deadline, key)
            return result
        finally:
            del self._inflight[key]
            shared.set_result(result)  # None: cancelled, the waiters fetch for themselves

    async def _fetch(
        self,
        policy_name: str,
        src: ContextSource,
        out: _Outgoing,
        deadline: float,
        key: MemoKey | None,
    ) -> SourceResult:
        out.headers.setdefault("Accept", DEFAULT_ACCEPT)
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempts = _Attempts()
        try:
            async with asyncio.timeout_at(deadline):
                try:
                    fetched: tuple[str, int] = await self._retrying(src)(
                        self._attempt, src, out, attempts
                    )
                except (SourceError, TimeoutError, aiohttp.ClientError) as exc:
                    return SourceResult(
                        src.name,
                        reason=_reason(exc),
                        status=attempts.status,
                        attempts=attempts.count,
                    )
        except TimeoutError:
            return SourceResult(
                src.name, reason="deadline", status=attempts.status, attempts=attempts.count
            )
        finally:
            self._metrics.fetch_duration.labels(policy_name, src.name).observe(
                loop.time() - started
            )
        text, nbytes = fetched
        if key is not None and src.cache_for is not None:
            self._memo.put(key, text, ttl=parse_duration(src.cache_for))
        return SourceResult(
            src.name, text=text, status=attempts.status, nbytes=nbytes, attempts=attempts.count
        )

    @staticmethod
    def _retrying(src: ContextSource) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(src.retries + 1),
            wait=wait_exponential(multiplier=RETRY_INITIAL_WAIT, max=RETRY_MAX_WAIT)
            + wait_random(0, RETRY_INITIAL_WAIT),
            retry=retry_if_exception_type(_RETRYABLE),
            reraise=True,
        )

    async def _attempt(
        self, src: ContextSource, out: _Outgoing, attempts: _Attempts
    ) -> tuple[str, int]:
        attempts.count += 1
        attempts.status = None
        async with (
            asyncio.timeout(parse_duration(src.timeout)),
            self._session.request(
                src.method,
                URL(out.url, encoded=True),
                headers=out.headers,
                data=out.body,
                allow_redirects=False,
            ) as resp,
        ):
            attempts.status = resp.status
            if resp.status >= 500:
                raise _ServerError("status", status=resp.status)
            if not 200 <= resp.status < 300:
                raise SourceError("status", status=resp.status)
            return await read_text(resp, max_bytes=src.max_bytes)

    def _failed(
        self, policy_name: str, source: str, reason: FailureReason, *, status: int | None
    ) -> None:
        self._metrics.failures.labels(policy_name, source, reason).inc()
        log.info(
            "context source %s of policy %s failed: %s%s",
            source,
            policy_name,
            reason,
            "" if status is None else f" (HTTP {status})",
        )


def _reason(exc: Exception) -> FailureReason:
    """The failure reason of what the last attempt raised (timeouts before connections:
    aiohttp's ``ServerTimeoutError`` is both)."""
    if isinstance(exc, SourceError):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return "unreachable"
    return "error"


def _blocks(
    sources: Sequence[ContextSource], results: Mapping[str, SourceResult]
) -> list[ContextBlock]:
    blocks: list[ContextBlock] = []
    for src in sources:
        result = results.get(src.name) or SourceResult(src.name, reason="deadline")
        if result.text is not None:
            blocks.append(ContextBlock(name=src.name, text=result.text))
        elif src.required:
            raise RequiredSourceError(src.name, result.reason or "error")
        elif src.placeholder:
            text = src.placeholder.replace("{reason}", result.reason or "error")
            blocks.append(ContextBlock(name=src.name, text=text))
    return blocks
