"""The planner's contract with the proxy: what goes in, what comes out.

The proxy parses a request, hands a ``PlanRequest`` to ``Planner.plan`` and sends
``Plan.body``; once the response's usage is known it calls ``Planner.record_outcome``,
which returns why the cache missed, if it did. Any exception from ``plan`` makes the
proxy forward the original bytes (fail open).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from promptcache.models import Provider
from promptcache.policy.schema import PolicySpec

Route = Literal["messages", "chat", "responses"]
"""Anthropic ``/v1/messages``; OpenAI ``/v1/chat/completions``; OpenAI ``/v1/responses``."""

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
        if self.route == "messages":
            return "anthropic"
        if self.policy is not None and self.policy.provider == "openai-compatible":
            return "openai-compatible"
        return "openai"


@dataclass(frozen=True, slots=True)
class Breakpoint:
    """One cache marker in the planned request."""

    tier: Tier
    ttl: Literal["5m", "1h"]
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


@dataclass(slots=True)
class Plan:
    """What the planner decided for one request."""

    body: dict[str, Any]
    """The body to send (the original object when nothing changed)."""
    changed: bool = False
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


def describe_breakpoints(breakpoints: Sequence[Breakpoint]) -> str:
    """``tier@path(ttl)`` list for logs and the CLI."""
    return ", ".join(f"{b.tier}@{b.path}({b.ttl})" for b in breakpoints) or "none"
