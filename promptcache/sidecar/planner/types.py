"""The planner's contract with the proxy: what goes in, what comes out.

The proxy parses a request, hands a ``PlanRequest`` to ``Planner.plan`` and sends
``Plan.body``; once the response's usage is known it calls ``Planner.record_outcome``,
which returns why the cache missed, if it did. Any exception from ``plan`` makes the
proxy forward the original bytes (fail open).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from promptcache.policy.schema import PolicySpec
from promptcache.sidecar.learner import Split
from promptcache.sidecar.planner.guard import GuardNote
from promptcache.wire import Provider, provider_of
from promptcache.wire import Route as Route  # re-exported: the planner's contract names it
from promptcache.wire import Ttl as Ttl

MissReason = Literal["prefix_changed", "ttl_expired", "below_minimum", "first_write", "unknown"]
Tier = Literal["tools", "system", "history", "client", "automatic"]


@dataclass(frozen=True, slots=True)
class ContextBlock:
    """Fetched per-request context, emitted after the cached prefix."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """One parsed request and the policy that applies to it."""

    route: Route
    body: dict[str, Any]
    """The parsed JSON body; the planner never mutates it."""
    policy_name: str | None = None
    policy: PolicySpec | None = None
    context: Sequence[ContextBlock] = ()
    now: float = 0.0
    """Seconds on a monotonic clock, for reuse gaps and TTL expiry."""

    @property
    def provider(self) -> Provider:
        return provider_of(self.route, self.policy.provider if self.policy else None)


@dataclass(frozen=True, slots=True)
class Breakpoint:
    """One cache marker in the planned request."""

    tier: Tier
    ttl: Ttl
    prefix_tokens: int
    """Estimated tokens of the prefix this marker closes."""
    path: str
    """Where it sits, e.g. ``tools[3]``, ``system[0]``, ``messages[4].content[1]``."""
    placed_by: Literal["client", "planner"]


@dataclass(frozen=True, slots=True)
class Relocation:
    """A volatile span cut from the prefix and re-emitted after it."""

    detector: str
    source: str
    """Where it was found, e.g. ``system[0]`` or block name."""
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class PrefixChange:
    """Where the static part first differs from the previous request for the same key."""

    block: str
    """Static block name, ``tools``, or ``system[i]`` (never text)."""
    offset: int
    """First differing character offset within that block."""


Expectation = tuple[list["Breakpoint"], int, "Diagnostics | None"]
"""A plan's breakpoints, expected cached tokens and diagnostics (``Plan.settle``)."""


@dataclass(slots=True)
class Diagnostics:
    """What ``Planner.record_outcome`` needs to explain a miss; internal to the planner.

    Made when the plan settles (``Plan.settle``): for the proxy, when the call is
    recorded, off the request path."""

    provider: Provider
    planned_at: float
    """``PlanRequest.now`` of the plan."""
    min_cacheable_tokens: int
    static_fp: str | None = None
    """Identity of the static prefix (tools + static system), for TTL bookkeeping."""
    static_ttl_seconds: float = 300.0
    static_expected_tokens: int = 0
    """Part of ``expected_cached_tokens`` served by the static prefix alone."""
    history_read_fp: str | None = None
    """Identity of the history prefix this request should read (the previous turn's)."""
    history_write_fp: str | None = None
    """Identity of the history prefix this request writes (its own history breakpoint)."""
    history_ttl_seconds: float = 300.0
    prefix_change: PrefixChange | None = None
    has_markers: bool = False
    """Anthropic: the sent request carries at least one cache marker."""
    guard: GuardNote | None = None
    """What the never-worse guard needs to judge the outcome."""
    template: str | None = None
    """The learned template the plan applied, if any."""


@dataclass(slots=True)
class Plan:
    """What the planner decided for one request."""

    body: dict[str, Any]
    """The body to send (the original object when nothing changed)."""
    changed: bool = False
    """``body`` differs from the original (always False in observe mode)."""
    observe_only: bool = False
    """Observe mode: ``body`` is the original; the rest says what enforce would do."""
    breakpoints: list[Breakpoint] = field(default_factory=list)
    relocations: list[Relocation] = field(default_factory=list)
    volatile_found: dict[str, int] = field(default_factory=dict)
    """Detector name -> spans found in the static part (report and relocate modes)."""
    static_hash: str | None = None
    static_tokens: int = 0
    expected_cached_tokens: int = 0
    """Tokens a warm cache should serve for this request under the plan."""
    model: str | None = None
    notes: list[str] = field(default_factory=list)
    """Human-readable decisions, for ``promptcache explain``; never contains prompt text."""
    key: str | None = None
    """Identity of the static prefix for diagnostics (policy name or a derived id)."""
    context_text: str | None = None
    """The delimited context emitted after the last breakpoint (relocated spans and
    fetched context), for ``promptcache explain``; never logged."""
    diagnostics: Diagnostics | None = None
    """Planner-internal bookkeeping for ``record_outcome``."""
    learned: Split | None = None
    """The learned template's division of the system text, when one applied (shape only:
    offsets into the system text, no text)."""
    pending: Callable[[], Expectation] | None = field(default=None, repr=False, compare=False)
    """Computes ``breakpoints``, ``expected_cached_tokens`` and ``diagnostics``; set by
    the planner, run once by ``settle`` (``None``: settled, or nothing to compute)."""

    def settle(self) -> Plan:
        """Fill in what the outcome needs, if it was left for later (idempotent).

        ``Planner.plan(settle=False)`` leaves it: the proxy sends the body first and
        settles the plan when it records the outcome, off the request path.
        """
        pending = self.pending
        if pending is not None:
            self.pending = None
            self.breakpoints, self.expected_cached_tokens, self.diagnostics = pending()
        return self


def describe_breakpoints(breakpoints: Sequence[Breakpoint]) -> str:
    """``tier@path(ttl)`` list for logs and the CLI."""
    return ", ".join(f"{b.tier}@{b.path}({b.ttl})" for b in breakpoints) or "none"
