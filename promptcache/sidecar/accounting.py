"""Recording what one call did, once it is over: outcome, tokens, cost, timing, cache misses.

Everything is counted exactly once per call, at its end, from the final usage (for a
stream: the usage the stream reported last, never a sum of its events), which is where
the peer gateways double-counted cache writes. Recording fails open too: a bug here
costs a metric, never the app's answer. An answered call is counted off the app's path
(``finish_soon``: the ledger's backlog), with its times taken when its answer was done;
anything that reads the metrics sees every answered call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial

from opentelemetry.trace import Span

from promptcache.policy import LoadedPolicy
from promptcache.sidecar.planner import Plan
from promptcache.sidecar.relay import Relayed
from promptcache.sidecar.state import SidecarState
from promptcache.wire import Family, Provider

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Call:
    """Bookkeeping of one proxied call while it runs."""

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


def finish(state: SidecarState, call: Call, seen: Relayed | None) -> None:
    """Record the call in metrics and its span; never raises."""
    ended = time.perf_counter()
    try:
        if seen is not None:
            seen.read_usage()
        _record(state, call, seen, ended, time.monotonic())
    except Exception as exc:
        state.metrics.transform_errors.labels(call.provider, "measure").inc()
        log.warning("recording a call failed: %s", type(exc).__name__)
    finally:
        _finish_span(state, call, seen)


def _finish_span(state: SidecarState, call: Call, seen: Relayed | None) -> None:
    state.tracer.finish(
        call.span,
        status=seen.status if seen else call.status,
        outcome=seen.outcome if seen else call.outcome,
        response_model=seen.model if seen else None,
        usage=seen.usage if seen else None,
        retries=call.retries,
        policy=call.policy_label,
    )


def finish_soon(state: SidecarState, call: Call, seen: Relayed) -> None:
    """``finish`` once the answer is done or on its way: the app does not wait for accounting.

    Durations and the planner's clock are taken now, when the answer is done; the rest
    waits in the ledger's backlog (``sidecar.ledger.Backlog``: run while the next call
    waits for its upstream, or when the loop is idle, and always before metrics are
    read). A traced call is finished on the loop's next turn instead, so its span ends
    with the answer.
    """
    ended = time.perf_counter()
    now = time.monotonic()
    if call.span is not None:
        asyncio.get_running_loop().call_soon(_finish_at, state, call, seen, ended, now)
    else:
        state.metrics.ledger.backlog.add(partial(_finish_at, state, call, seen, ended, now))


def _finish_at(state: SidecarState, call: Call, seen: Relayed, ended: float, now: float) -> None:
    try:
        seen.read_usage()
        _record(state, call, seen, ended, now)
    except Exception as exc:
        state.metrics.transform_errors.labels(call.provider, "measure").inc()
        log.warning("recording a call failed: %s", type(exc).__name__)
    finally:
        _finish_span(state, call, seen)


def _record(
    state: SidecarState, call: Call, seen: Relayed | None, ended: float, now: float
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
    usage = seen.usage
    if usage is not None:
        metrics.record_usage(
            provider=provider, model=model, policy=policy, usage=usage, pricing=pricing
        )
    plan = call.plan
    if plan is None:
        return
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
