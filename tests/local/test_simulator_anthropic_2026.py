"""The 2026 Anthropic API in the simulator, driven by the official ``anthropic`` SDK.

Cache diagnostics (``diagnostics.previous_message_id`` -> ``cache_miss_reason``, also on
``message_start``), API version ``2026-10-21`` (what SDK 2.x sends: sampling parameters,
document blocks in assistant turns and citations in user turns refused), bearer-token
auth, markers nested in ``tool_result`` content counted toward the four, and
mid-conversation system messages on the models that take them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest

from promptcache.simulator import ManualClock, SimConfig, SimServer

MODEL = "claude-sonnet-4-6"
STATIC = "Support desk rules that never change between calls. " * 200  # ~2,600 tokens


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(SimConfig(time_scale=0, clock=ManualClock(), require_auth=True)) as s:
        yield s


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="sk-t", max_retries=0) as c:
        yield c


def body(question: str, system: str = STATIC, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 16,
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": question}],
        **extra,
    }


async def test_diagnostics_chain(client: anthropic.AsyncAnthropic) -> None:
    first = await client.messages.create(**body("q1", diagnostics={"previous_message_id": None}))
    assert first.diagnostics is None
    same = await client.messages.create(**body("q1", diagnostics={"previous_message_id": first.id}))
    assert same.diagnostics is None  # nothing diverged
    changed = await client.messages.create(
        **body("q1", system=STATIC + " v2", diagnostics={"previous_message_id": same.id})
    )
    assert changed.diagnostics is not None
    reason = changed.diagnostics.cache_miss_reason
    assert reason is not None
    assert reason.type == "system_changed"
    assert reason.type == "system_changed"
    # All of the previous request would have been read had it been extended unchanged.
    previous_total = (same.usage.cache_read_input_tokens or 0) + same.usage.input_tokens
    assert reason.cache_missed_input_tokens == previous_total


async def test_diagnostics_reasons(client: anthropic.AsyncAnthropic) -> None:
    base = await client.messages.create(**body("q", diagnostics={"previous_message_id": None}))
    link = {"previous_message_id": base.id}
    edited = body("q", diagnostics=link)
    edited["messages"] = [
        {"role": "user", "content": "other"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "q"},
    ]
    cases: list[tuple[dict[str, Any], str]] = [
        (body("q", diagnostics=link) | {"model": "claude-opus-4-8"}, "model_changed"),
        (body("q", diagnostics=link, tools=[{"name": "t", "input_schema": {"type": "object"}}]),
         "tools_changed"),
        (body("q", diagnostics=link, tool_choice={"type": "none"}), "unavailable"),
        (edited, "messages_changed"),
        (body("q", diagnostics={"previous_message_id": "msg_unknown"}),
         "previous_message_not_found"),
    ]  # fmt: skip
    for request, expected in cases:
        message = await client.messages.create(**request)
        assert message.diagnostics is not None, expected
        assert message.diagnostics.cache_miss_reason is not None
        assert message.diagnostics.cache_miss_reason.type == expected


async def test_no_diagnostics_field_without_the_request_object(sim: SimServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.url + "/v1/messages", json=body("q"), headers={"x-api-key": "k"}) as r,
    ):
        assert "diagnostics" not in await r.json()


async def test_diagnostics_on_message_start(client: anthropic.AsyncAnthropic) -> None:
    first = await client.messages.create(**body("q", diagnostics={"previous_message_id": None}))
    stream = await client.messages.create(
        **body("q", system="other", diagnostics={"previous_message_id": first.id}), stream=True
    )
    start = None
    async for event in stream:
        if event.type == "message_start":
            start = event.message
    assert start is not None
    assert start.diagnostics is not None
    assert start.diagnostics.cache_miss_reason is not None
    assert start.diagnostics.cache_miss_reason.type == "system_changed"


@pytest.mark.parametrize(
    "extra",
    [
        {"temperature": 0.2},
        {"top_p": 0.9},
        {"top_k": 5},
        {
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "d"},
                        }
                    ],
                },
                {"role": "user", "content": "q2"},
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "q",
                            "citations": [{"type": "char_location", "cited_text": "x"}],
                        }
                    ],
                }
            ]
        },
    ],
)
async def test_version_2026_refuses_what_2023_accepted(
    client: anthropic.AsyncAnthropic, extra: dict[str, Any]
) -> None:
    request = body("q")
    messages = extra.pop("messages", None)
    if messages is not None:
        request["messages"] = messages
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(**request, extra_body=extra)
    old = await client.messages.create(
        **request, extra_body=extra, extra_headers={"anthropic-version": "2023-06-01"}
    )
    assert old.content


async def test_sdk_sends_2026_version_and_bearer(sim: SimServer) -> None:
    assert anthropic._constants.ANTHROPIC_API_VERSION == "2026-10-21"
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="sk-t", max_retries=0) as c:
        await c.messages.create(**body("q"))
    assert sim.stats()["auth"] == {"bearer": 1}


async def test_a_request_without_a_key_is_refused(sim: SimServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.url + "/v1/messages", json=body("q")) as r,
    ):
        assert r.status == 401
        assert (await r.json())["error"]["type"] == "authentication_error"


def tool_turns(nested_markers: int) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [
        {"type": "text", "text": f"result part {i} " * 50} for i in range(max(1, nested_markers))
    ]
    for part in parts[:nested_markers]:
        part["cache_control"] = {"type": "ephemeral"}
    return [
        {"role": "user", "content": "look it up"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": parts}],
        },
    ]


async def test_nested_tool_result_markers_count_toward_four(
    client: anthropic.AsyncAnthropic,
) -> None:
    request = body("q")
    marker = {"type": "ephemeral"}
    request["system"] = [
        {"type": "text", "text": f"s{i}", "cache_control": marker} for i in range(4)
    ]
    request["tools"] = [{"name": "t", "input_schema": {"type": "object"}}]
    request["messages"] = tool_turns(1)
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.messages.create(**request)
    assert "Found 5" in str(err.value)


async def test_nested_marker_is_a_breakpoint(client: anthropic.AsyncAnthropic) -> None:
    request = body("q")
    request["tools"] = [{"name": "t", "input_schema": {"type": "object"}}]
    request["messages"] = tool_turns(1)
    first = await client.messages.create(**request)
    second = await client.messages.create(**request)
    assert (first.usage.cache_creation_input_tokens or 0) > len(STATIC) // 4
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens


async def test_mid_conversation_system_messages(client: anthropic.AsyncAnthropic) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "q"},
        {"role": "system", "content": "It is 10:42 now."},
    ]
    ok = await client.messages.create(**body("q", messages=messages) | {"model": "claude-opus-4-8"})
    assert ok.content
    with pytest.raises(anthropic.BadRequestError) as err:
        await client.messages.create(**body("q", messages=messages))  # Sonnet 4.6: not accepted
    assert "role 'system' is not supported" in str(err.value)
    misplaced = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                 {"role": "system", "content": "late"}]  # fmt: skip
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(**body("q", messages=misplaced) | {"model": "claude-opus-5"})
