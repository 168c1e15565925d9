"""Anthropic prompt caching, as documented: validation, prefix hashing and the lookup.

A Messages request is a sequence of blocks in the order tools -> system -> messages.
Each block is hashed once, chained onto the hash of everything before it (the
``cache_control`` marker itself left out), so the digest at position *i* names the exact
prefix up to block *i*. Entries are written only at breakpoints (explicit markers, or
the last cacheable block for a top-level ``cache_control``); a lookup checks each
breakpoint and then walks back up to 20 blocks for an earlier entry. The longest hit is
read; everything from there to the last breakpoint is written, each stretch at the TTL
of the breakpoint that ends it. Prefixes shorter than the model's minimum are neither
read nor written, and no error is raised. See ``docs/simulator.md``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from promptcache.models import lookup
from promptcache.tokens import estimate_json, estimate_text

from .config import CacheConfig
from .errors import invalid_request
from .outcome import CacheOutcome
from .store import CacheStore

Ttl = Literal["5m", "1h"]
MAX_BREAKPOINTS = 4
TTL_ORDER_HINT = (
    "Note that blocks are processed in the following order: `tools`, `system`, `messages`."
)
_UNCACHEABLE_TYPES = frozenset({"thinking", "redacted_thinking"})


@dataclass(frozen=True, slots=True)
class Breakpoint:
    position: int
    """Index of the marked block in the tools -> system -> messages sequence."""
    ttl: Ttl


@dataclass(frozen=True, slots=True)
class AnthropicPrompt:
    """A validated Messages request, reduced to what caching and the response need."""

    model: str
    max_tokens: int
    stream: bool
    hashes: tuple[bytes, ...]
    """Digest of the prefix ending at each block."""
    cum_tokens: tuple[int, ...]
    """Input tokens of the prefix ending at each block."""
    breakpoints: tuple[Breakpoint, ...]
    total_tokens: int

    @property
    def digest(self) -> bytes:
        """Names the whole prompt (seeds the answer text)."""
        return self.hashes[-1] if self.hashes else b""


@dataclass(slots=True)
class _Marker:
    position: int
    ttl: Ttl
    path: str
    """Where the marker sits (``system.0``); empty for the top-level marker."""


class _Builder:
    """Walks the blocks once: hashes, token counts, markers and eligible positions."""

    def __init__(self, model: str) -> None:
        self.digest = hashlib.sha256(b"anthropic\x00" + model.encode()).digest()
        self.hashes: list[bytes] = []
        self.cum: list[int] = []
        self.total = 0
        self.markers: list[_Marker] = []
        self.explicit: dict[int, Ttl] = {}
        self.last_eligible = -1

    def mix(self, label: bytes, value: Any) -> None:
        """Fold a request setting into the chain without adding a block."""
        if value is not None:
            raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
            self.digest = hashlib.sha256(self.digest + label + raw).digest()

    def add(self, block: Any, *, frame: str, path: str, markable: bool) -> None:
        if not isinstance(block, dict):
            raise invalid_request(f"{path}: Input should be a valid dictionary or object")
        control = block.get("cache_control")
        content = (
            block if control is None else {k: v for k, v in block.items() if k != "cache_control"}
        )
        kind = content.get("type")
        text = content.get("text") if kind == "text" else None
        if kind == "text" and (not isinstance(text, str) or not text):
            if control is not None:
                raise invalid_request(
                    f"{path}.text: cache_control cannot be set for empty text blocks"
                )
            raise invalid_request(f"{path}.text: text content blocks must be non-empty")
        raw = json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()
        self.digest = hashlib.sha256(self.digest + frame.encode() + raw).digest()
        position = len(self.hashes)
        self.hashes.append(self.digest)
        self.total += estimate_text(text) if isinstance(text, str) else estimate_json(content)
        self.cum.append(self.total)
        eligible = markable and kind not in _UNCACHEABLE_TYPES
        if eligible:
            self.last_eligible = position
        if control is not None:
            if not eligible:
                raise invalid_request(f"{path}.cache_control: Extra inputs are not permitted")
            ttl = _ttl(control, f"{path}.cache_control")
            self.markers.append(_Marker(position, ttl, path))
            self.explicit[position] = ttl

    def add_text(self, text: str, *, frame: str, path: str, markable: bool) -> None:
        # A plain string is shorthand for one text block and hashes the same.
        self.add({"type": "text", "text": text}, frame=frame, path=path, markable=markable)


def _ttl(control: Any, path: str) -> Ttl:
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise invalid_request(f"{path}.type: Input should be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in ("5m", "1h"):
        raise invalid_request(f"{path}.ephemeral.ttl: Input should be '5m' or '1h'")
    return "1h" if ttl == "1h" else "5m"


def parse_request(body: Any) -> AnthropicPrompt:
    """Validate a Messages body the way the API does and build its prefix chain."""
    if not isinstance(body, dict):
        raise invalid_request("Input should be a valid dictionary or object")
    model = body.get("model")
    if model is None:
        raise invalid_request("model: Field required")
    if not isinstance(model, str) or not model:
        raise invalid_request("model: Input should be a valid string")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise invalid_request("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        raise invalid_request(
            "max_tokens: Input should be a valid integer greater than or equal to 0"
        )
    messages = body.get("messages")
    if messages is None:
        raise invalid_request("messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("messages: at least one message is required")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid_request("stream: Input should be a valid boolean")

    b = _Builder(model)
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise invalid_request("tools: Input should be a valid list")
    for i, tool in enumerate(tools):
        b.add(tool, frame="T", path=f"tools.{i}", markable=True)
    system = body.get("system")
    if isinstance(system, str):
        if system:
            b.add_text(system, frame="S", path="system", markable=False)
    elif isinstance(system, list):
        for i, block in enumerate(system):
            b.add(block, frame="S", path=f"system.{i}", markable=True)
    elif system is not None:
        raise invalid_request("system: Input should be a valid string or list")
    # Changing these invalidates the messages tier but not tools or system.
    b.mix(b"tool_choice", body.get("tool_choice"))
    b.mix(b"thinking", body.get("thinking"))
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise invalid_request(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        role = message["role"]
        content = message.get("content")
        if isinstance(content, str):
            b.add_text(content, frame=f"M{role}", path=f"messages.{i}.content", markable=True)
        elif isinstance(content, list) and content:
            for j, block in enumerate(content):
                frame = f"M{role}" if j == 0 else "C"
                b.add(block, frame=frame, path=f"messages.{i}.content.{j}", markable=True)
        else:
            raise invalid_request(f"messages.{i}.content: Field required")

    breakpoints = _breakpoints(b, body.get("cache_control"))
    return AnthropicPrompt(
        model=model,
        max_tokens=max_tokens,
        stream=stream,
        hashes=tuple(b.hashes),
        cum_tokens=tuple(b.cum),
        breakpoints=breakpoints,
        total_tokens=b.total,
    )


def _breakpoints(b: _Builder, top_level: Any) -> tuple[Breakpoint, ...]:
    markers = list(b.markers)
    if top_level is not None:
        ttl = _ttl(top_level, "cache_control")
        if b.last_eligible >= 0:
            existing = b.explicit.get(b.last_eligible)
            if existing is not None and existing != ttl:
                raise invalid_request(
                    f"Top-level cache_control has ttl='{ttl}' but the target block already "
                    f"has cache_control with ttl='{existing}'"
                )
            markers.append(_Marker(b.last_eligible, ttl, ""))
    if len(markers) > MAX_BREAKPOINTS:
        raise invalid_request(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(markers)}."
        )
    seen_5m = False
    for marker in sorted(markers, key=lambda m: m.position):
        if marker.ttl == "1h" and seen_5m:
            raise invalid_request(
                f"{marker.path}{'.' if marker.path else ''}cache_control.ttl: a ttl='1h' "
                "cache_control block must not "
                f"come after a ttl='5m' cache_control block. {TTL_ORDER_HINT}"
            )
        seen_5m = seen_5m or marker.ttl == "5m"
    unique = {m.position: m.ttl for m in markers}
    return tuple(Breakpoint(p, t) for p, t in sorted(unique.items()))


class AnthropicCache:
    """The organisation-wide Anthropic cache: one store, lookups and writes."""

    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.store = CacheStore(max_entries=config.max_entries)

    def _ttl_s(self, ttl: Ttl) -> float:
        return self.config.anthropic_ttl_1h_s if ttl == "1h" else self.config.anthropic_ttl_5m_s

    def resolve(self, prompt: AnthropicPrompt, *, now: float) -> CacheOutcome:
        """Reads and writes for ``prompt`` at prefill start; writes wait for ``commit``."""
        minimum = lookup("anthropic", prompt.model).min_cacheable_tokens
        cum, hashes = prompt.cum_tokens, prompt.hashes
        effective = [bp for bp in prompt.breakpoints if cum[bp.position] >= minimum]
        if not effective:
            return CacheOutcome(total_input=prompt.total_tokens)
        read_at = -1
        lookback = self.config.anthropic_lookback_blocks
        for bp in effective:
            for pos in range(bp.position, max(bp.position - lookback, read_at + 1) - 1, -1):
                if cum[pos] >= minimum and self.store.get(hashes[pos], now=now) is not None:
                    read_at = pos
                    break
        if read_at >= 0:
            # A hit refreshes the entry it read and this request's entries inside it.
            for bp in effective:
                if bp.position < read_at:
                    self.store.touch(hashes[bp.position], now=now, ttl_s=self._ttl_s(bp.ttl))
            marked = {bp.position: bp.ttl for bp in effective}.get(read_at)
            ttl_s = self._ttl_s(marked) if marked is not None else None
            self.store.touch(hashes[read_at], now=now, ttl_s=ttl_s)
        read = cum[read_at] if read_at >= 0 else 0
        writes: list[tuple[int, Ttl]] = [
            (bp.position, bp.ttl) for bp in effective if bp.position > read_at
        ]
        w5 = w1 = 0
        previous = read
        for position, ttl in writes:
            stretch = cum[position] - previous
            previous = cum[position]
            if ttl == "1h":
                w1 += stretch
            else:
                w5 += stretch

        def commit(at: float) -> None:
            for position, ttl in writes:
                self.store.put(
                    hashes[position], tokens=cum[position], ttl_s=self._ttl_s(ttl), now=at
                )

        return CacheOutcome(
            total_input=prompt.total_tokens,
            cache_read=read,
            cache_write_5m=w5,
            cache_write_1h=w1,
            eligible=True,
            commit=commit,
        )
