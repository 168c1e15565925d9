"""The record stage: what one call did, recorded exactly once, by one owner.

``Recording`` is the owner. The handler opens it as a context manager around the whole
request path and tells it what each stage produced; whichever way the handler leaves
(an answer relayed, an error answered by the sidecar, the app hanging up), its exit
records the call once: outcome, tokens, cost, timing, cache misses, and the trace span.

Everything is counted from the final usage (for a stream: the usage the stream reported
last, never a sum of its events), which is where the peer gateways double-counted cache
writes. Recording fails open too: a bug here costs a metric, never the app's answer. An
answered call is counted off the app's path (queued in the state's ``Backlog``), with
its times taken when its answer was done; anything that reads the metrics sees every
answered call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial
from types import TracebackType

from opentelemetry.trace import Span

from promptcache.policy import LoadedPolicy
from promptcache.sidecar.diagnostics import MISSING, Link, disagrees, provider_reason
from promptcache.sidecar.planner import Plan
from promptcache.sidecar.relay import Relayed
from promptcache.sidecar.state import SidecarState
from promptcache.usage import Usage
from promptcache.wire import Family, Provider

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Call:
    """What the record stage knows of one call while it runs (filled in by ``Recording``)."""

    arrived: float
    """``perf_counter`` when the handler started."""
    family: Family
    provider: Provider
    policy: LoadedPolicy | None
    policy_label: str
    model: str = "other"
    span: Span | None = None
    plan: Plan | None = None
    outcome: str = "ok"
    """Outcome when the call ends without a relayed answer (rejected, unreachable, ...)."""
    status: int | None = None
    retries: int = 0
    excluded: float = 0.0
    """Seconds not spent by the sidecar before sending: the app's body upload, context."""
    sent_at: float | None = None
    """``perf_counter`` when the first upstream attempt started."""
    link: Link | None = None
    """Anthropic diagnostics chaining: this request's place in its conversation."""
    provider_diagnostics: object = MISSING
    """The answer's ``diagnostics`` as read when it was relayed (``diagnostics.MISSING``:
    none); read then, not here, so the next turn already finds this answer's id."""


class Recording:
    """The one owner of a call's record: ``with Recording(state, call) as rec: ...``.

    ``answered`` hands over the relayed answer (counted off the app's path); ``failed``
    says how a call without an answer ended. On exit exactly one record is made; a
    cancelled handler (the app hung up) records ``client_closed``. An unexpected error
    (a bug of ours; the handler then fails open) ends the span and counts nothing.
    """

    __slots__ = ("_seen", "call", "state")

    def __init__(self, state: SidecarState, call: Call) -> None:
        self.state = state
        self.call = call
        self._seen: Relayed | None = None

    def __enter__(self) -> Recording:
        return self

    def answered(self, seen: Relayed) -> None:
        self._seen = seen

    def failed(self, outcome: str, status: int | None = None) -> None:
        self.call.outcome = outcome
        self.call.status = status

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        state, call, seen = self.state, self.call, self._seen
        ended = time.perf_counter()
        now = time.monotonic()
        if seen is not None:
            if call.span is not None:  # so that the span ends with the answer
                asyncio.get_running_loop().call_soon(_record, state, call, seen, ended, now)
            else:
                state.backlog.add(partial(_record, state, call, seen, ended, now))
            return
        if exc_type is not None and not issubclass(exc_type, asyncio.CancelledError):
            call.outcome = "internal_error"
            _finish_span(state, call, None, None)
            return
        if exc_type is not None:
            call.outcome = "client_closed"
        _record(state, call, None, ended, now)


def _record(
    state: SidecarState, call: Call, seen: Relayed | None, ended: float, now: float
) -> None:
    """Record the call in metrics and its span; never raises."""
    usage: Usage | None = None
    model: str | None = None
    try:
        if seen is not None:
            usage, model = seen.read_usage()
        _count(state, call, seen, usage, ended, now)
    except Exception as exc:
        state.metrics.transform_errors.labels(call.provider, "measure").inc()
        log.warning("recording a call failed: %s", type(exc).__name__)
    finally:
        _finish_span(state, call, seen, usage, model)


def _finish_span(
    state: SidecarState,
    call: Call,
    seen: Relayed | None,
    usage: Usage | None,
    model: str | None = None,
) -> None:
    state.tracer.finish(
        call.span,
        status=seen.status if seen else call.status,
        outcome=seen.outcome if seen else call.outcome,
        response_model=model,
        usage=usage,
        retries=call.retries,
        policy=call.policy_label,
    )


def _count(
    state: SidecarState,
    call: Call,
    seen: Relayed | None,
    usage: Usage | None,
    ended: float,
    now: float,
) -> None:
    metrics = state.metrics
    provider, model, policy = call.provider, call.model, call.policy_label
    outcome = seen.outcome if seen else call.outcome
    ledger = metrics.ledger
    ledger.count(provider, model, policy, outcome)
    if call.sent_at is not None:
        busy = seen.busy if seen else 0.0
        own = max(0.0, call.sent_at - call.arrived - call.excluded) + busy
        ledger.overhead.observe((provider,), own)
    if seen is None:
        return
    ledger.duration.observe((provider, policy), ended - call.arrived)
    if seen.first_byte_at is not None:
        ledger.ttft.observe((provider, policy), seen.first_byte_at - call.arrived)
    pricing = call.policy.spec.pricing if call.policy else None
    if usage is not None:
        metrics.record_usage(
            provider=provider, model=model, policy=policy, usage=usage, pricing=pricing
        )
    plan = call.plan
    if plan is None:
        return
    plan.settle()  # planned with settle=False: what the outcome needs is made now
    for detector, count in plan.volatile_found.items():
        metrics.inc(metrics.volatile_spans, (policy, detector), count)
    if plan.observe_only:
        if plan.expected_cached_tokens > 0:
            metrics.record_prediction(
                provider=provider,
                model=model,
                policy=policy,
                cacheable_tokens=plan.expected_cached_tokens,
                pricing=pricing,
            )
    else:
        for breakpoint in plan.breakpoints:
            metrics.inc(metrics.breakpoints, (policy, breakpoint.tier))
    if usage is not None and seen.status == 200:
        miss = state.planner.record_outcome(plan, usage, now)
        if miss is not None:
            metrics.inc(metrics.cache_misses, (policy, miss))
        if call.link is not None:
            _provider_diagnosis(state, call, call.link, miss)


def _provider_diagnosis(state: SidecarState, call: Call, link: Link, miss: str | None) -> None:
    """Record the provider's verdict beside the sidecar's own diagnosis."""
    reason = provider_reason(call.provider_diagnostics)
    if reason is None or link.previous is None:
        return
    metrics, policy = state.metrics, call.policy_label
    metrics.inc(metrics.provider_miss_reasons, (policy, reason, miss or "none"))
    if disagrees(reason, miss):
        metrics.inc(metrics.miss_disagreements, (policy,))
        log.info(
            "cache diagnosis disagrees for %s: provider says %s, sidecar says %s",
            policy,
            reason,
            miss or "no miss",
        )
