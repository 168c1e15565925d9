"""OpenAI automatic prompt caching: machines, routing, 128-token steps, retention.

A Chat Completions or Responses request is rendered once into one prompt string (tools,
output schema, then each message behind a role tag) whose length at ~4 characters per
token gives ``prompt_tokens``. The string is cut into 128-token chunks and a running
hash names every chunk-aligned prefix. A request is routed to one of N simulated
machines by a hash of its first ~256 tokens plus ``prompt_cache_key``; past ~15 requests
a minute per routing key, overflow spills to neighbouring machines, whose caches are
cold. Prompts under 1,024 tokens are never cached; hits are the longest cached prefix in
128-token steps, and each machine forgets a prefix after its retention. See
``docs/simulator.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Literal

from promptcache.tokens import CHARS_PER_TOKEN

from .config import CacheConfig
from .errors import invalid_request
from .outcome import CacheOutcome
from .store import CacheStore

Api = Literal["chat", "responses"]
_MAX_ROUTING_KEYS = 10_000
_WINDOW_S = 60.0
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


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

    @property
    def digest(self) -> bytes:
        return self.chunk_hashes[-1] if self.chunk_hashes else self.routing_hash


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in _TEXT_PARTS:
                parts.append(str(part.get("text", "")))
            else:
                parts.append(_dump(part))
        return "".join(parts)
    return _dump(content)


def _render_items(items: list[Any], path: str) -> list[str]:
    out: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise invalid_request(
                f"Invalid type for '{path}[{i}]': expected an object.", param=f"{path}[{i}]"
            )
        role = item.get("role")
        if isinstance(role, str):
            out.append(f"<|{role}|>{_content_text(item.get('content'))}")
        else:  # Responses items such as function_call / function_call_output
            out.append(f"<|item|>{_dump(item)}")
    return out


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
    pieces: list[str] = []
    tools = body.get("tools")
    if tools:
        pieces.append(f"<|tools|>{_dump(tools)}")
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
            pieces.append(f"<|schema|>{_dump(schema)}")
        pieces.extend(_render_items(messages, "messages"))
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        max_out = _max_tokens(body, "max_completion_tokens", "max_tokens")
    else:
        text_config = body.get("text")
        if isinstance(text_config, dict) and text_config.get("format"):
            pieces.append(f"<|schema|>{_dump(text_config['format'])}")
        instructions = body.get("instructions")
        if isinstance(instructions, str) and instructions:
            pieces.append(f"<|developer|>{instructions}")
        items = body.get("input")
        if items is None and not instructions:
            raise invalid_request(
                "Missing required parameter: 'input'.",
                param="input",
                code="missing_required_parameter",
            )
        if isinstance(items, str):
            pieces.append(f"<|user|>{items}")
        elif isinstance(items, list):
            pieces.extend(_render_items(items, "input"))
        include_usage = True
        max_out = _max_tokens(body, "max_output_tokens")
    retention = body.get("prompt_cache_retention") or "in_memory"
    if retention not in ("in_memory", "24h"):
        raise invalid_request(
            f"Invalid value: '{retention}'. Supported values are: 'in_memory' and '24h'.",
            param="prompt_cache_retention",
            code="invalid_value",
        )
    stream = body.get("stream") is True
    key = body.get("prompt_cache_key")
    prompt = "".join(pieces)

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

    def resolve(self, prompt: OpenAIPrompt, *, now: float) -> CacheOutcome:
        """Cached tokens at prefill start; this request's chunks are stored on ``commit``."""
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
