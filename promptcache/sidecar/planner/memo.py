"""The planner's memo tables, owned by one ``Planner`` (never module globals).

Planning repeats the same work on every request of an app: the same tool list is
serialised and hashed, the same static texts are hashed and found at the same place,
the same policy's detectors and ``keepInPlace`` regexes are compiled. Each table here
saves one of those, is bounded, and belongs to the ``Planner`` that fills it, so two
planners (tests, the CLI's ``explain``) never share or evict each other's entries.

Every memo returns what a recomputation would: keys are the exact inputs (or an
identity that implies them), never an approximation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from promptcache.policy.schema import VolatileSpec
from promptcache.sidecar.planner.lru import Lru, TextMemo
from promptcache.sidecar.planner.volatile import Detector
from promptcache.tokens import estimate_json

TOOLS_MEMO_ENTRIES = 32
TOOLS_MEMO_MAX_BYTES = 256 * 1024
"""Tool lists whose JSON is longer than this are not memoised (memory bound: 32 x this)."""
SMALL_TABLE = 256
"""Entries of the chain, sha256 and position tables (cleared or evicted past it)."""
DETECTORS = 64
"""Compiled detectors and keepInPlace regexes kept (one per policy version)."""


def dumps(value: Any) -> str:
    """Compact JSON as it would be sent (key order kept: reordering breaks cache hits)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


_STRICT = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
"""Refuse what ``dumps`` would write differently (it writes ``str(value)`` for them)."""


def identity(value: Any) -> bytes | None:
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


@dataclass(frozen=True, slots=True)
class ToolsInfo:
    """What planning needs of the tool definitions; the same on every request of an app."""

    digest: str
    """sha256 of ``text`` ('' when there are no tools): part of the static prefix hash."""
    text: str
    """The tools as compact JSON ('' when there are none), for prefix-change offsets."""
    tokens: tuple[int, ...]
    """``estimate_json`` of each tool definition."""
    names: tuple[str, ...] = ()
    """Each tool's name (``tool_name``), in the order sent."""


NO_TOOLS = ToolsInfo("", "", ())


def tool_name(tool: Any) -> str:
    """A tool's name (Anthropic and Responses: ``name``; Chat: ``function.name``)."""
    if not isinstance(tool, dict):
        return ""
    name = tool.get("name")
    if not isinstance(name, str):
        fn = tool.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
    return name if isinstance(name, str) else ""


class Memos:
    """One planner's memo tables."""

    def __init__(self) -> None:
        self._tools: Lru[bytes, ToolsInfo] = Lru(TOOLS_MEMO_ENTRIES)
        self._chains: dict[tuple[str, ...], str] = {}
        self._sha: TextMemo[str] = TextMemo(SMALL_TABLE)
        self._found_at: dict[int, tuple[int, int]] = {}
        self._detectors: dict[int, Detector] = {}
        self._keep: dict[tuple[str, ...], re.Pattern[str] | None] = {}

    def tools_info(self, tools: Sequence[Any]) -> ToolsInfo:
        """Digest, JSON, token counts and names of the tool definitions, memoised by their bytes.

        An app sends the same tools on every call; serialising them with orjson (~1 us
        for the bench's four tools) identifies them, where the JSON text, its sha256 and
        the token walk cost ~30 us. Equal identifying bytes mean equal values, so a hit
        returns what a recomputation would.
        """
        if not tools:
            return NO_TOOLS
        key = identity(tools)
        if key is not None:
            hit = self._tools.get(key)
            if hit is not None:
                return hit
        text = dumps(tools)
        info = ToolsInfo(
            hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
            text,
            tuple(estimate_json(t) for t in tools),
            tuple(tool_name(t) for t in tools),
        )
        if key is not None and len(key) <= TOOLS_MEMO_MAX_BYTES:
            self._tools.put(bytes(memoryview(key)), info)  # orjson's bytes are oversized
        return info

    def chain(self, *parts: str) -> str:
        """A short identity for a sequence of digests (memoised: the same ones recur)."""
        hit = self._chains.get(parts)
        if hit is None:
            hit = hashlib.sha256("\n".join(parts).encode()).hexdigest()
            if len(self._chains) >= SMALL_TABLE:
                self._chains.clear()
            self._chains[parts] = hit
        return hit

    def sha256(self, text: str) -> str:
        """Hex sha256 of ``text`` (static texts repeat on every request)."""
        hit = self._sha.get(text)
        if hit is None:
            hit = sha256_text(text)
            self._sha.put(text, hit)
        return hit

    def found_at(self, text: str) -> tuple[int, int] | None:
        """Where the static ``text`` object was found last time (source, offset): apps
        send it at the same place every time, so one ``startswith`` usually replaces a
        search. Keyed by the object's id, as the policy holds one object per block; a
        stale hint is checked before use, so it costs a search, never a wrong answer."""
        return self._found_at.get(id(text))

    def remember_found(self, text: str, at: tuple[int, int]) -> None:
        if len(self._found_at) > SMALL_TABLE:
            self._found_at.clear()
        self._found_at[id(text)] = at

    def detector(self, spec: VolatileSpec) -> Detector:
        """The detector for ``spec``, compiled once per spec object."""
        det = self._detectors.get(id(spec))
        if det is None or det.spec is not spec:
            if len(self._detectors) >= DETECTORS:
                self._detectors.clear()
            det = Detector(spec)
            self._detectors[id(spec)] = det
        return det

    def keep_regex(self, patterns: tuple[str, ...]) -> re.Pattern[str] | None:
        """One alternation of a policy's ``keepInPlace`` regexes (compiled once)."""
        if not patterns:
            return None
        if patterns not in self._keep:
            if len(self._keep) >= DETECTORS:
                self._keep.clear()
            self._keep[patterns] = re.compile("|".join(f"(?:{p})" for p in patterns))
        return self._keep[patterns]


def sha256_text(text: str) -> str:
    """Hex sha256 of ``text`` (unmemoised; ``Memos.sha256`` for repeated texts)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
