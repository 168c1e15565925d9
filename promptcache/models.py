"""The model table shipped as data: minimum cacheable tokens and prices per model.

Providers publish a minimum cacheable prefix per model (below it nothing is cached and
no error is raised) and a price list; both change, so they live in
``data/models.yaml`` rather than in code, and a policy may override them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from promptcache.wire import Provider


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What caching needs to know about one model."""

    min_cacheable_tokens: int
    """Shortest prefix the provider caches, in tokens."""
    input_per_mtok: float
    """Base input price, USD per million tokens."""
    output_per_mtok: float
    """Output price, USD per million tokens."""
    write_5m_multiplier: float = 1.25
    """Anthropic 5-minute cache write price as a multiple of base input."""
    write_1h_multiplier: float = 2.0
    """Anthropic 1-hour cache write price as a multiple of base input."""
    read_multiplier: float = 0.1
    """Cache read price as a multiple of base input (OpenAI: 1 - cached discount)."""
    explicit_breakpoints: bool = False
    """OpenAI GPT-5.6 and later: ``prompt_cache_breakpoint`` / ``prompt_cache_options`` are
    accepted (older models refuse them as unknown fields). OpenAI writes then cost
    ``write_5m_multiplier`` (1.25x)."""
    mid_conversation_system: bool = False
    """Anthropic: ``role: "system"`` messages inside ``messages`` are accepted (Opus 4.8,
    the 5.x models); older models refuse them."""


@functools.cache
def _table() -> dict[str, Any]:
    text = resources.files("promptcache").joinpath("data/models.yaml").read_text("utf-8")
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def lookup(provider: Provider, model: str | None) -> ModelInfo:
    """The table entry whose ``prefix`` is the longest match for ``model``."""
    section = _table()[provider]
    best: dict[str, Any] = section["default"]
    best_len = -1
    for row in section["models"]:
        prefix = row["prefix"]
        if model and model.startswith(prefix) and len(prefix) > best_len:
            best, best_len = row, len(prefix)
    if provider == "anthropic":
        mult = section["multipliers"]
        return ModelInfo(
            min_cacheable_tokens=int(best["minCacheableTokens"]),
            input_per_mtok=float(best["input"]),
            output_per_mtok=float(best["output"]),
            write_5m_multiplier=float(mult["write5m"]),
            write_1h_multiplier=float(mult["write1h"]),
            read_multiplier=float(mult["read"]),
            mid_conversation_system=bool(best.get("midConversationSystem", False)),
        )
    return ModelInfo(
        min_cacheable_tokens=int(best["minCacheableTokens"]),
        input_per_mtok=float(best["input"]),
        output_per_mtok=float(best["output"]),
        # OpenAI reports one write count (``cache_write_tokens``), normalised into the 5m slot.
        write_5m_multiplier=float(best.get("cacheWrite", 1.0)),
        write_1h_multiplier=float(best.get("cacheWrite", 1.0)),
        read_multiplier=1.0 - float(best["cachedDiscount"]),
        explicit_breakpoints=bool(best.get("explicitBreakpoints", False)),
    )
