"""Why the cache missed: comparing what came back with what the plan expected.

Reasons, checked in this order once fewer cached tokens came back than expected:

- ``below_minimum``: the provider cached nothing at all (Anthropic: no read and no
  write although markers were sent; OpenAI: the prompt is shorter than the minimum).
  Our token estimate cleared the minimum, the provider's tokenizer did not.
- ``prefix_changed``: the static part differs from the one last sent under this key
  (the planner logs which block and the first differing offset, never the text).
- ``first_write``: this sidecar has not seen the prefix served before, or the request
  that wrote it was still in flight (simultaneous first requests all miss).
- ``ttl_expired``: the last use of the prefix is older than its TTL.
- ``unknown``: none of the above (another replica's traffic, provider eviction, ...).

The static prefix is judged first; when it was read but the conversation history was
not, the same questions are asked about the history prefix.
"""

from __future__ import annotations

from promptcache.sidecar.planner.lru import Lru
from promptcache.sidecar.planner.types import Diagnostics, MissReason
from promptcache.usage import Usage

MISS_TOLERANCE = 0.75
"""A read of at least this share of the expected tokens is a hit: real tokenizers differ
from the ~4 characters/token estimate the plan uses."""


def _age(served: Lru[str, float], fp: str | None, d: Diagnostics, ttl: float) -> MissReason:
    last = served.get(fp) if fp is not None else None
    if last is None or last > d.planned_at:
        return "first_write"
    if d.planned_at - last > ttl:
        return "ttl_expired"
    return "unknown"


def diagnose(
    d: Diagnostics, expected: int, usage: Usage, served: Lru[str, float]
) -> MissReason | None:
    """The miss reason for one outcome, or ``None`` when the cache served what we expected."""
    if expected <= 0 or usage.cache_read >= expected * MISS_TOLERANCE:
        return None
    if d.provider == "anthropic":
        if d.has_markers and usage.cache_read == 0 and usage.cache_write == 0:
            return "below_minimum"
    elif usage.cache_read == 0 and usage.total_input < d.min_cacheable_tokens:
        return "below_minimum"
    static_missed = usage.cache_read < d.static_expected_tokens * MISS_TOLERANCE
    if static_missed or d.history_read_fp is None:
        if d.prefix_change is not None:
            return "prefix_changed"
        return _age(served, d.static_fp, d, d.static_ttl_seconds)
    return _age(served, d.history_read_fp, d, d.history_ttl_seconds)


def remember(d: Diagnostics, usage: Usage, served: Lru[str, float], now: float) -> None:
    """Record that the prefixes this request used are now in the provider's cache."""
    if d.provider == "anthropic" and usage.cache_read == 0 and usage.cache_write == 0:
        return
    for fp in (d.static_fp, d.history_write_fp, d.history_read_fp):
        if fp is not None:
            served.put(fp, now)
