"""OpenAI automatic prefix caching in the simulator, driven by the official SDK.

The rendered Chat prompt is ``<|system|>`` + system text + ``<|user|>`` + question, at
4 characters per token; chunks of 128 tokens are 512 characters. Tables cover the
1,024-token threshold, the 128-token steps, routing by ``prompt_cache_key`` over
machines, overflow past ~15 requests a minute, and retention on a ``ManualClock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from promptcache.simulator import CacheConfig, ManualClock, SimConfig, SimServer

FRAMING = len("<|system|>") + len("<|user|>") + len("q")


def system_of(total_chars: int, tag: str = "static") -> str:
    """System text making the whole rendered prompt ``total_chars`` long."""
    unit = f"{tag} rules of the support desk; "
    size = total_chars - FRAMING
    return (unit * (size // len(unit) + 1))[:size]


def messages(total_chars: int, tag: str = "static") -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": system_of(total_chars, tag)},
        {"role": "user", "content": "q"},
    ]


async def cached(client: openai.AsyncOpenAI, msgs: list[dict[str, Any]], **extra: Any) -> int:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": msgs, "max_tokens": 5, **extra}
    completion = await client.chat.completions.create(**body)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    return completion.usage.prompt_tokens_details.cached_tokens or 0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def start(clock: ManualClock, **config: Any) -> tuple[SimServer, openai.AsyncOpenAI]:
    server = SimServer(SimConfig(time_scale=0, clock=clock, **config))
    await server.start()
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
    return server, client


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[tuple[SimServer, openai.AsyncOpenAI]]:
    server, client = await start(clock)
    yield server, client
    await client.close()
    await server.stop()


@pytest.mark.parametrize(
    ("chars", "prompt_tokens", "expected"),
    [
        (4092, 1023, 0),
        (4096, 1024, 1024),
        (4607, 1152, 1024),
        (4608, 1152, 1152),
        (10_000, 2500, 19 * 128),
    ],
)
async def test_threshold_and_128_token_steps(
    sim: tuple[SimServer, openai.AsyncOpenAI], chars: int, prompt_tokens: int, expected: int
) -> None:
    _, client = sim
    msgs = messages(chars)
    body: dict[str, Any] = {"model": "gpt-4o", "messages": msgs, "max_tokens": 5}
    first = await client.chat.completions.create(**body)
    assert first.usage is not None
    assert first.usage.prompt_tokens == prompt_tokens
    assert await cached(client, msgs) == expected


async def test_hits_are_the_longest_cached_prefix(
    sim: tuple[SimServer, openai.AsyncOpenAI],
) -> None:
    _, client = sim
    turn1 = messages(6000)  # 11 full chunks
    turn2 = [
        *turn1,
        {"role": "assistant", "content": "a" * 1500},
        {"role": "user", "content": "b" * 1477},
    ]
    assert await cached(client, turn1) == 0
    assert await cached(client, turn2) == 11 * 128
    assert await cached(client, turn2) == 17 * 128  # 6,000 + 13 + 1,500 + 8 + 1,477 = 8,998 chars
    assert await cached(client, messages(6000, "changed")) == 0


async def test_prompt_cache_key_routes_to_machines(clock: ManualClock) -> None:
    msgs = messages(8000)
    for machines in (1, 4):
        server, client = await start(clock, machines=machines)
        try:
            reads = [await cached(client, msgs, prompt_cache_key=f"user-{i}") for i in range(16)]
            again = [await cached(client, msgs, prompt_cache_key="user-3") for _ in range(3)]
            busy = [n for n in server.stats()["cache_entries"]["openai"] if n]
        finally:
            await client.close()
            await server.stop()
        misses = reads.count(0)
        # A key always lands on the same machine; each machine misses its first request.
        assert misses == len(busy)
        assert all(r == 15 * 128 for r in reads if r)
        assert again == [15 * 128] * 3
        if machines == 1:
            assert misses == 1
        else:
            assert 2 <= misses <= 4


@pytest.mark.parametrize(
    ("overflow_rpm", "wait_s", "pattern"),
    [
        # 15 a minute stay on one machine; the 16th spills to a cold one, then it is warm.
        (15.0, 0, [0] + [1] * 14 + [0, 1]),
        # After a quiet minute the key is back on its own machine, still warm.
        (15.0, 61, [0] + [1] * 14 + [1, 1]),
        (0.0, 0, [0] + [1] * 16),
    ],
)
async def test_overflow_past_the_rate_of_one_prefix_and_key(
    clock: ManualClock, overflow_rpm: float, wait_s: float, pattern: list[int]
) -> None:
    cache = CacheConfig(openai_overflow_rpm=overflow_rpm)
    server, client = await start(clock, machines=4, cache=cache)
    msgs = messages(8000)
    try:
        hits = [int(await cached(client, msgs, prompt_cache_key="k") > 0) for _ in range(15)]
        clock.advance(wait_s)
        hits += [int(await cached(client, msgs, prompt_cache_key="k") > 0) for _ in range(2)]
    finally:
        await client.close()
        await server.stop()
    assert hits == pattern


@pytest.mark.parametrize(
    ("retention", "steps", "expected"),
    [
        (None, [599, 599, 601], [True, True, False]),
        ("in_memory", [500] * 8, [True] * 7 + [False]),  # 1 h hard limit despite use
        ("24h", [3 * 3600, 20 * 3600], [True, True]),
    ],
)
async def test_retention(
    sim: tuple[SimServer, openai.AsyncOpenAI],
    clock: ManualClock,
    retention: str | None,
    steps: list[int],
    expected: list[bool],
) -> None:
    _, client = sim
    extra = {"prompt_cache_retention": retention} if retention else {}
    msgs = messages(8000)
    assert await cached(client, msgs, **extra) == 0
    seen = []
    for seconds in steps:
        clock.advance(seconds)
        seen.append(await cached(client, msgs, **extra) > 0)
    assert seen == expected


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            {"model": "gpt-4o"},
            {
                "message": "Missing required parameter: 'messages'.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "missing_required_parameter",
            },
        ),
        (
            {"messages": [{"role": "user", "content": "q"}]},
            {
                "message": "you must provide a model parameter",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            },
        ),
        (
            {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "q"}],
                "prompt_cache_retention": "1d",
            },
            {
                "message": "Invalid value: '1d'. Supported values are: 'in_memory' and '24h'.",
                "type": "invalid_request_error",
                "param": "prompt_cache_retention",
                "code": "invalid_value",
            },
        ),
    ],
)
async def test_error_bodies(
    sim: tuple[SimServer, openai.AsyncOpenAI], body: dict[str, Any], error: dict[str, Any]
) -> None:
    server, client = sim
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url + "/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status == 400
        assert await resp.json() == {"error": error}
    with pytest.raises(openai.BadRequestError) as raised:
        await client.post("/chat/completions", body=body, cast_to=object)
    assert raised.value.code == error["code"]
    assert raised.value.param == error["param"]
