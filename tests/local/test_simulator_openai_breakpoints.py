"""GPT-5.6+ prompt caching in the simulator, driven by the official ``openai`` SDK.

The rules under test (developers.openai.com/api/docs/guides/prompt-caching and the SDK's
``PromptCacheOptions`` / ``PromptCacheBreakpoint`` types): writes reported as
``cache_write_tokens``; entries only at breakpoints, matched exactly; the implicit
breakpoint at the latest message, so a stable prefix with a changing last message reads
nothing without an explicit breakpoint; ``prompt_cache_options`` refused beside
``prompt_cache_retention``; older models refuse the new fields.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from promptcache.simulator import ManualClock, SimConfig, SimServer

NEW = "gpt-5.6-terra"
OLD = "gpt-4o"
STATIC = "Rules of the support desk, unchanged between calls. " * 160  # ~2,080 tokens


def tokens(chars: int) -> int:
    return math.ceil(chars / 4)


@pytest.fixture
async def client() -> AsyncIterator[openai.AsyncOpenAI]:
    async with (
        SimServer(SimConfig(time_scale=0, clock=ManualClock())) as sim,
        openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0) as c,
    ):
        yield c


def system(breakpoint_: dict[str, Any] | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": STATIC}
    if breakpoint_ is not None:
        part["prompt_cache_breakpoint"] = breakpoint_
    return {"role": "system", "content": [part]}


async def usage(client: openai.AsyncOpenAI, messages: list[Any], **extra: Any) -> Any:
    body: dict[str, Any] = {"model": NEW, "messages": messages, "max_tokens": 5, **extra}
    completion = await client.chat.completions.create(**body)
    assert completion.usage is not None
    return completion.usage


async def test_implicit_mode_reads_nothing_when_only_the_last_message_changes(
    client: openai.AsyncOpenAI,
) -> None:
    first = await usage(client, [system(), {"role": "user", "content": "question one"}])
    second = await usage(client, [system(), {"role": "user", "content": "question two"}])
    assert first.prompt_tokens_details.cache_write_tokens == first.prompt_tokens
    assert second.prompt_tokens_details.cached_tokens == 0
    assert second.prompt_tokens_details.cache_write_tokens == second.prompt_tokens


async def test_explicit_breakpoint_reads_the_stable_prefix_exactly(
    client: openai.AsyncOpenAI,
) -> None:
    marked = system({"mode": "explicit"})
    await usage(client, [marked, {"role": "user", "content": "question one"}])
    second = await usage(client, [marked, {"role": "user", "content": "question two"}])
    prefix = tokens(len("<|system|>") + len(STATIC))  # no rounding to 128-token steps
    assert second.prompt_tokens_details.cached_tokens == prefix
    assert prefix % 128 != 0
    write = second.prompt_tokens_details.cache_write_tokens
    assert write == second.prompt_tokens - prefix  # the implicit breakpoint at the end


async def test_implicit_breakpoint_carries_a_conversation(client: openai.AsyncOpenAI) -> None:
    turn = [system(), {"role": "user", "content": "question one"}]
    first = await usage(client, turn)
    later = [*turn, {"role": "assistant", "content": "answer"}, {"role": "user", "content": "2"}]
    second = await usage(client, later)
    assert second.prompt_tokens_details.cached_tokens == first.prompt_tokens


async def test_explicit_mode_without_breakpoints_does_not_cache(
    client: openai.AsyncOpenAI,
) -> None:
    msgs = [system(), {"role": "user", "content": "q"}]
    options = {"prompt_cache_options": {"mode": "explicit"}}
    await usage(client, msgs, **options)
    second = await usage(client, msgs, **options)
    assert second.prompt_tokens_details.cached_tokens == 0
    assert second.prompt_tokens_details.cache_write_tokens == 0


async def test_explicit_mode_writes_only_marked_prefixes(client: openai.AsyncOpenAI) -> None:
    msgs = [system({"mode": "explicit"}), {"role": "user", "content": "q"}]
    options = {"prompt_cache_options": {"mode": "explicit", "ttl": "30m"}}
    first = await usage(client, msgs, **options)
    assert first.prompt_tokens_details.cache_write_tokens == tokens(10 + len(STATIC))


async def test_options_with_retention_are_refused(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await usage(
            client,
            [system(), {"role": "user", "content": "q"}],
            prompt_cache_options={"mode": "implicit"},
            prompt_cache_retention="24h",
        )
    assert "prompt_cache_retention" in str(err.value)


async def test_chat_accepts_only_30m_as_request_ttl(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        await usage(
            client,
            [system(), {"role": "user", "content": "q"}],
            extra_body={"prompt_cache_options": {"ttl": "12h"}},
        )


@pytest.mark.parametrize(
    "extra",
    [
        {"prompt_cache_options": {"mode": "implicit"}},
        {"messages": [system({"mode": "explicit"}), {"role": "user", "content": "q"}]},
    ],
)
async def test_older_models_refuse_the_new_fields(
    client: openai.AsyncOpenAI, extra: dict[str, Any]
) -> None:
    body: dict[str, Any] = {
        "model": OLD,
        "messages": [system(), {"role": "user", "content": "q"}],
        "max_tokens": 5,
    } | extra
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(**body)
    assert "Unknown parameter" in str(err.value)


async def test_older_models_report_no_writes(client: openai.AsyncOpenAI) -> None:
    body: dict[str, Any] = {
        "model": OLD,
        "messages": [system(), {"role": "user", "content": "q"}],
        "max_tokens": 5,
    }
    completion = await client.chat.completions.create(**body)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cache_write_tokens is None


async def test_streamed_usage_carries_writes(client: openai.AsyncOpenAI) -> None:
    body: dict[str, Any] = {
        "model": NEW,
        "messages": [system(), {"role": "user", "content": "q"}],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    stream = await client.chat.completions.create(**body)
    last = None
    async for chunk in stream:
        last = chunk
    assert last is not None
    assert last.usage is not None
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cache_write_tokens == last.usage.prompt_tokens


async def test_responses_12h_writes_by_ttl(client: openai.AsyncOpenAI) -> None:
    items: list[Any] = [
        {
            "role": "developer",
            "content": [
                {
                    "type": "input_text",
                    "text": STATIC,
                    "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "12h"},
                }
            ],
        },
        {"role": "user", "content": "q"},
    ]
    response = await client.responses.create(model=NEW, input=items, max_output_tokens=16)
    assert response.usage is not None
    details = response.usage.input_tokens_details
    assert details.cache_write_tokens == response.usage.input_tokens
    assert details.cache_write_tokens_details is not None
    assert details.cache_write_tokens_details.ttl_12h_tokens == tokens(13 + len(STATIC))
    again = await client.responses.create(
        model=NEW, input=[items[0], {"role": "user", "content": "other"}], max_output_tokens=16
    )
    assert again.usage is not None
    assert again.usage.input_tokens_details.cached_tokens == tokens(13 + len(STATIC))
