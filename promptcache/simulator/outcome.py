"""What a cache lookup decided for one request, in the same terms for both dialects.

The dialect modules decide reads and writes; the engine turns the outcome into prefill
time, usage fields, metrics and stats. Writes are applied by ``commit`` only when the
request's prefill is over (the response has begun), which is what makes simultaneous
first requests all miss, as they do at the providers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


def _nothing(now: float) -> None:
    del now


@dataclass(frozen=True, slots=True)
class CacheOutcome:
    """Input tokens of one request split by how the cache served them."""

    total_input: int
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    eligible: bool = False
    """True when the request could have read from the cache (counts as a hit or a miss)."""
    commit: Callable[[float], None] = field(default=_nothing, compare=False, repr=False)
    """Stores this request's writes; called with the cache clock's time once prefill ends."""

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def uncached(self) -> int:
        return self.total_input - self.cache_read - self.cache_write

    @property
    def hit(self) -> bool:
        return self.cache_read > 0
