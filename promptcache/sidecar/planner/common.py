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

import orjson

from promptcache.models import ModelInfo
from promptcache.policy.schema import PolicySpec
from promptcache.sidecar.planner.lru import Lru
from promptcache.sidecar.planner.types import ContextBlock, Ttl
from promptcache.sidecar.planner.volatile import Detector
from promptcache.tokens import estimate_json

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


@dataclass(frozen=True, slots=True)
class ToolsInfo:
    """What planning needs of the tool definitions; the same on every request of an app."""

    digest: str
    """sha256 of ``text`` ('' when there are no tools): part of the static prefix hash."""
    text: str
    """The tools as compact JSON ('' when there are none), for prefix-change offsets."""
    tokens: tuple[int, ...]
    """``estimate_json`` of each tool definition."""


_NO_TOOLS = ToolsInfo("", "", ())
_TOOLS_MEMO: Lru[bytes, ToolsInfo] = Lru(32)
TOOLS_MEMO_MAX_BYTES = 256 * 1024
"""Tool lists whose JSON is longer than this are not memoised (memory bound: 32 x this)."""


def tools_info(tools: Sequence[Any]) -> ToolsInfo:
    """Digest, JSON and token counts of the tool definitions, memoised by their bytes.

    An app sends the same tools on every call; serialising them with orjson (~1 us for
    the bench's four tools) identifies them, where the JSON text, its sha256 and the
    token walk cost ~30 us. Equal identifying bytes mean equal values, so a hit returns
    what a recomputation would.
    """
    if not tools:
        return _NO_TOOLS
    key = _identity(tools)
    if key is not None:
        hit = _TOOLS_MEMO.get(key)
        if hit is not None:
            return hit
    text = dumps(tools)
    info = ToolsInfo(
        hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
        text,
        tuple(estimate_json(t) for t in tools),
    )
    if key is not None and len(key) <= TOOLS_MEMO_MAX_BYTES:
        _TOOLS_MEMO.put(bytes(memoryview(key)), info)  # orjson's bytes are oversized
    return info


_CHAINS: dict[tuple[str, ...], str] = {}


def chain(*parts: str) -> str:
    """A short identity for a sequence of digests (memoised: the same ones recur)."""
    hit = _CHAINS.get(parts)
    if hit is None:
        hit = hashlib.sha256("\n".join(parts).encode()).hexdigest()
        if len(_CHAINS) >= 256:
            _CHAINS.clear()
        _CHAINS[parts] = hit
    return hit


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
    key = _identity(message)  # in-process identity only: ~20x quicker than ``dumps``
    return hash(key if key is not None else dumps(message))


_STRICT = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
"""Refuse what ``dumps`` would write differently (it writes ``str(value)`` for them)."""


def _identity(value: Any) -> bytes | None:
    """orjson's bytes for ``value`` when they identify it, else ``None``.

    orjson writes NaN and infinities as ``null`` (the standard library's fallback parser
    accepts them in a body), so bytes holding a ``null`` may stand for another value;
    it refuses integers beyond 64 bits and lone surrogates.
    """
    try:
        data = orjson.dumps(value, option=_STRICT)
    except TypeError:  # orjson.JSONEncodeError is one
        return None
    return None if b"null" in data else data


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
