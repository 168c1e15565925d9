"""OpenAI automatic prompt caching: machines, routing, 128-token steps, retention.

A Chat Completions or Responses request is rendered once into one prompt string (tools,
output schema, then each message behind a role tag) whose length at ~4 characters per
token gives ``prompt_tokens``. The string is cut into 128-token chunks and a running
hash names every chunk-aligned prefix. A request is routed to one of N simulated
machines by a hash of its first ~256 tokens plus ``prompt_cache_key``; past ~15 requests
a minute per routing key, overflow spills to neighbouring machines, whose caches are
cold. Prompts under 1,024 tokens are never cached; hits are the longest cached prefix in
128-token steps, and each machine forgets a prefix after its retention.

GPT-5.6 and later (``explicitBreakpoints`` in the model table) cache differently: entries
exist only at breakpoints, which are the content parts marked ``prompt_cache_breakpoint``
and, in the default ``implicit`` mode, one the provider places at the end of the latest
user or tool message. A lookup matches a stored breakpoint exactly (any content-part
boundary of the new request, the latest 80), with no 128-token rounding, so a stable
prefix followed by a changing last message reads nothing unless a breakpoint marks where
the stable part ends. Writes are reported as ``cache_write_tokens`` and billed 1.25x.
Older models refuse the new fields as unknown parameters. See ``docs/simulator.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Literal

from promptcache.models import lookup
from promptcache.tokens import CHARS_PER_TOKEN

from .config import CacheConfig
from .errors import ApiError, invalid_request
from .outcome import CacheOutcome
from .store import CacheStore

Api = Literal["chat", "responses"]
BreakpointTtl = Literal["30m", "12h"]
_MAX_ROUTING_KEYS = 10_000
_WINDOW_S = 60.0
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
_TTL_S: dict[str, float] = {"30m": 1_800.0, "12h": 43_200.0}
_LOOKUP_BREAKPOINTS = 80
"""Breakpoints of the conversation a lookup considers (the latest ones)."""
_IMPLICIT_ROLES = frozenset({"user", "tool", "function"})


@dataclass(frozen=True, slots=True)
class Boundary:
    """The end of one content part (or message) in the rendered prompt."""

    tokens: int
    digest: bytes
    """Names the exact prompt prefix ending here."""
    ttl: BreakpointTtl | None = None
    """Set when this is a breakpoint the request writes (explicit or implicit)."""


@dataclass(frozen=True, slots=True)
class Breakpoints:
    """GPT-5.6+ caching of one request: every boundary and the breakpoints it writes."""

    boundaries: tuple[Boundary, ...]
    writes: tuple[int, ...]
    """Indexes into ``boundaries`` of the breakpoints written, ascending."""
    enabled: bool = True
    """False in ``explicit`` mode without a single breakpoint: no caching at all."""


@dataclass(frozen=True, slots=True)
class OpenAIPrompt:
    """A validated Chat Completions or Responses request, reduced to what caching needs."""

    api: Api
    model: str
    stream: bool
    include_usage: bool
    """Chat only: ``stream_options.include_usage`` (Responses always reports usage)."""
    max_output_tokens: int | None
    prompt_tokens: int
    chunk_hashes: tuple[bytes, ...]
    """Digest of the prefix ending at each full 128-token chunk."""
    routing_hash: bytes
    retention: Literal["in_memory", "24h"]
    cache_key: str | None = None
    """``prompt_cache_key`` as sent (echoed by Responses)."""
    instructions: str | None = None
    """Responses ``instructions`` as sent (echoed)."""
    breakpoints: Breakpoints | None = None
    """GPT-5.6 and later: breakpoint caching instead of 128-token steps."""
    cache_options: dict[str, Any] | None = None
    """``prompt_cache_options`` as applied (echoed by Responses)."""

    @property
    def digest(self) -> bytes:
        return self.chunk_hashes[-1] if self.chunk_hashes else self.routing_hash


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _unknown(param: str) -> ApiError:
    return invalid_request(f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter")


def _breakpoint_ttl(value: Any, param: str, default: BreakpointTtl) -> BreakpointTtl:
    if not isinstance(value, dict) or value.get("mode") != "explicit":
        raise invalid_request(
            f"Invalid value for '{param}.mode': expected 'explicit'.",
            param=f"{param}.mode",
            code="invalid_value",
        )
    ttl = value.get("ttl", default)
    if ttl not in _TTL_S:
        raise invalid_request(
            f"Invalid value: '{ttl}'. Supported values are: '30m' and '12h'.",
            param=f"{param}.ttl",
            code="invalid_value",
        )
    return "12h" if ttl == "12h" else "30m"


class _Render:
    """The prompt string, with the offset and marker of every content-part boundary."""

    def __init__(self, *, breakpoints_allowed: bool, default_ttl: BreakpointTtl) -> None:
        self.pieces: list[str] = []
        self.length = 0
        self.boundaries: list[tuple[int, BreakpointTtl | None]] = []
        self.implicit = 0
        """Offset of the end of the latest user or tool message."""
        self._allowed = breakpoints_allowed
        self._default = default_ttl

    def add(self, text: str) -> None:
        self.pieces.append(text)
        self.length += len(text)

    def boundary(self, ttl: BreakpointTtl | None = None) -> None:
        self.boundaries.append((self.length, ttl))

    def content(self, content: Any, param: str) -> None:
        if not isinstance(content, list):
            self.add(content if isinstance(content, str) else _dump(content))
            return
        for k, part in enumerate(content):
            ttl: BreakpointTtl | None = None
            if isinstance(part, dict) and "prompt_cache_breakpoint" in part:
                where = f"{param}[{k}].prompt_cache_breakpoint"
                if not self._allowed:
                    raise _unknown(where)
                ttl = _breakpoint_ttl(part["prompt_cache_breakpoint"], where, self._default)
                part = {key: v for key, v in part.items() if key != "prompt_cache_breakpoint"}
            if isinstance(part, dict) and part.get("type") in _TEXT_PARTS:
                self.add(str(part.get("text", "")))
            else:
                self.add(_dump(part))
            self.boundary(ttl)

    def items(self, items: list[Any], path: str) -> None:
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise invalid_request(
                    f"Invalid type for '{path}[{i}]': expected an object.", param=f"{path}[{i}]"
                )
            role = item.get("role")
            if isinstance(role, str):
                self.add(f"<|{role}|>")
                self.content(item.get("content"), f"{path}[{i}].content")
            else:  # Responses items such as function_call / function_call_output
                self.add(f"<|item|>{_dump(item)}")
            self.boundary()
            if role in _IMPLICIT_ROLES or item.get("type") == "function_call_output":
                self.implicit = self.length


def _cache_options(
    body: dict[str, Any], *, api: Api, allowed: bool
) -> tuple[dict[str, Any] | None, str, BreakpointTtl]:
    """``prompt_cache_options`` validated: (as applied, mode, request TTL)."""
    options = body.get("prompt_cache_options")
    if options is None:
        return None, "implicit", "30m"
    if not allowed:
        raise _unknown("prompt_cache_options")
    if not isinstance(options, dict):
        raise invalid_request(
            "Invalid type for 'prompt_cache_options': expected an object.",
            param="prompt_cache_options",
            code="invalid_type",
        )
    if body.get("prompt_cache_retention") is not None:
        raise invalid_request(
            "'prompt_cache_options' and 'prompt_cache_retention' cannot be used together; "
            "use 'prompt_cache_options.ttl'.",
            param="prompt_cache_options",
            code="invalid_parameter_combination",
        )
    mode = options.get("mode", "implicit")
    if mode not in ("implicit", "explicit"):
        raise invalid_request(
            f"Invalid value: '{mode}'. Supported values are: 'implicit' and 'explicit'.",
            param="prompt_cache_options.mode",
            code="invalid_value",
        )
    ttl = options.get("ttl", "30m")
    supported = ("30m", "12h") if api == "responses" else ("30m",)
    if ttl not in supported:
        raise invalid_request(
            f"Invalid value: '{ttl}'. Supported values are: "
            + " and ".join(f"'{t}'" for t in supported)
            + ".",
            param="prompt_cache_options.ttl",
            code="invalid_value",
        )
    applied = {"mode": mode, "ttl": ttl}
    return applied, mode, "12h" if ttl == "12h" else "30m"


def _max_tokens(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise invalid_request(
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1.",
                param=name,
                code="integer_below_min_value",
            )
        return value
    return None


def parse_request(body: Any, *, api: Api, config: CacheConfig) -> OpenAIPrompt:
    """Validate the fields caching and the answer depend on, and hash the prompt once."""
    if not isinstance(body, dict):
        raise invalid_request("We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("you must provide a model parameter")
    explicit = lookup("openai", model).explicit_breakpoints
    applied, mode, default_ttl = _cache_options(body, api=api, allowed=explicit)
    r = _Render(breakpoints_allowed=explicit, default_ttl=default_ttl)
    tools = body.get("tools")
    if tools:
        r.add(f"<|tools|>{_dump(tools)}")
        r.boundary()
    if api == "chat":
        schema = body.get("response_format")
        messages = body.get("messages")
        if messages is None:
            raise invalid_request(
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        if not isinstance(messages, list) or not messages:
            raise invalid_request(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                param="messages",
                code="empty_array",
            )
        if schema:
            r.add(f"<|schema|>{_dump(schema)}")
            r.boundary()
        r.items(messages, "messages")
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        max_out = _max_tokens(body, "max_completion_tokens", "max_tokens")
    else:
        text_config = body.get("text")
        if isinstance(text_config, dict) and text_config.get("format"):
            r.add(f"<|schema|>{_dump(text_config['format'])}")
            r.boundary()
        instructions = body.get("instructions")
        if isinstance(instructions, str) and instructions:
            r.add(f"<|developer|>{instructions}")
            r.boundary()
        items = body.get("input")
        if items is None and not instructions:
            raise invalid_request(
                "Missing required parameter: 'input'.",
                param="input",
                code="missing_required_parameter",
            )
        if isinstance(items, str):
            r.add(f"<|user|>{items}")
            r.boundary()
            r.implicit = r.length
        elif isinstance(items, list):
            r.items(items, "input")
        include_usage = True
        max_out = _max_tokens(body, "max_output_tokens")
    retention = body.get("prompt_cache_retention") or ("24h" if explicit else "in_memory")
    if retention not in ("in_memory", "24h") or (explicit and retention != "24h"):
        supported = "'24h'" if explicit else "'in_memory' and '24h'"
        raise invalid_request(
            f"Invalid value: '{retention}'. Supported values are: {supported}.",
            param="prompt_cache_retention",
            code="invalid_value",
        )
    stream = body.get("stream") is True
    key = body.get("prompt_cache_key")
    prompt = "".join(r.pieces)
    breakpoints = _breakpoints(r, prompt, model, mode, default_ttl) if explicit else None

    chunk_chars = int(config.openai_step_tokens * CHARS_PER_TOKEN)
    hasher = hashlib.sha256(b"openai\x00" + model.encode() + b"\x00")
    hashes: list[bytes] = []
    for start in range(0, len(prompt) - chunk_chars + 1, chunk_chars):
        hasher.update(prompt[start : start + chunk_chars].encode())
        hashes.append(hasher.copy().digest())
    head = prompt[: int(config.openai_routing_tokens * CHARS_PER_TOKEN)]
    routing = hashlib.sha256(f"{model}\x00{key or ''}\x00{head}".encode()).digest()
    return OpenAIPrompt(
        api=api,
        model=model,
        stream=stream,
        include_usage=include_usage,
        max_output_tokens=max_out,
        prompt_tokens=math.ceil(len(prompt) / CHARS_PER_TOKEN) if prompt else 0,
        chunk_hashes=tuple(hashes),
        routing_hash=routing,
        retention="24h" if retention == "24h" else "in_memory",
        cache_key=key if isinstance(key, str) else None,
        instructions=body.get("instructions") if api == "responses" else None,
        breakpoints=breakpoints,
        cache_options=applied or ({"mode": "implicit", "ttl": "30m"} if explicit else None),
    )


def _breakpoints(
    r: _Render, prompt: str, model: str, mode: str, default_ttl: BreakpointTtl
) -> Breakpoints:
    """Hash every boundary once; pick the breakpoints this request writes."""
    hasher = hashlib.sha256(b"openai-bp\x00" + model.encode() + b"\x00")
    done = 0
    boundaries: list[Boundary] = []
    marked: list[int] = []
    seen: dict[int, int] = {}
    for offset, ttl in r.boundaries:
        if offset in seen:  # a message end right after its last part: the same prefix
            index = seen[offset]
            old = boundaries[index]
            if ttl is not None and old.ttl is None:
                boundaries[index] = Boundary(old.tokens, old.digest, ttl)
                marked.append(index)
            continue
        hasher.update(prompt[done:offset].encode())
        done = offset
        seen[offset] = len(boundaries)
        if ttl is not None:
            marked.append(len(boundaries))
        boundaries.append(
            Boundary(math.ceil(offset / CHARS_PER_TOKEN), hasher.copy().digest(), ttl)
        )
    writes = sorted(set(marked))[-(3 if mode == "implicit" else 4) :] if marked else []
    if mode == "implicit" and r.implicit in seen:
        index = seen[r.implicit]
        if boundaries[index].ttl is None:
            boundaries[index] = Boundary(
                boundaries[index].tokens, boundaries[index].digest, default_ttl
            )
        writes = sorted({*writes, index})
    return Breakpoints(
        boundaries=tuple(boundaries),
        writes=tuple(writes),
        enabled=mode == "implicit" or bool(marked),
    )


class OpenAICache:
    """N machines, each with its own store, and the router in front of them."""

    def __init__(self, config: CacheConfig, *, machines: int) -> None:
        self.config = config
        self.machines = [
            CacheStore(max_entries=config.max_entries) for _ in range(max(1, machines))
        ]
        self._recent: OrderedDict[bytes, deque[float]] = OrderedDict()

    def clear(self) -> None:
        for store in self.machines:
            store.clear()
        self._recent.clear()

    def route(self, prompt: OpenAIPrompt, *, now: float) -> int:
        """The machine index for this request, counting it against its key's rate."""
        base = int.from_bytes(prompt.routing_hash[:8], "big") % len(self.machines)
        limit = self.config.openai_overflow_rpm
        if limit <= 0:
            return base
        window = self._recent.get(prompt.routing_hash)
        if window is None:
            window = self._recent[prompt.routing_hash] = deque()
            if len(self._recent) > _MAX_ROUTING_KEYS:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(prompt.routing_hash)
        while window and window[0] <= now - _WINDOW_S:
            window.popleft()
        spill = int(len(window) // limit)
        window.append(now)
        return (base + spill) % len(self.machines)

    def _resolve_breakpoints(
        self, prompt: OpenAIPrompt, bps: Breakpoints, *, now: float
    ) -> CacheOutcome:
        """GPT-5.6+: an exact match at a stored breakpoint; writes at this request's."""
        minimum = self.config.openai_min_tokens
        if not bps.enabled or prompt.prompt_tokens < minimum:
            return CacheOutcome(total_input=prompt.prompt_tokens)
        store = self.machines[self.route(prompt, now=now)]
        boundaries = bps.boundaries
        read = 0
        for b in reversed(boundaries[-_LOOKUP_BREAKPOINTS:]):
            if b.tokens >= minimum and store.get(b.digest, now=now) is not None:
                store.touch(b.digest, now=now)
                read = b.tokens
                break
        writes = [
            boundaries[i]
            for i in bps.writes
            if boundaries[i].tokens > read and boundaries[i].tokens >= minimum
        ]
        short = long = 0
        previous = read
        for b in writes:
            stretch = b.tokens - previous
            previous = b.tokens
            if b.ttl == "12h":
                long += stretch
            else:
                short += stretch

        def commit(at: float) -> None:
            for b in writes:
                store.put(b.digest, tokens=b.tokens, ttl_s=_TTL_S[b.ttl or "30m"], now=at)

        # The outcome's 5m/1h slots carry OpenAI's 30m/12h writes (short/long TTL).
        return CacheOutcome(
            total_input=prompt.prompt_tokens,
            cache_read=read,
            cache_write_5m=short,
            cache_write_1h=long,
            eligible=True,
            commit=commit,
        )

    def resolve(self, prompt: OpenAIPrompt, *, now: float) -> CacheOutcome:
        """Cached tokens at prefill start; this request's chunks are stored on ``commit``."""
        if prompt.breakpoints is not None:
            return self._resolve_breakpoints(prompt, prompt.breakpoints, now=now)
        cfg = self.config
        first = math.ceil(cfg.openai_min_tokens / cfg.openai_step_tokens) - 1
        hashes = prompt.chunk_hashes
        if prompt.prompt_tokens < cfg.openai_min_tokens or len(hashes) <= first:
            return CacheOutcome(total_input=prompt.prompt_tokens)
        store = self.machines[self.route(prompt, now=now)]
        extended = prompt.retention == "24h"
        ttl_s = cfg.openai_extended_retention_s if extended else cfg.openai_retention_s
        lifetime_s = None if extended else cfg.openai_max_lifetime_s
        hit = first
        while hit < len(hashes) and store.get(hashes[hit], now=now) is not None:
            store.touch(hashes[hit], now=now, ttl_s=ttl_s)
            hit += 1
        cached = hit * cfg.openai_step_tokens if hit > first else 0
        start = max(hit, first)

        def commit(at: float) -> None:
            for k in range(start, len(hashes)):
                store.put(
                    hashes[k],
                    tokens=(k + 1) * cfg.openai_step_tokens,
                    ttl_s=ttl_s,
                    now=at,
                    lifetime_s=lifetime_s,
                )

        return CacheOutcome(
            total_input=prompt.prompt_tokens, cache_read=cached, eligible=True, commit=commit
        )
