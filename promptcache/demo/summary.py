"""From per-request outcomes to the case study's figures for one arm.

Latencies are measured on the wall clock and divided by the simulator's time scale, so
they are in the provider's (simulated) seconds and comparable with the case study; the
client's and the sidecar's own processing time is scaled up by the same factor, which
only ever counts against the promptcache arm. Costs are recomputed from the token
counts the app received, with the shared price table (``promptcache.pricing``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from promptcache.demo.app import Outcome
from promptcache.models import ModelInfo
from promptcache.pricing import cost
from promptcache.usage import Usage, total


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``q`` in 0..100; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def agrees(a: Usage, b: Usage) -> bool:
    """Same counts by kind, cache writes of either TTL counted together (the sidecar's
    metrics do not split writes by TTL)."""
    return (
        a.uncached == b.uncached
        and a.cache_read == b.cache_read
        and a.cache_write == b.cache_write
        and a.output == b.output
    )


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """Average USD per successful request, by what was billed."""

    uncached: float
    cache_read: float
    cache_write: float
    output: float

    @property
    def input(self) -> float:
        return self.uncached + self.cache_read + self.cache_write

    @property
    def total(self) -> float:
        return self.input + self.output


def breakdown(tokens: Usage, requests: int, info: ModelInfo) -> CostBreakdown:
    """Cost per request by kind, each priced on its own with ``promptcache.pricing.cost``."""
    n = max(requests, 1)
    parts = (
        Usage(uncached=tokens.uncached),
        Usage(cache_read=tokens.cache_read),
        Usage(cache_write_5m=tokens.cache_write_5m, cache_write_1h=tokens.cache_write_1h),
        Usage(output=tokens.output),
    )
    unc, read, write, out = (cost(p, info) for p in parts)
    return CostBreakdown(
        uncached=unc.input / n,
        cache_read=read.input / n,
        cache_write=write.input / n,
        output=out.output / n,
    )


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """The case study's figures for one arm."""

    name: str
    requests: int
    failures: int
    duration_s: float
    """Simulated seconds from the first request's start to the last one's end."""
    latency_s: tuple[float, ...]
    """Simulated seconds per successful request (for the distribution plot)."""
    ttft_s: tuple[float, ...]
    tokens: Usage
    cost: CostBreakdown
    cost_direct: float
    """Input cost per request from ``pricing.cost`` on the whole arm (cross-check)."""
    input_tokens_per_request: float
    retrieved_tokens_per_request: float
    after_first_token_s: tuple[float, ...] = ()
    """Simulated seconds from the first token to the end, per request that had one: the
    answer's own length, which no cache shortens."""

    @property
    def ok(self) -> int:
        return self.requests - self.failures

    @property
    def median(self) -> float:
        return percentile(self.latency_s, 50)

    @property
    def p95(self) -> float:
        return percentile(self.latency_s, 95)

    @property
    def average(self) -> float:
        return _mean(self.latency_s)

    @property
    def p95_floor(self) -> float:
        """P95 latency if every request had had the run's fastest first token: what this
        arm would measure had its cache read every prompt token. Answers still take as
        long to stream as they did."""
        if not self.after_first_token_s or not self.ttft_s:
            return math.nan
        fastest = min(self.ttft_s)
        return percentile([fastest + d for d in self.after_first_token_s], 95)

    @property
    def ttft_median(self) -> float:
        return percentile(self.ttft_s, 50)

    @property
    def ttft_average(self) -> float:
        return _mean(self.ttft_s)

    @property
    def ttft_p95(self) -> float:
        return percentile(self.ttft_s, 95)

    @property
    def rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0


def summarise(
    name: str, outcomes: Sequence[Outcome], *, time_scale: float, info: ModelInfo
) -> ArmSummary:
    """One arm's figures; wall-clock seconds become simulated seconds via ``time_scale``."""
    scale = time_scale if time_scale > 0 else 1.0
    good = [o for o in outcomes if o.ok]
    tokens = total(o.usage for o in good)
    if outcomes:
        start = min(o.started for o in outcomes)
        end = max(o.started + o.latency for o in outcomes)
        duration = (end - start) / scale
    else:
        duration = 0.0
    n = max(len(good), 1)
    return ArmSummary(
        name=name,
        requests=len(outcomes),
        failures=len(outcomes) - len(good),
        duration_s=duration,
        latency_s=tuple(o.latency / scale for o in good),
        ttft_s=tuple(o.ttft / scale for o in good if o.ttft is not None),
        tokens=tokens,
        cost=breakdown(tokens, len(good), info),
        cost_direct=cost(tokens, info).input / n,
        input_tokens_per_request=tokens.total_input / n,
        retrieved_tokens_per_request=sum(o.retrieved_tokens for o in good) / n,
        after_first_token_s=tuple((o.latency - o.ttft) / scale for o in good if o.ttft is not None),
    )
