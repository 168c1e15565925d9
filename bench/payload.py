"""The benchmark's request and the fast upstream's answers.

The request is the case study's shape: a ~7,200-token (~28 KB) Anthropic Messages call
with tools, a long static system prompt and a short conversation. The text is generated
from a fixed seed so every run sends the same bytes.
"""

from __future__ import annotations

import json
import random
from typing import Any

TARGET_BYTES = 28 * 1024
API_KEY = "sk-bench-5f0c2a9e7b1d4c3a8e6f0b2d9c7a1e4f"
"""The key every arm is sent: LiteLLM's proxy checks it (its master key), the upstreams
ignore it."""
_WORDS = [
    "order",
    "refund",
    "shipping",
    "policy",
    "customer",
    "account",
    "warranty",
    "return",
    "label",
    "invoice",
    "carrier",
    "delivery",
    "exchange",
    "damaged",
    "item",
    "replacement",
    "subscription",
    "billing",
    "address",
    "payment",
    "method",
    "store",
    "credit",
    "tracking",
    "number",
    "escalation",
    "supervisor",
    "holiday",
    "hours",
]


def _text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(_WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def request_body(*, stream: bool = False) -> bytes:
    """The ~28 KB Anthropic request, compact JSON."""
    rng = random.Random(7200)
    tools = [
        {
            "name": f"lookup_{name}",
            "description": _text(rng, 300),
            "input_schema": {
                "type": "object",
                "properties": {"id": {"type": "string", "description": _text(rng, 60)}},
                "required": ["id"],
            },
        }
        for name in ("order", "customer", "shipment", "invoice")
    ]
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 512,
        "tools": tools,
        "system": [{"type": "text", "text": "You are ACME's support agent. " + _text(rng, 1)}],
        "messages": [
            {"role": "user", "content": _text(rng, 400)},
            {"role": "assistant", "content": _text(rng, 300)},
            {"role": "user", "content": "Where is my order 1234?"},
        ],
    }
    if stream:
        body["stream"] = True
    size = len(json.dumps(body, separators=(",", ":")).encode())
    body["system"][0]["text"] += " " + _text(rng, TARGET_BYTES - size)
    return json.dumps(body, separators=(",", ":")).encode()


_USAGE = {
    "input_tokens": 120,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 7080,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 24,
}


def message_json() -> str:
    """A complete Anthropic answer (no ``$`` or single quotes: it goes into nginx.conf)."""
    return json.dumps(
        {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [{"type": "text", "text": "Your order 1234 ships tomorrow."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": _USAGE,
        },
        separators=(",", ":"),
    )


def message_sse() -> str:
    """The same answer as an event stream."""
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [],
            "stop_reason": None,
            "usage": _USAGE | {"output_tokens": 1},
        },
    }
    events: list[tuple[str, dict[str, Any]]] = [("message_start", start)]
    events.append(
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
    )
    for word in ["Your", "order", "1234", "ships", "tomorrow."]:
        delta = {"type": "text_delta", "text": word + " "}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": _USAGE},
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return "".join(
        f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        for name, data in events
    )
