"""Settings of one simulator instance: latency model, caches, faults and the clock.

Everything a run can vary lives here as small frozen value classes with named defaults,
so that the CLI, the demo and the tests build the same object and nothing reads globals.
Durations are in *simulated* seconds unless a field says otherwise; ``time_scale``
turns simulated seconds into real sleeps (0.05 runs twenty times faster, 0 never sleeps).
The calibration of the defaults is worked through in ``docs/simulator.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

FaultKind = Literal["429", "529", "500", "reset-before", "reset-during", "slow-headers"]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "429",
    "529",
    "500",
    "reset-before",
    "reset-during",
    "slow-headers",
)
DEFAULT_FAULT_ARG: dict[FaultKind, float] = {"429": 1.0, "slow-headers": 5.0}
"""Default argument per kind: retry-after seconds for 429, delay seconds for slow-headers."""


@dataclass(frozen=True, slots=True)
class LatencyConfig:
    """Time to first token = fixed + uncached / prefill rate + cached / cached rate."""

    fixed_s: float = 0.5
    """Per-request overhead before prefill (network, auth, scheduling), seconds."""
    prefill_tokens_per_s: float = 9_000.0
    """Marginal prefill speed for uncached input tokens, tokens per second per lane."""
    cached_tokens_per_s: float = 50_000.0
    """Speed at which cached input tokens are loaded instead of computed, tokens/s."""
    decode_tokens_per_s: float = 60.0
    """Output speed of one response, tokens per second."""
    prefill_lanes: int = 7
    """Prefills that run at once; more requests wait their turn (the shared "GPU")."""
    jitter: float = 0.25
    """Sigma of the log-normal factor on the fixed overhead; rates get half of it."""
    tail_probability: float = 0.02
    """Share of requests whose fixed overhead is multiplied by ``tail_factor``."""
    tail_factor: float = 4.0
    """How much slower a tail request's fixed overhead is."""


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """What a simulated model says: deterministic filler text of a bounded length."""

    min_tokens: int = 150
    """Shortest natural answer, tokens (``max_tokens`` may cut it shorter)."""
    max_tokens: int = 300
    """Longest natural answer, tokens."""
    tokens_per_event: int = 3
    """Output tokens carried by one stream delta event."""
    min_write_interval_s: float = 0.01
    """Real seconds between two socket writes of one stream; due events are batched."""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Cache sizes and lifetimes for both provider dialects."""

    max_entries: int = 200_000
    """LRU bound of the Anthropic store and of each OpenAI machine's store."""
    anthropic_lookback_blocks: int = 20
    """Blocks before a breakpoint checked for an earlier entry on a miss."""
    anthropic_ttl_5m_s: float = 300.0
    """Lifetime of a ``ttl: 5m`` entry after its last use, seconds."""
    anthropic_ttl_1h_s: float = 3_600.0
    """Lifetime of a ``ttl: 1h`` entry after its last use, seconds."""
    openai_min_tokens: int = 1_024
    """Shortest OpenAI prompt that is cached at all, tokens."""
    openai_step_tokens: int = 128
    """Granularity of OpenAI cache hits, tokens."""
    openai_routing_tokens: int = 256
    """Leading tokens hashed (with ``prompt_cache_key``) to pick a machine."""
    openai_retention_s: float = 600.0
    """``in_memory`` retention: idle seconds before an entry is evicted."""
    openai_max_lifetime_s: float = 3_600.0
    """``in_memory`` entries die this long after creation even if used."""
    openai_extended_retention_s: float = 86_400.0
    """``prompt_cache_retention: 24h`` idle lifetime, seconds."""
    openai_overflow_rpm: float = 15.0
    """Requests per minute per prefix+key before overflow spills to other machines (0: off)."""


@dataclass(frozen=True, slots=True)
class FaultRule:
    """A fault injected into a share of all API requests of a run (``--fault``)."""

    kind: FaultKind
    rate: float = 1.0
    """Probability per request, 0..1, drawn from the seeded generator."""
    arg: float | None = None
    """Retry-after seconds for 429, delay seconds for slow-headers; None: the default."""


class ManualClock:
    """A clock that only moves when told to: TTL tests advance it instead of sleeping."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


CacheClock = Literal["simulated", "wall"]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulator instance."""

    seed: int = 0
    """Seeds output text, jitter, ids and per-run faults."""
    time_scale: float = 1.0
    """Multiplier from simulated seconds to real sleeps (0.05: 20x faster; 0: no sleeps)."""
    machines: int = 4
    """Simulated OpenAI cache machines; a prefix+key is routed to one of them."""
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    faults: tuple[FaultRule, ...] = ()
    cache_clock: CacheClock = "simulated"
    """TTLs and rate windows run on simulated time (real time / time_scale) or wall time."""
    clock: Callable[[], float] | None = None
    """Overrides the cache clock (tests pass a ``ManualClock``)."""
    keep_bodies: int = 0
    """Keep the last N request bodies as received (tests read what a proxy forwarded)."""
    require_auth: bool = False
    """Refuse (401) API requests without a key, as the providers do: ``x-api-key`` or
    ``Authorization: Bearer``. Off by default so raw HTTP tests need no key."""

    def make_clock(self) -> Callable[[], float]:
        """The clock TTLs, retention and overflow windows are measured on."""
        if self.clock is not None:
            return self.clock
        if self.cache_clock == "wall" or self.time_scale <= 0 or self.time_scale == 1.0:
            return time.monotonic
        scale = self.time_scale
        return lambda: time.monotonic() / scale


def parse_fault_rule(text: str) -> FaultRule:
    """``KIND[=ARG][:RATE]``, e.g. ``429:0.05``, ``slow-headers=2:0.1``, ``reset-during``."""
    spec, _, rate_text = text.partition(":")
    kind_text, _, arg_text = spec.partition("=")
    kind = parse_fault_kind(kind_text)
    rate = float(rate_text) if rate_text else 1.0
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fault rate must be within 0..1, got {rate}")
    arg = float(arg_text) if arg_text else None
    if arg is not None and arg < 0:
        raise ValueError(f"fault argument must not be negative, got {arg}")
    return FaultRule(kind=kind, rate=rate, arg=arg)


def parse_fault_kind(text: str) -> FaultKind:
    for kind in FAULT_KINDS:
        if text.strip().lower() == kind:
            return kind
    raise ValueError(f"unknown fault {text!r}; expected one of {', '.join(FAULT_KINDS)}")
