"""A deterministic token-count approximation shared by the planner and the simulator.

Real tokenizers differ per model and are not available offline; what caching needs is
a stable, monotonic estimate of prompt length so that minimum-length checks, expected
cached tokens and simulated usage agree with each other. We use the common rule of
thumb for English text with BPE tokenizers: about 4 characters per token
(``CHARS_PER_TOKEN``), rounded up, never 0 for non-empty text.

The sidecar estimates every request it plans (tools, system, each message), so
``estimate_json`` walks a parsed body with an explicit stack and exact-type checks
rather than recursion: same numbers, several times faster on a 28 KB request.
"""

from __future__ import annotations

import math
from typing import Any

CHARS_PER_TOKEN = 4.0
"""Characters per token; OpenAI and Anthropic both document ~4 for English text."""

_SKIPPED_KEY = "cache_control"
"""Markers are framing, not prompt: their fields are not counted."""


def estimate_text(text: str) -> int:
    """Tokens in ``text`` by the ~4-characters rule (0 only for the empty string)."""
    if not text:
        return 0
    return math.ceil(len(text) / CHARS_PER_TOKEN)  # at least 1 for a non-empty text


def estimate_json(value: Any) -> int:
    """Tokens of any JSON-like value: strings by length, containers by their parts.

    Structural punctuation is ignored on purpose: providers bill the rendered prompt,
    whose framing differs per model; a text-proportional estimate is what stays stable.
    """
    kind = type(value)
    if kind is str:
        return estimate_text(value)
    if kind is not dict and kind is not list:
        return _estimate_any(value)
    total = 0
    ceil, per = math.ceil, CHARS_PER_TOKEN
    stack: list[Any] = [value]
    pop, push = stack.pop, stack.append
    while stack:
        container = pop()
        if type(container) is dict:
            items = (
                [v for k, v in container.items() if k != _SKIPPED_KEY]
                if _SKIPPED_KEY in container
                else container.values()
            )
        else:
            items = container
        for item in items:
            kind = type(item)
            if kind is str:
                if item:  # the ceiling of a positive length is at least 1
                    total += ceil(len(item) / per)
            elif kind is dict or kind is list:
                push(item)
            elif item is not None and kind is not bool:
                # numbers, and subclasses of the JSON types (not what a parser makes)
                total += _estimate_any(item)
    return total


def _estimate_any(value: Any) -> int:
    """``estimate_json`` by ``isinstance``: the rule itself, for values of any type."""
    if isinstance(value, str):
        return estimate_text(value)
    if isinstance(value, dict):
        return sum(_estimate_any(v) for k, v in value.items() if k != _SKIPPED_KEY)
    if isinstance(value, list):
        return sum(_estimate_any(v) for v in value)
    if value is None or isinstance(value, bool):
        return 0
    return estimate_text(str(value))
