"""Choosing a 5-minute or a 1-hour cache TTL from observed reuse (``ttl: auto``).

Prices, as multiples of the base input price (Anthropic; a policy's pricing override
applies): a 5m write costs ``W5 = 1.25``, a 1h write ``W1 = 2.0``, a read ``R = 0.1``.
An entry lives for its TTL after its last use, because every read refreshes it for
free. So a use that comes within the TTL of the previous use of the same prefix is a
read, and a use that comes later finds the entry gone and writes it again.

Given the observed gaps between consecutive uses of one static prefix, let ``p5`` be the
share of gaps longer than 300 s and ``p1`` the share longer than 3600 s. The expected
cost of one use, per token of the prefix, is::

    C(5m) = p5 * W5 + (1 - p5) * R  =  0.1 + 1.15 * p5
    C(1h) = p1 * W1 + (1 - p1) * R  =  0.1 + 1.90 * p1

and the cheaper one wins (5m on a tie: its first write costs less). So 1h pays off
exactly when ``1.90 * p1 < 1.15 * p5``. Examples:

- a use every 10 minutes: ``p5 = 1, p1 = 0``: C(5m) = 1.25, C(1h) = 0.10 -> 1h;
- a use every 2 minutes: ``p5 = p1 = 0``: both 0.10 -> 5m;
- half the gaps 1 minute, half 20 minutes: ``p5 = 0.5, p1 = 0``: 0.675 vs 0.10 -> 1h;
- a use every 2 hours: ``p5 = p1 = 1``: C(5m) = 1.25 < C(1h) = 2.00 -> 5m (caching
  such a prefix costs more than the uncached 1.0; 5m loses least).

With fewer than ``MIN_GAPS`` observations the choice is 5m. Gaps are what one sidecar
sees; replicas of the same app also refresh the shared entry, so reuse is, if anything,
underestimated, which errs towards the cheaper write.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from promptcache.models import ModelInfo
from promptcache.sidecar.planner.lru import Lru
from promptcache.sidecar.planner.types import Ttl

TTL_SECONDS: dict[Ttl, float] = {"5m": 300.0, "1h": 3600.0}
MIN_GAPS = 3
"""Observed gaps needed before ``auto`` may choose 1h."""
WINDOW = 64
"""Most recent gaps kept per prefix."""


@dataclass(frozen=True, slots=True)
class TtlChoice:
    """The chosen TTL and the arithmetic behind it."""

    ttl: Ttl
    cost_5m: float
    """Expected cost per use per prefix token with 5m, in base-input multiples."""
    cost_1h: float
    samples: int


def expected_cost(
    gaps: list[float] | tuple[float, ...], ttl_seconds: float, write: float, read: float
) -> float:
    """Expected cost of one use: a gap longer than the TTL re-writes, else it reads."""
    if not gaps:
        return write
    miss = sum(1 for g in gaps if g > ttl_seconds) / len(gaps)
    return miss * write + (1.0 - miss) * read


def choose_ttl(gaps: list[float] | tuple[float, ...], info: ModelInfo) -> TtlChoice:
    """5m or 1h, whichever costs less per use for these reuse gaps."""
    c5 = expected_cost(gaps, TTL_SECONDS["5m"], info.write_5m_multiplier, info.read_multiplier)
    c1 = expected_cost(gaps, TTL_SECONDS["1h"], info.write_1h_multiplier, info.read_multiplier)
    ttl: Ttl = "1h" if len(gaps) >= MIN_GAPS and c1 < c5 else "5m"
    return TtlChoice(ttl, c5, c1, len(gaps))


class ReuseTracker:
    """Per static prefix: when it was last used and the recent gaps between uses."""

    def __init__(self, capacity: int = 1024) -> None:
        self._last: Lru[str, float] = Lru(capacity)
        self._gaps: Lru[str, deque[float]] = Lru(capacity)

    def observe(self, key: str, now: float) -> tuple[float, ...]:
        """Record a use of ``key`` at ``now``; return the gaps seen so far, this one included."""
        last = self._last.get(key)
        self._last.put(key, now)
        gaps = self._gaps.get(key)
        if gaps is None:
            gaps = deque(maxlen=WINDOW)
            self._gaps.put(key, gaps)
        if last is not None:
            gaps.append(max(0.0, now - last))
        return tuple(gaps)
