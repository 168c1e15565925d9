"""Pieces every provider's planner shares: inputs, context rendering, fingerprints.

The provider modules (``anthropic``, ``openai``) are pure functions of a request body
and an ``Env``; the engine builds the ``Env`` from the policy and its own state.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from promptcache.models import ModelInfo
from promptcache.policy.schema import PolicySpec
from sidecar.planner.types import ContextBlock, Ttl
from sidecar.planner.volatile import Detector

LOOKBACK_BLOCKS = 20
"""Anthropic checks a breakpoint, then walks back this many blocks for an earlier entry."""


class PlanError(ValueError):
    """A request the planner cannot plan; the message is ``field: reason`` on one line."""


@dataclass(slots=True)
class Env:
    """Everything a provider planner needs besides the body."""

    policy: PolicySpec | None
    policy_name: str | None
    context: Sequence[ContextBlock]
    info: ModelInfo
    min_tokens: int
    detector: Detector | None
    auto_ttl: Callable[[str], Ttl]
    """Resolve ``ttl: auto`` for the static prefix with this fingerprint (records a use)."""
    openai_compatible: bool = False

    @property
    def key(self) -> str:
        return self.policy_name or "none"


def render_context(items: Sequence[tuple[str, str]]) -> str:
    """The delimited block the model reads instead of the relocated or fetched text."""
    return "\n".join(f'<context name="{name}">\n{text}\n</context>' for name, text in items if text)


def context_items(relocated: Sequence[tuple[str, str]], env: Env) -> list[tuple[str, str]]:
    """Relocated system text first (it came first in the prompt), then fetched context."""
    return [*relocated, *((c.name, c.text) for c in env.context)]


def dumps(value: Any) -> str:
    """Compact JSON as it would be sent (key order kept: reordering breaks cache hits)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def tools_digest(tools: Sequence[Any]) -> tuple[str, str]:
    """Digest and JSON of the tool definitions (both '' when there are none)."""
    if not tools:
        return "", ""
    text = dumps(tools)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), text


def chain(*parts: str) -> str:
    """A short identity for a sequence of digests."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def history_fp(static_hash: str | None, messages: Sequence[Any], end: int) -> str:
    """Identity of the conversation prefix through ``messages[end]`` (in-process only).

    Hashing the whole history on every request would cost as much as the request; the
    static prefix, the position, the first message and the two messages at the end
    tell conversations apart well enough for miss diagnosis.
    """
    tail = (_message_hash(messages[end - 1]) if end > 0 else 0, _message_hash(messages[end]))
    return f"{static_hash}:{end}:{hash((_message_hash(messages[0]), *tail)):x}"


def _message_hash(message: Any) -> int:
    if isinstance(message, dict):
        content = message.get("content")
        if isinstance(content, str) and len(message) == 2:
            return hash((message.get("role"), content))
    return hash(dumps(message))


def role_of(message: Any) -> str | None:
    if isinstance(message, dict):
        role = message.get("role")
        if isinstance(role, str):
            return role
    return None


def newest_user(messages: Sequence[Any], before: int | None = None) -> int | None:
    """Index of the last message with role ``user`` (before ``before`` if given)."""
    end = len(messages) if before is None else before
    for i in range(end - 1, -1, -1):
        if role_of(messages[i]) == "user":
            return i
    return None


def floor_tokens(tokens: int, minimum: int, granularity: int) -> int:
    """Cached tokens a prefix of ``tokens`` yields: 0 below ``minimum``, then whole steps."""
    if tokens < minimum:
        return 0
    if granularity <= 1:
        return tokens
    return minimum + (tokens - minimum) // granularity * granularity
