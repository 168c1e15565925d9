"""Anthropic prompt caching, as documented: validation, prefix hashing and the lookup.

A Messages request is a sequence of blocks in the order tools -> system -> messages.
Each block is hashed once, chained onto the hash of everything before it (the
``cache_control`` marker itself left out), so the digest at position *i* names the exact
prefix up to block *i*. Entries are written only at breakpoints (explicit markers, or
the last cacheable block for a top-level ``cache_control``); a lookup checks each
breakpoint and then walks back up to 20 blocks for an earlier entry. The longest hit is
read; everything from there to the last breakpoint is written, each stretch at the TTL
of the breakpoint that ends it. Prefixes shorter than the model's minimum are neither
read nor written, and no error is raised. Every ``cache_control`` counts toward the four
allowed, including those nested in a ``tool_result``'s content. Validation follows the
``anthropic-version`` the request names (``2026-10-21`` refuses the sampling parameters,
document blocks in assistant turns and citations in user turns), and a request's
``Fingerprint`` (hashes and token counts, no text) feeds cache diagnostics. See
``docs/simulator.md``.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from promptcache.models import lookup
from promptcache.tokens import estimate_json, estimate_text

from .config import CacheConfig
from .errors import invalid_request
from .outcome import CacheOutcome
from .store import CacheStore

Ttl = Literal["5m", "1h"]
VERSION_2023 = "2023-06-01"
VERSION_2026 = "2026-10-21"
"""The API version the current SDKs send (Python SDK 2.x)."""
API_VERSIONS = frozenset({VERSION_2023, VERSION_2026})
_REMOVED_IN_2026 = ("temperature", "top_p", "top_k")
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
    fingerprint: Fingerprint | None = None
    """Set when the request carries a ``diagnostics`` object (the API stores one then)."""
    previous_message_id: str | None = None
    """``diagnostics.previous_message_id`` as sent."""

    @property
    def digest(self) -> bytes:
        """Names the whole prompt (seeds the answer text)."""
        return self.hashes[-1] if self.hashes else b""


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What cache diagnostics keeps of a request: hashes and token counts, never text."""

    model: str
    tools: bytes
    system: bytes
    settings: bytes
    """``tool_choice`` and ``thinking``: prompt-affecting parameters besides the prompt."""
    messages: tuple[bytes, ...]
    """Digest of the messages up to and including each one (markers left out)."""
    tools_tokens: int
    system_tokens: int
    message_tokens: tuple[int, ...]
    """Input tokens of the prompt up to the end of each message."""
    total_tokens: int


