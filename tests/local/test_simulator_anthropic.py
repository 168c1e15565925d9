"""Anthropic caching conformance of the simulator, driven by the official SDK.

Each rule of providers.md gets a small table: a real simulator on a loopback port, the
``anthropic`` client pointed at it, and the usage it reports. Time is a ``ManualClock``
(TTL tests advance it), and ``time_scale=0`` so nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from anthropic.types import Message, Usage

from promptcache.simulator import LatencyConfig, ManualClock, SimConfig, SimServer

MODEL = "claude-sonnet-4-6"  # minimum cacheable prefix 1,024 tokens (models.yaml)


def text(tokens: int, tag: str = "static") -> str:
    """Text of exactly ``tokens`` tokens under the ~4 characters rule."""
    unit = f"{tag} instructions for the support agent. "
    return (unit * (tokens * 4 // len(unit) + 1))[: tokens * 4]


def block(tokens: int, tag: str = "static", ttl: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "text", "text": text(tokens, tag)}
    if ttl is not None:
        result["cache_control"] = {"type": "ephemeral", "ttl": ttl}
    return result


def split(usage: Usage) -> tuple[int, int, int]:
    """(input_tokens, cache_creation_input_tokens, cache_read_input_tokens)."""
    return (
        usage.input_tokens,
        usage.cache_creation_input_tokens or 0,
        usage.cache_read_input_tokens or 0,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[SimServer]:
    async with SimServer(SimConfig(time_scale=0, clock=clock)) as server:
        yield server


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="sk-test", max_retries=0) as c:
        yield c


async def create(client: anthropic.AsyncAnthropic, **body: Any) -> Message:
    body.setdefault("model", MODEL)
    body.setdefault("max_tokens", 20)
    message: Message = await client.messages.create(**body)
    return message


async def ask(client: anthropic.AsyncAnthropic, **body: Any) -> Usage:
    return (await create(client, **body)).usage


async def test_breakpoint_writes_then_reads(client: anthropic.AsyncAnthropic) -> None:
    system = [block(2000, ttl="5m")]
    first = await ask(client, system=system, messages=[{"role": "user", "content": "q1"}])
    second = await ask(client, system=system, messages=[{"role": "user", "content": "q2"}])
    assert split(first) == (1, 2000, 0)
    assert first.cache_creation is not None
    assert first.cache_creation.ephemeral_5m_input_tokens == 2000
    assert first.cache_creation.ephemeral_1h_input_tokens == 0
    assert split(second) == (1, 0, 2000)


async def test_multiple_breakpoints_write_each_stretch_at_its_ttl(
    client: anthropic.AsyncAnthropic,
) -> None:
    tools = [
        {
            "name": "lookup_order",
            "description": text(1500, "tool"),
            "input_schema": {"type": "object", "properties": {}},
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    system = [block(600, ttl="5m")]
    first = await ask(
        client, tools=tools, system=system, messages=[{"role": "user", "content": "hello"}]
    )
    written = first.cache_creation_input_tokens or 0
    tool_tokens = written - 600
    assert tool_tokens > 1500
    assert first.cache_creation is not None
    assert first.cache_creation.ephemeral_5m_input_tokens == 600
    assert first.cache_creation.ephemeral_1h_input_tokens == tool_tokens
    assert first.cache_read_input_tokens == 0
    # A new system block: the tools entry (1h) is still read, the rest is written again.
    changed = await ask(
        client,
        tools=tools,
        system=[block(600, "other", ttl="5m")],
        messages=[{"role": "user", "content": "hello"}],
    )
    assert split(changed) == (2, 600, tool_tokens)


@pytest.mark.parametrize(
    ("explicit", "top_level", "found"),
    [(4, False, None), (5, False, 5), (3, True, None), (4, True, 5)],
)
async def test_at_most_four_breakpoints(
    sim: SimServer,
    client: anthropic.AsyncAnthropic,
    explicit: int,
    top_level: bool,
    found: int | None,
) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 5,
        "system": [block(300, f"s{i}", ttl="5m") for i in range(explicit)],
        "messages": [{"role": "user", "content": "hi"}],
    }
    if top_level:
        body["cache_control"] = {"type": "ephemeral"}
    if found is None:
        await client.messages.create(**body)
        return
    with pytest.raises(anthropic.BadRequestError) as raised:
        await client.messages.create(**body)
    assert raised.value.status_code == 400
    error = raised.value.body
    assert isinstance(error, dict)
    assert error["type"] == "error"
    assert error["error"] == {
        "type": "invalid_request_error",
        "message": f"A maximum of 4 blocks with cache_control may be provided. Found {found}.",
    }
    assert str(error["request_id"]).startswith("req_")
    assert raised.value.response.headers["request-id"] == error["request_id"]


TTL_HINT = "Note that blocks are processed in the following order: `tools`, `system`, `messages`."


@pytest.mark.parametrize(
    ("tool_ttl", "system_ttls", "message_ttls", "top_level", "bad_path"),
    [
        ("5m", ["1h"], [], None, "system.0"),
        (None, ["1h", "5m"], ["5m"], None, None),
        (None, ["1h"], ["5m", "1h"], None, "messages.1.content.0"),
        (None, [], ["5m"], "1h", None),  # same target block: TTL conflict message below
        (None, ["5m"], [], "1h", ""),
        ("1h", ["1h"], ["1h"], "1h", None),
    ],
)
async def test_longer_ttl_must_come_first(
    client: anthropic.AsyncAnthropic,
    tool_ttl: str | None,
    system_ttls: list[str],
    message_ttls: list[str],
    top_level: str | None,
    bad_path: str | None,
) -> None:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 5}
    if tool_ttl:
        body["tools"] = [
            {
                "name": "t",
                "input_schema": {"type": "object"},
                "cache_control": {"type": "ephemeral", "ttl": tool_ttl},
            }
        ]
    body["system"] = [block(50, f"s{i}", ttl) for i, ttl in enumerate(system_ttls)] or "sys"
    turns: list[str | None] = [*message_ttls] or [None]
    body["messages"] = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": [block(10, f"m{i}", ttl)]}
        for i, ttl in enumerate(turns)
    ]
    if top_level:
        body["cache_control"] = {"type": "ephemeral", "ttl": top_level}
    conflict = top_level is not None and message_ttls and message_ttls[-1] != top_level
    if bad_path is None and not conflict:
        await client.messages.create(**body)
        return
    with pytest.raises(anthropic.BadRequestError) as raised:
        await client.messages.create(**body)
    assert isinstance(raised.value.body, dict)
    message = raised.value.body["error"]["message"]
    if conflict:
        assert message == (
            "Top-level cache_control has ttl='1h' but the target block already has "
            "cache_control with ttl='5m'"
        )
    else:
        prefix = f"{bad_path}." if bad_path else ""
        assert message == (
            f"{prefix}cache_control.ttl: a ttl='1h' cache_control block must not come after "
            f"a ttl='5m' cache_control block. {TTL_HINT}"
        )


@pytest.mark.parametrize(
    ("model", "prefix_tokens", "cached"),
    [
        ("claude-sonnet-4-6", 1023, False),
        ("claude-sonnet-4-6", 1024, True),
        ("claude-opus-4-7", 2047, False),
        ("claude-opus-4-7", 2048, True),
        ("claude-haiku-4-5", 4095, False),
        ("claude-haiku-4-5", 4096, True),
    ],
)
async def test_below_the_model_minimum_nothing_is_cached(
    client: anthropic.AsyncAnthropic, model: str, prefix_tokens: int, cached: bool
) -> None:
    system = [block(prefix_tokens, ttl="5m")]
    messages = [{"role": "user", "content": "q"}]
    first = await ask(client, model=model, system=system, messages=messages)
    second = await ask(client, model=model, system=system, messages=messages)
    if cached:
        assert split(first) == (1, prefix_tokens, 0)
        assert split(second) == (1, 0, prefix_tokens)
    else:
        assert split(first) == (prefix_tokens + 1, 0, 0)
        assert split(second) == (prefix_tokens + 1, 0, 0)


def conversation(turns: int, *, marker: bool = True) -> list[dict[str, Any]]:
    """``turns`` alternating 10-token messages, the last one marked."""
    messages: list[dict[str, Any]] = []
    for i in range(turns):
        last = i == turns - 1
        content = block(10, f"turn{i}", "5m" if marker and last else None)
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": [content]})
    return messages


@pytest.mark.parametrize(("new_blocks", "read"), [(2, 2010), (20, 2010), (21, 0)])
async def test_lookback_finds_the_previous_turn_within_20_blocks(
    client: anthropic.AsyncAnthropic, new_blocks: int, read: int
) -> None:
    system = [block(2000)]
    first = await ask(client, system=system, messages=conversation(1))
    assert split(first) == (0, 2010, 0)
    grown = await ask(client, system=system, messages=conversation(1 + new_blocks))
    total = 2010 + 10 * new_blocks
    assert split(grown) == (0, total - read, read)


async def test_simultaneous_first_requests_all_write() -> None:
    # Prefill of 2,000 tokens takes 1 simulated second = 0.5 s here; no jitter.
    latency = LatencyConfig(
        fixed_s=0.0, prefill_tokens_per_s=2000.0, jitter=0.0, tail_probability=0
    )
    config = SimConfig(time_scale=0.5, latency=latency, clock=ManualClock())
    system = [block(2000, ttl="5m")]
    async with (
        SimServer(config) as sim,
        anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0) as client,
    ):

        async def one(question: str) -> Usage:
            return await ask(
                client,
                max_tokens=0,
                system=system,
                messages=[{"role": "user", "content": question}],
            )

        together = await asyncio.gather(one("a"), one("b"))
        after = await one("c")
    assert [split(u) for u in together] == [(1, 2000, 0), (1, 2000, 0)]
    assert split(after) == (1, 0, 2000)


@pytest.mark.parametrize(
    ("ttl", "steps", "expected_reads"),
    [
        ("5m", [299, 299, 301], [True, True, False]),
        ("1h", [299, 3599, 3601], [True, True, False]),
        ("1h", [301, 1800], [True, True]),
    ],
)
async def test_ttl_expires_unless_refreshed_by_a_hit(
    client: anthropic.AsyncAnthropic,
    clock: ManualClock,
    ttl: str,
    steps: list[int],
    expected_reads: list[bool],
) -> None:
    system = [block(2000, ttl=ttl)]
    messages = [{"role": "user", "content": "q"}]
    assert split(await ask(client, system=system, messages=messages)) == (1, 2000, 0)
    reads = []
    for seconds in steps:
        clock.advance(seconds)
        usage = await ask(client, system=system, messages=messages)
        reads.append(split(usage)[2] == 2000)
    assert reads == expected_reads


async def test_top_level_cache_control_marks_the_last_cacheable_block(
    client: anthropic.AsyncAnthropic,
) -> None:
    auto = {"type": "ephemeral"}
    system = text(2000)  # a plain string: in the prefix, but it cannot carry a marker
    one = [{"role": "user", "content": "question one"}]  # 3 tokens
    first = await ask(client, system=system, messages=one, cache_control=auto)
    again = await ask(client, system=system, messages=one, cache_control=auto)
    three = [*one, {"role": "assistant", "content": "answer"}, {"role": "user", "content": "more"}]
    grown = await ask(client, system=system, messages=three, cache_control=auto)
    plain = await ask(client, system=system, messages=one)
    assert split(first) == (0, 2003, 0)
    assert split(again) == (0, 0, 2003)
    assert split(grown) == (0, 3, 2003)
    assert split(plain) == (2003, 0, 0)


@pytest.mark.parametrize(
    ("change", "read"),
    # tools 4 tokens, system 2,000 (marked), history 600 (marked)
    [
        ({}, 2604),
        ({"tools": [{"name": "other", "input_schema": {"type": "object"}}]}, 0),
        ({"tool_choice": {"type": "any"}}, 2004),
        ({"system": [block(2000, "changed", ttl="5m")]}, 0),
    ],
)
async def test_what_invalidates_which_tier(
    client: anthropic.AsyncAnthropic, change: dict[str, Any], read: int
) -> None:
    base: dict[str, Any] = {
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto"},
        "system": [block(2000, ttl="5m")],
        "messages": [{"role": "user", "content": [block(600, "history", ttl="5m")]}],
    }
    await ask(client, **base)
    usage = await ask(client, **(base | change))
    assert split(usage)[2] == read


async def test_tool_use_key_order_is_part_of_the_prefix(client: anthropic.AsyncAnthropic) -> None:
    def history(tool_input: dict[str, Any]) -> list[dict[str, Any]]:
        use = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": tool_input}
        result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": text(1500, "r")}
        return [
            {"role": "user", "content": "find my order"},
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [result | {"cache_control": {"type": "ephemeral"}}]},
        ]

    await ask(client, messages=history({"order": 1, "user": 2}))
    same = await ask(client, messages=history({"order": 1, "user": 2}))
    reordered = await ask(client, messages=history({"user": 2, "order": 1}))
    assert split(same)[2] > 1500
    assert split(reordered)[2] == 0


async def test_max_tokens_zero_prewarms_the_cache(client: anthropic.AsyncAnthropic) -> None:
    system = [block(2000, ttl="1h")]
    warm = await create(
        client, max_tokens=0, system=system, messages=[{"role": "user", "content": "x"}]
    )
    assert warm.content == []
    assert warm.stop_reason == "max_tokens"
    assert warm.usage.output_tokens == 0
    assert warm.usage.cache_creation is not None
    assert warm.usage.cache_creation.ephemeral_1h_input_tokens == 2000
    used = await ask(client, system=system, messages=[{"role": "user", "content": "x"}])
    assert split(used) == (1, 0, 2000)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"max_tokens": 5, "messages": [{"role": "user", "content": "q"}]},
            "model: Field required",
        ),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "q"}]},
            "max_tokens: Field required",
        ),
        ({"model": MODEL, "max_tokens": 5}, "messages: Field required"),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "", "cache_control": {"type": "ephemeral"}}
                        ],
                    }
                ],
            },
            "messages.0.content.0.text: cache_control cannot be set for empty text blocks",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "system": [block(5, ttl="2h")],
                "messages": [{"role": "user", "content": "q"}],
            },
            "system.0.cache_control.ephemeral.ttl: Input should be '5m' or '1h'",
        ),
    ],
)
async def test_invalid_requests_get_the_api_error_body(
    client: anthropic.AsyncAnthropic, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        await client.post("/v1/messages", body=body, cast_to=object)
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"] == {"type": "invalid_request_error", "message": message}
