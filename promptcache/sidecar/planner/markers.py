"""Anthropic cache markers: counting slots and keeping 1h entries before 5m ones.

At most four ``cache_control`` markers per request, the client's (and a top-level
automatic one) included; every 1h marker must come before every 5m marker in prefix
order (tools -> system -> messages). Client markers are never removed or moved: when one
of ours would break a rule, we add fewer markers instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from promptcache.sidecar.planner.types import Breakpoint, Tier, Ttl

MAX_MARKERS = 4
Pos = tuple[int, int, int]
"""(tier: 0 tools, 1 system, 2 messages, 3 automatic; item index; block index)."""
AUTOMATIC_POS: Pos = (3, 0, 0)


class Marker(NamedTuple):
    """A cache marker in the planned request (a tuple: several are made per request)."""

    pos: Pos
    ttl: Ttl
    tier: Tier
    path: str
    prefix_tokens: int
    placed_by: Literal["client", "planner"]

    def breakpoint(self) -> Breakpoint:
        return Breakpoint(self.tier, self.ttl, self.prefix_tokens, self.path, self.placed_by)


def ttl_of(cache_control: Any) -> Ttl:
    """The TTL of a ``cache_control`` object (5m unless it says 1h)."""
    if isinstance(cache_control, dict) and cache_control.get("ttl") == "1h":
        return "1h"
    return "5m"


def marker_json(ttl: Ttl) -> dict[str, str]:
    """The marker we add: the default 5m needs no ``ttl`` field."""
    return {"type": "ephemeral", "ttl": "1h"} if ttl == "1h" else {"type": "ephemeral"}


def ttl_fits(markers: Sequence[Marker], pos: Pos, ttl: Ttl) -> bool:
    """Whether a ``ttl`` marker at ``pos`` keeps every 1h marker before every 5m one."""
    for m in markers:
        if m.pos < pos and m.ttl == "5m" and ttl == "1h":
            return False
        if m.pos > pos and m.ttl == "1h" and ttl == "5m":
            return False
    return True


def place(
    existing: Sequence[Marker],
    candidates: Sequence[Marker],
    *,
    min_tokens: int,
    notes: list[str],
) -> list[Marker]:
    """Our markers for ``candidates`` (highest priority first) within the rules.

    A candidate is skipped when its position is already marked, its prefix is below
    the model's minimum (the slot would be wasted: nothing gets cached), no slot is
    left, or its TTL cannot fit the order. A 1h candidate falls back to 5m; a 5m one
    that a client 1h marker follows (a top-level automatic ``ttl: 1h`` always comes
    last) becomes 1h, so the client's long entry gains a stable prefix to read instead
    of leaving every call a full write.
    """
    placed: list[Marker] = []
    for c in candidates:
        taken = [*existing, *placed]
        if any(m.pos == c.pos for m in taken):
            notes.append(f"{c.tier}: {c.path} already carries a marker")
            continue
        if c.prefix_tokens < min_tokens:
            notes.append(
                f"{c.tier}: no breakpoint, prefix ~{c.prefix_tokens} tokens < minimum {min_tokens}"
            )
            continue
        if len(taken) >= MAX_MARKERS:
            notes.append(f"{c.tier}: no breakpoint, all {MAX_MARKERS} slots in use")
            continue
        ttls: tuple[Ttl, ...] = ("1h", "5m") if c.ttl == "1h" else ("5m", "1h")
        for ttl in ttls:
            if ttl_fits(taken, c.pos, ttl):
                if ttl != c.ttl:
                    why = "follow a 5m marker" if c.ttl == "1h" else "precede a client 1h marker"
                    notes.append(f"{c.tier}: {c.ttl} would {why}; using {ttl}")
                placed.append(Marker(c.pos, ttl, c.tier, c.path, c.prefix_tokens, "planner"))
                break
        else:
            notes.append(f"{c.tier}: no breakpoint, its TTL fits no order with the client's")
    return placed
