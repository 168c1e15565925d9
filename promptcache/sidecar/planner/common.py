"""Pieces every provider's planner shares: inputs, context rendering, fingerprints.

The provider modules (``anthropic``, ``openai``) are pure functions of a request body
and an ``Env``; the engine builds the ``Env`` from the policy and its own state
(``builder`` holds the half of planning both share).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from promptcache.models import ModelInfo
from promptcache.policy.schema import PolicySpec
from promptcache.sidecar.learner import Split
from promptcache.sidecar.planner.guard import Guard, Source
from promptcache.sidecar.planner.memo import Memos, dumps, identity
from promptcache.sidecar.planner.types import ContextBlock, Ttl
from promptcache.sidecar.planner.volatile import Detector
from promptcache.wire import Provider

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
    memo: Memos
    """The planner's memo tables."""
    provider: Provider = "anthropic"
    """Who serves the request (``wire.provider_of`` of the route and the policy)."""
    learn: Callable[[str, str, int | None], Split | None] | None = None
    """The learner, given the system text, the tools digest and the user message text may
    be pinned into (``None``: none); ``None``: learning off."""
    learned: Split | None = None
    """Set by the builder when a learned template applies to this request."""
    learn_tools: Callable[[tuple[str, ...]], bool] | None = None
    """The learner, given the tool names in the order sent: whether to sort them."""
    guard: Guard | None = None
    base_key: str = "none"
    """Identity of the static prefix for diagnostics and the guard, before learning."""
    now: float = 0.0
    observe: bool = False
    """Observe mode: ask the guard without changing its account."""
    _plan_key: tuple[Split, str] | None = None

    @property
    def key(self) -> str:
        return self.policy_name or "none"

    @property
    def plan_key(self) -> str:
        """``base_key``, with the learned template's id when one applies."""
        learned = self.learned
        if learned is None:
            return self.base_key
        cached = self._plan_key
        if cached is not None and cached[0] is learned:
            return cached[1]
        # Per version: a relearned template starts a fresh account with the guard (its old
        # prefix's writes expire unread by TTL; they do not count against the new one).
        key = f"{self.base_key}|learned:{learned.template}.{learned.version}"
        self._plan_key = (learned, key)
        return key

    @property
    def source(self) -> Source:
        if self.learned is not None:
            return "learned"
        return "policy" if self.policy is not None else "default"

    def allow(self, tier: str, fp: str | None) -> bool:
        """Whether the never-worse guard lets the planner place a ``tier`` marker."""
        if self.guard is None:
            return True
        return self.guard.allow(
            self.plan_key,
            tier,
            fp,
            policy=self.policy_name,
            source=self.source,
            now=self.now,
            dry=self.observe,
        )


def render_context(items: Sequence[tuple[str, str]]) -> str:
    """The delimited block the model reads instead of the relocated or fetched text."""
    return "\n".join(f'<context name="{name}">\n{text}\n</context>' for name, text in items if text)


def context_items(relocated: Sequence[tuple[str, str]], env: Env) -> list[tuple[str, str]]:
    """Relocated system text first (it came first in the prompt), then fetched context."""
    return [*relocated, *((c.name, c.text) for c in env.context)]


def history_fp(
    static_hash: str | None, messages: Sequence[Any], end: int, *, kept: Sequence[str] = ()
) -> str:
    """Identity of the conversation prefix through ``messages[end]`` (in-process only).

    Hashing the whole history on every request would cost as much as the request; the
    static prefix, the app's system text kept after it (``kept``), the position, the
    first message and the two messages at the end tell conversations apart well enough
    for miss diagnosis.
    """
    tail = (_message_hash(messages[end - 1]) if end > 0 else 0, _message_hash(messages[end]))
    ident = hash((hash(tuple(kept)), _message_hash(messages[0]), *tail))
    return f"{static_hash}:{end}:{ident:x}"


def _message_hash(message: Any) -> int:
    if isinstance(message, dict):
        content = message.get("content")
        if isinstance(content, str) and len(message) == 2:
            return hash((message.get("role"), content))
    key = identity(message)  # in-process identity only: ~20x quicker than ``dumps``
    return hash(key if key is not None else dumps(message))


def floor_tokens(tokens: int, minimum: int, granularity: int) -> int:
    """Cached tokens a prefix of ``tokens`` yields: 0 below ``minimum``, then whole steps."""
    if tokens < minimum:
        return 0
    if granularity <= 1:
        return tokens
    return minimum + (tokens - minimum) // granularity * granularity
