"""A deterministic token-count approximation shared by the planner and the simulator.

Real tokenizers differ per model and are not available offline; what caching needs is
a stable, monotonic estimate of prompt length so that minimum-length checks, expected
cached tokens and simulated usage agree with each other. We use the common rule of
thumb for English text with BPE tokenizers: about 4 characters per token
(``CHARS_PER_TOKEN``), rounded up, never 0 for non-empty text.
"""

from __future__ import annotations

import math
from typing import Any

CHARS_PER_TOKEN = 4.0
"""Characters per token; OpenAI and Anthropic both document ~4 for English text."""


def estimate_text(text: str) -> int:
    """Tokens in ``text`` by the ~4-characters rule (0 only for the empty string)."""
    if not text:
        return 0
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def estimate_json(value: Any) -> int:
    """Tokens of any JSON-like value: strings by length, containers by their parts.

    Structural punctuation is ignored on purpose: providers bill the rendered prompt,
    whose framing differs per model; a text-proportional estimate is what stays stable.
    """
    if isinstance(value, str):
        return estimate_text(value)
    if isinstance(value, dict):
        return sum(estimate_json(v) for k, v in value.items() if k != "cache_control")
    if isinstance(value, list):
        return sum(estimate_json(v) for v in value)
    if value is None or isinstance(value, bool):
        return 0
    return estimate_text(str(value))
