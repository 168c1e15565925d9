"""Token usage as the providers report it, normalised to one shape.

Anthropic reports ``input_tokens`` (after the last breakpoint) beside
``cache_read_input_tokens`` and ``cache_creation_input_tokens``; OpenAI reports
``prompt_tokens`` of which ``prompt_tokens_details.cached_tokens`` were read from cache
(Responses: ``input_tokens`` / ``input_tokens_details``). Metrics, cost and the miss
diagnosis all need the same three kinds: uncached, cache read, cache write.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    """Input tokens split by how they were billed, plus output tokens."""

    uncached: int = 0
    """Input tokens processed at the base price."""
    cache_read: int = 0
    """Input tokens served from the cache."""
    cache_write_5m: int = 0
    """Input tokens written to a 5-minute cache entry."""
    cache_write_1h: int = 0
    """Input tokens written to a 1-hour cache entry."""
    output: int = 0
    """Output tokens."""

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def total_input(self) -> int:
        return self.uncached + self.cache_read + self.cache_write

    @property
    def hit_ratio(self) -> float:
        """Share of input tokens read from cache (0 when there was no input)."""
        total = self.total_input
        return self.cache_read / total if total else 0.0


def total(usages: Iterable[Usage]) -> Usage:
    """The kind-by-kind sum of ``usages`` (all zero when there are none)."""
    items = list(usages)
    return Usage(
        uncached=sum(u.uncached for u in items),
        cache_read=sum(u.cache_read for u in items),
        cache_write_5m=sum(u.cache_write_5m for u in items),
        cache_write_1h=sum(u.cache_write_1h for u in items),
        output=sum(u.output for u in items),
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def from_anthropic(usage: dict[str, Any]) -> Usage:
    """Normalise an Anthropic ``usage`` object (message or ``message_delta`` event)."""
    write_total = _int(usage.get("cache_creation_input_tokens"))
    split = usage.get("cache_creation")
    w5 = w1 = 0
    if isinstance(split, dict):
        w5 = _int(split.get("ephemeral_5m_input_tokens"))
        w1 = _int(split.get("ephemeral_1h_input_tokens"))
    if w5 + w1 != write_total:
        w5, w1 = write_total, 0
    return Usage(
        uncached=_int(usage.get("input_tokens")),
        cache_read=_int(usage.get("cache_read_input_tokens")),
        cache_write_5m=w5,
        cache_write_1h=w1,
        output=_int(usage.get("output_tokens")),
    )


def from_openai(usage: dict[str, Any]) -> Usage:
    """Normalise an OpenAI Chat Completions or Responses ``usage`` object."""
    if "prompt_tokens" in usage:
        prompt = _int(usage.get("prompt_tokens"))
        details = usage.get("prompt_tokens_details")
        output = _int(usage.get("completion_tokens"))
    else:
        prompt = _int(usage.get("input_tokens"))
        details = usage.get("input_tokens_details")
        output = _int(usage.get("output_tokens"))
    cached = write = 0
    if isinstance(details, dict):
        cached = min(_int(details.get("cached_tokens")), prompt)
        write = min(_int(details.get("cache_write_tokens")), prompt - cached)
    return Usage(
        uncached=prompt - cached - write,
        cache_read=cached,
        cache_write_5m=write,
        output=output,
    )