def _strip_markers(value: Any) -> Any:
    """``value`` without any ``cache_control`` (markers do not change the prompt)."""
    if isinstance(value, dict):
        return {k: _strip_markers(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_markers(v) for v in value]
    return value


def _section_digest(label: bytes, value: Any) -> bytes:
    raw = json.dumps(_strip_markers(value), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(label + b"\x00" + raw.encode()).digest()


def diagnose(previous: Fingerprint | None, current: Fingerprint) -> dict[str, Any] | None:
    """The ``cache_miss_reason`` of ``current`` against ``previous``; None: no divergence.

    Checked in prompt order (model, tools, system, other prompt settings, messages); the
    missed tokens are the previous request's tokens past the first divergence, which a
    request extending it would have read.
    """
    if previous is None:
        return {"type": "previous_message_not_found"}

    def missed(kind: str, common: int) -> dict[str, Any]:
        return {"type": kind, "cache_missed_input_tokens": max(0, previous.total_tokens - common)}

    if previous.model != current.model:
        return missed("model_changed", 0)
    if previous.tools != current.tools:
        return missed("tools_changed", 0)
    if previous.system != current.system:
        return missed("system_changed", previous.tools_tokens)
    if previous.settings != current.settings:
        return {"type": "unavailable"}
    same = 0
    for old, new in zip(previous.messages, current.messages, strict=False):
        if old != new:
            break
        same += 1
    if same == len(previous.messages):
        return None
    common = (
        previous.message_tokens[same - 1]
        if same
        else previous.tools_tokens + (previous.system_tokens)
    )
    return missed("messages_changed", common)


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
        nested: list[tuple[Any, str]] = []
        inner = content.get("content")
        if kind == "tool_result" and isinstance(inner, list):
            # Blocks inside a tool_result may carry markers of their own; each counts.
            for k, part in enumerate(inner):
                if isinstance(part, dict) and "cache_control" in part:
                    nested.append((part["cache_control"], f"{path}.content.{k}"))
            if nested:
                content = {**content, "content": _strip_markers(inner)}
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
        for nested_control, nested_path in nested:
            ttl = _ttl(nested_control, f"{nested_path}.cache_control")
            self.markers.append(_Marker(position, ttl, nested_path))
            self.explicit.setdefault(position, ttl)

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


def _check_version_rules(body: dict[str, Any], messages: list[Any]) -> None:
    """What API version 2026-10-21 refuses that 2023-06-01 accepted."""
    for name in _REMOVED_IN_2026:
        if name in body:
            raise invalid_request(f"{name}: Extra inputs are not permitted")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            continue
        for j, block in enumerate(message["content"]):
            if not isinstance(block, dict):
                continue
            if message.get("role") == "assistant" and block.get("type") == "document":
                raise invalid_request(
                    f"messages.{i}.content.{j}: document blocks are not accepted in "
                    "assistant messages"
                )
            if (
                message.get("role") == "user"
                and block.get("type") == "text"
                and block.get("citations")
            ):
                raise invalid_request(
                    f"messages.{i}.content.{j}.citations: Extra inputs are not permitted"
                )


def _diagnostics(body: dict[str, Any]) -> tuple[bool, str | None]:
    value = body.get("diagnostics")
    if value is None:
        return False, None
    if not isinstance(value, dict):
        raise invalid_request("diagnostics: Input should be a valid dictionary or object")
    previous = value.get("previous_message_id")
    if previous is not None and not isinstance(previous, str):
        raise invalid_request("diagnostics.previous_message_id: Input should be a valid string")
    return True, previous


def parse_request(body: Any, *, version: str = VERSION_2023) -> AnthropicPrompt:
    """Validate a Messages body the way the API does and build its prefix chain.

    ``version`` is the request's ``anthropic-version`` header.
    """
    if version not in API_VERSIONS:
        raise invalid_request(f"anthropic-version: invalid version {version[:32]!r}")
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
    if version == VERSION_2026:
        _check_version_rules(body, messages)
    wants_diagnostics, previous_id = _diagnostics(body)

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
    tools_end, system_end = len(tools), len(b.hashes)
    b.mix(b"tool_choice", body.get("tool_choice"))
    b.mix(b"thinking", body.get("thinking"))
    system_messages = lookup("anthropic", model).mid_conversation_system
    message_ends: list[int] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "system" and isinstance(message, dict):
            if not system_messages:
                raise invalid_request(
                    f"messages.{i}.role: role 'system' is not supported on this model"
                )
            previous = messages[i - 1] if i else None
            if not isinstance(previous, dict) or previous.get("role") != "user":
                raise invalid_request(
                    f"messages.{i}: a system message must immediately follow a user message"
                )
        elif role not in ("user", "assistant"):
            raise invalid_request(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        assert isinstance(message, dict)
        content = message.get("content")
        if isinstance(content, str):
            b.add_text(content, frame=f"M{role}", path=f"messages.{i}.content", markable=True)
        elif isinstance(content, list) and content:
            for j, block in enumerate(content):
                frame = f"M{role}" if j == 0 else "C"
                b.add(block, frame=frame, path=f"messages.{i}.content.{j}", markable=True)
        else:
            raise invalid_request(f"messages.{i}.content: Field required")
        message_ends.append(len(b.hashes) - 1)

    breakpoints = _breakpoints(b, body.get("cache_control"))
    fingerprint = None
    if wants_diagnostics:
        tokens_at = [b.cum[p] for p in message_ends]
        digests: list[bytes] = []
        running = hashlib.sha256(b"messages")
        for message in messages:
            running.update(_section_digest(b"M", message))
            digests.append(running.copy().digest())
        fingerprint = Fingerprint(
            model=model,
            tools=_section_digest(b"T", tools),
            system=_section_digest(b"S", system),
            settings=_section_digest(
                b"X", {"tool_choice": body.get("tool_choice"), "thinking": body.get("thinking")}
            ),
            messages=tuple(digests),
            tools_tokens=b.cum[tools_end - 1] if tools_end else 0,
            system_tokens=(b.cum[system_end - 1] if system_end else 0)
            - (b.cum[tools_end - 1] if tools_end else 0),
            message_tokens=tuple(tokens_at),
            total_tokens=b.total,
        )
    return AnthropicPrompt(
        model=model,
        max_tokens=max_tokens,
        stream=stream,
        hashes=tuple(b.hashes),
        cum_tokens=tuple(b.cum),
        breakpoints=breakpoints,
        total_tokens=b.total,
        fingerprint=fingerprint,
        previous_message_id=previous_id,
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
        self._fingerprints: OrderedDict[str, Fingerprint] = OrderedDict()

    def clear(self) -> None:
        self.store.clear()
        self._fingerprints.clear()

    @property
    def fingerprints(self) -> int:
        """Requests whose diagnostics fingerprint is kept (they carried ``diagnostics``)."""
        return len(self._fingerprints)

    def diagnostics(self, prompt: AnthropicPrompt, message_id: str) -> dict[str, Any] | None:
        """The response's ``diagnostics`` for ``prompt``, stored under ``message_id``.

        ``None`` when the request sent no ``diagnostics`` object (the field is left out);
        ``{"cache_miss_reason": null}`` is never produced: this comparison is instant.
        """
        fingerprint = prompt.fingerprint
        if fingerprint is None:
            return None
        self._fingerprints[message_id] = fingerprint
        while len(self._fingerprints) > self.config.max_entries:
            self._fingerprints.popitem(last=False)
        if prompt.previous_message_id is None:
            return {"diagnostics": None}
        previous = self._fingerprints.get(prompt.previous_message_id)
        reason = diagnose(previous, fingerprint)
        return {"diagnostics": None if reason is None else {"cache_miss_reason": reason}}

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
