"""The event splitter and usage taps give the same result however the stream is chunked."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from promptcache.sidecar.sse import (
    AnthropicTap,
    EventSplitter,
    OpenAIChatTap,
    ResponsesTap,
    UsageTap,
    split_events,
    usage_from_body,
)
from promptcache.usage import Usage


def _sse(event: str | None, data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + f"data: {text}\n\n".encode()


ANTHROPIC = b"".join(
    [
        _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "model": "claude-sonnet-4-6",
                    "usage": {
                        "input_tokens": 20,
                        "cache_read_input_tokens": 3000,
                        "cache_creation_input_tokens": 500,
                        "cache_creation": {
                            "ephemeral_5m_input_tokens": 0,
                            "ephemeral_1h_input_tokens": 500,
                        },
                        "output_tokens": 1,
                    },
                },
            },
        ),
        _sse("content_block_delta", {"type": "content_block_delta", "delta": {"text": "Hi"}}),
        _sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 7}}),
        _sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 15}}),
        _sse("message_stop", {"type": "message_stop"}),
    ]
)
EXPECTED_ANTHROPIC = Usage(uncached=20, cache_read=3000, cache_write_1h=500, output=15)

CHAT_USAGE = {
    "prompt_tokens": 1500,
    "completion_tokens": 9,
    "prompt_tokens_details": {"cached_tokens": 1280},
}
CHAT = b"".join(
    [
        _sse(None, {"model": "gpt-4o", "choices": [{"delta": {"content": "a"}}], "usage": None}),
        _sse(None, {"model": "gpt-4o", "choices": [{"delta": {}}], "usage": None}),
        _sse(None, {"model": "gpt-4o", "choices": [], "usage": CHAT_USAGE}),
        b"data: [DONE]\n\n",
    ]
)
EXPECTED_CHAT = Usage(uncached=220, cache_read=1280, output=9)


def _run(tap: UsageTap, stream: bytes, cuts: list[int]) -> bytes:
    splitter = EventSplitter()
    out = b""
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for start, end in itertools.pairwise(bounds):
        out += tap.process(splitter.feed(stream[start:end]))
    return out + splitter.pending


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_anthropic_usage_is_cumulative_whatever_the_chunking(cuts: list[int]) -> None:
    tap = AnthropicTap()
    assert _run(tap, ANTHROPIC, cuts) == ANTHROPIC  # relayed byte for byte
    assert tap.usage == EXPECTED_ANTHROPIC  # message_delta replaces, never adds
    assert tap.model == "claude-sonnet-4-6"


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_openai_usage_chunk_is_read_and_dropped_when_injected(cuts: list[int]) -> None:
    tap = OpenAIChatTap(strip=True)
    out = _run(tap, CHAT, cuts)
    assert tap.usage == EXPECTED_CHAT
    assert tap.model == "gpt-4o"
    events = split_events(out)
    assert len(events) == 3
    assert all(b'"choices":[]' not in e for e in events)
    assert events[-1] == b"data: [DONE]"


def test_openai_usage_chunk_kept_when_the_app_asked() -> None:
    tap = OpenAIChatTap(strip=False)
    assert _run(tap, CHAT, [100]) == CHAT
    assert tap.usage == EXPECTED_CHAT


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_splitter_loses_and_invents_nothing(data: bytes, cuts: list[int]) -> None:
    splitter = EventSplitter()
    out = b""
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(bounds):
        block = splitter.feed(data[start:end])
        assert not block or block.endswith((b"\n\n", b"\r\r", b"\r\n\r\n"))
        out += block
    assert out + splitter.pending == data


def test_crlf_events_are_split() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: 1\r\n\r\ndata: 2\r\n") == b"data: 1\r\n\r\n"
    assert splitter.pending == b"data: 2\r\n"


def test_responses_completed_event_carries_usage() -> None:
    done = {
        "type": "response.completed",
        "response": {
            "model": "gpt-5-mini",
            "usage": {
                "input_tokens": 2000,
                "input_tokens_details": {"cached_tokens": 1920},
                "output_tokens": 4,
            },
        },
    }
    tap = ResponsesTap()
    tap.process(_sse("response.created", {"type": "response.created", "response": {"usage": None}}))
    tap.process(_sse("response.completed", done))
    assert tap.usage == Usage(uncached=80, cache_read=1920, output=4)
    assert tap.model == "gpt-5-mini"


def test_anthropic_error_event_is_noticed() -> None:
    tap = AnthropicTap()
    tap.process(_sse("error", {"type": "error", "error": {"type": "overloaded_error"}}))
    assert tap.error


def test_whole_bodies() -> None:
    body = json.dumps({"model": "gpt-4o", "usage": CHAT_USAGE}).encode()
    assert usage_from_body("openai", body) == (EXPECTED_CHAT, "gpt-4o")
    assert usage_from_body("anthropic", b"not json") == (None, None)
    assert usage_from_body("anthropic", b'{"model": 3}') == (None, None)
