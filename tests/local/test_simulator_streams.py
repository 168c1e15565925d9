"""Every response and stream of the simulator, parsed by the official SDKs and read raw.

The raw reads pin the providers' exact event sequences and usage fields; the SDK reads
prove that the clients the app uses (stream helpers, final-message accumulation,
``include_usage``) understand them. ``time_scale`` is small but not zero, so streams are
paced and written in several batches.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from promptcache.simulator import SimConfig, SimServer

MODEL = "claude-sonnet-4-6"
STATIC = "You are the support agent of an online shop. Be precise and brief. " * 120
ANTHROPIC_USAGE_KEYS = {
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "output_tokens",
    "service_tier",
}


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(SimConfig(time_scale=0.002, seed=7)) as server:
        yield server


async def sse(
    url: str, body: dict[str, Any]
) -> tuple[aiohttp.ClientResponse, list[tuple[str | None, Any]]]:
    """POST and split the event stream into (event name, parsed data) pairs."""
    events: list[tuple[str | None, Any]] = []
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        raw = (await resp.read()).decode()
    for frame in raw.split("\n\n"):
        if not frame.strip():
            continue
        name = None
        data: Any = None
        for line in frame.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                payload = line[6:]
                data = payload if payload == "[DONE]" else json.loads(payload)
        events.append((name, data))
    return resp, events


def messages_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 40,
        "system": [{"type": "text", "text": STATIC, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "Where is my order?"}],
        **extra,
    }


async def test_anthropic_event_sequence_and_usage(sim: SimServer) -> None:
    resp, events = await sse(sim.url + "/v1/messages", messages_body(stream=True))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["request-id"].startswith("req_")
    names = [name for name, _ in events]
    deltas = names.count("content_block_delta")
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert set(start["usage"]) == ANTHROPIC_USAGE_KEYS
    assert start["usage"]["cache_creation"] == {
        "ephemeral_5m_input_tokens": start["usage"]["cache_creation_input_tokens"],
        "ephemeral_1h_input_tokens": 0,
    }
    assert start["content"] == []
    assert start["stop_reason"] is None
    final = events[-2][1]
    assert final["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert final["usage"] == {
        "input_tokens": start["usage"]["input_tokens"],
        "cache_creation_input_tokens": start["usage"]["cache_creation_input_tokens"],
        "cache_read_input_tokens": 0,
        "output_tokens": 40,
    }
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    # The same request without streaming: same text, same usage (now a cache read).
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.url + "/v1/messages", json=messages_body()) as whole,
    ):
        message = await whole.json()
    assert message["content"] == [{"type": "text", "text": text}]
    assert set(message["usage"]) == ANTHROPIC_USAGE_KEYS
    assert (
        message["usage"]["cache_read_input_tokens"] == final["usage"]["cache_creation_input_tokens"]
    )
    assert message["usage"]["output_tokens"] == 40


async def test_anthropic_sdk_parses_every_shape(sim: SimServer) -> None:
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0) as client:
        body = messages_body(max_tokens=1000)
        async with client.messages.stream(**body) as stream:
            pieces = [piece async for piece in stream.text_stream]
            streamed = await stream.get_final_message()
        created = await client.messages.create(**body)
        raw = await client.messages.create(**body, stream=True)
        kinds = [event.type async for event in raw]
    assert len(pieces) > 10
    assert streamed.content[0].type == "text"
    assert streamed.content[0].text == "".join(pieces) == created.content[0].text
    assert streamed.stop_reason == created.stop_reason == "end_turn"
    assert 150 <= streamed.usage.output_tokens == created.usage.output_tokens <= 300
    assert (
        streamed.usage.cache_creation_input_tokens == created.usage.cache_read_input_tokens > 1000
    )
    assert streamed.usage.cache_creation is not None
    assert streamed.usage.cache_creation.ephemeral_5m_input_tokens > 1000
    assert created.usage.input_tokens == streamed.usage.input_tokens == 5
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"


async def test_anthropic_prewarm_stream_has_no_content_block(sim: SimServer) -> None:
    _, events = await sse(sim.url + "/v1/messages", messages_body(max_tokens=0, stream=True))
    assert [name for name, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert events[1][1]["usage"]["output_tokens"] == 0
    async with (
        anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0) as client,
        client.messages.stream(**messages_body(max_tokens=0)) as stream,
    ):
        message = await stream.get_final_message()
    assert message.content == []
    assert (message.usage.cache_read_input_tokens or 0) > 1000


def chat_body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": STATIC},
            {"role": "user", "content": "Where is my order?"},
        ],
        **extra,
    }


@pytest.mark.parametrize("include_usage", [True, False, None])
async def test_chat_chunks_and_the_usage_chunk(sim: SimServer, include_usage: bool | None) -> None:
    extra: dict[str, Any] = {"stream": True, "max_tokens": 30}
    if include_usage is not None:
        extra["stream_options"] = {"include_usage": include_usage}
    resp, events = await sse(sim.url + "/v1/chat/completions", chat_body(**extra))
    assert resp.status == 200
    assert events[-1] == (None, "[DONE]")
    chunks = [data for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    if include_usage:
        *content, finish, usage_chunk = chunks
        assert usage_chunk["choices"] == []
        assert usage_chunk["usage"]["prompt_tokens"] > 1024
        assert usage_chunk["usage"]["completion_tokens"] == 30
        assert set(usage_chunk["usage"]["prompt_tokens_details"]) >= {"cached_tokens"}
        assert all(c["usage"] is None for c in [*content, finish])
    else:
        *content, finish = chunks
        assert all("usage" not in c for c in chunks)
    assert finish["choices"][0]["finish_reason"] == "length"
    assert finish["choices"][0]["delta"] == {}


async def test_openai_sdk_parses_chat_and_responses(sim: SimServer) -> None:
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0) as client:
        body = chat_body()
        whole = await client.chat.completions.create(**body)
        stream = await client.chat.completions.create(
            **body, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        async with client.chat.completions.stream(**body) as helper:
            async for _ in helper:
                pass
            final = await helper.get_final_completion()

        resp_body: dict[str, Any] = {"model": "gpt-4o", "instructions": STATIC, "input": "Hi"}
        response = await client.responses.create(**resp_body)
        async with client.responses.stream(**resp_body) as rstream:
            kinds = [event.type async for event in rstream]
            streamed = await rstream.get_final_response()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content == final.choices[0].message.content
    assert whole.usage is not None
    assert chunks[-1].usage is not None
    assert whole.usage.prompt_tokens_details is not None
    assert whole.usage.prompt_tokens_details.cached_tokens == 0
    details = chunks[-1].usage.prompt_tokens_details
    assert details is not None
    assert details.cached_tokens
    assert details.cached_tokens % 128 == 0
    assert chunks[-1].choices == []
    assert response.output_text
    assert response.output_text == streamed.output_text
    assert response.usage is not None
    assert streamed.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert streamed.usage.input_tokens_details.cached_tokens % 128 == 0
    assert streamed.usage.input_tokens_details.cached_tokens > 1024
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]


async def test_responses_events_are_numbered_and_truncation_is_incomplete(sim: SimServer) -> None:
    body = {
        "model": "gpt-4o",
        "input": [{"role": "user", "content": "Hi"}],
        "max_output_tokens": 20,
    }
    _, events = await sse(sim.url + "/v1/responses", body | {"stream": True})
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(name == data["type"] for name, data in events)
    last = events[-1][1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["usage"]["output_tokens"] == 20
