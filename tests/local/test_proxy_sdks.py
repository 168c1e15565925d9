"""The official SDKs through the sidecar get exactly what they get from the upstream directly.

Each case makes the same call twice, once straight to the fake upstream and once through
the sidecar, with the sync and the async client, streamed and not, and compares what the
SDK hands the app. Then the sidecar's counters must hold the call's cache usage once:
cache reads and writes under streaming are where every peer gateway has had bugs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import openai
import pytest

from tests.local.conftest import CacheUsage, FakeUpstream, StartSidecar

KEY = "sk-test-key-0123456789abcdef"
SYSTEM = "You are the support agent of ACME. Policies follow. " * 40
QUESTION = "Where is my order 1234?"


def _anthropic_call(client: anthropic.Anthropic, *, stream: bool) -> Any:
    kwargs: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 200,
        "system": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": QUESTION}],
    }
    if not stream:
        return client.messages.create(**kwargs).model_dump()
    with client.messages.stream(**kwargs) as s:
        events = [e.model_dump() for e in s]
        return {"events": events, "final": s.get_final_message().model_dump()}


async def _anthropic_call_async(client: anthropic.AsyncAnthropic, *, stream: bool) -> Any:
    kwargs: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 200,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": QUESTION}],
    }
    if not stream:
        return (await client.messages.create(**kwargs)).model_dump()
    async with client.messages.stream(**kwargs) as s:
        events = [e.model_dump() async for e in s]
        return {"events": events, "final": (await s.get_final_message()).model_dump()}


def _chat_kwargs(stream: bool, include_usage: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTION},
        ],
    }
    if stream:
        kwargs["stream"] = True
        if include_usage:
            kwargs["stream_options"] = {"include_usage": True}
    return kwargs


def _openai_call(client: openai.OpenAI, *, stream: bool, include_usage: bool) -> Any:
    result = client.chat.completions.create(**_chat_kwargs(stream, include_usage))
    if not stream:
        return result.model_dump()
    return [chunk.model_dump(exclude={"usage"} if not include_usage else None) for chunk in result]


async def _openai_call_async(
    client: openai.AsyncOpenAI, *, stream: bool, include_usage: bool
) -> Any:
    result = await client.chat.completions.create(**_chat_kwargs(stream, include_usage))
    if not stream:
        return result.model_dump()
    return [
        chunk.model_dump(exclude={"usage"} if not include_usage else None) async for chunk in result
    ]


def _tokens(sc: Any, kind: str, provider: str, model: str) -> float:
    return float(
        sc.metric(
            "promptcache_input_tokens_total",
            kind=kind,
            provider=provider,
            model=model,
            policy="none",
        )
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_anthropic_sdk_same_answer_and_usage_counted_once(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, stream: bool, sync: bool
) -> None:
    fake_upstream.usage = CacheUsage(uncached=50, cache_read=3000, cache_write=700, output=12)
    sc = await start_sidecar()
    if sync:
        direct = await asyncio.to_thread(
            _anthropic_call,
            anthropic.Anthropic(api_key=KEY, base_url=fake_upstream.url, max_retries=0),
            stream=stream,
        )
        proxied = await asyncio.to_thread(
            _anthropic_call,
            anthropic.Anthropic(api_key=KEY, base_url=sc.url, max_retries=0),
            stream=stream,
        )
    else:
        async with (
            anthropic.AsyncAnthropic(api_key=KEY, base_url=fake_upstream.url, max_retries=0) as a,
            anthropic.AsyncAnthropic(api_key=KEY, base_url=sc.url, max_retries=0) as b,
        ):
            direct = await _anthropic_call_async(a, stream=stream)
            proxied = await _anthropic_call_async(b, stream=stream)
    assert proxied == direct
    final = proxied["final"] if stream else proxied
    assert final["usage"]["cache_read_input_tokens"] == 3000
    assert final["usage"]["cache_creation_input_tokens"] == 700
    # What went upstream is what the SDK sent directly (no planner change, no policy).
    assert fake_upstream.requests[1].body == fake_upstream.requests[0].body
    sent = fake_upstream.requests[1].headers
    assert KEY in sent.get("x-api-key", "") + sent.get("authorization", "")
    model = "claude-sonnet-4-6"
    assert _tokens(sc, "cache_read", "anthropic", model) == 3000
    assert _tokens(sc, "cache_write", "anthropic", model) == 700
    assert _tokens(sc, "uncached", "anthropic", model) == 50
    assert (
        sc.metric(
            "promptcache_output_tokens_total", provider="anthropic", model=model, policy="none"
        )
        == 12
    )
    assert (
        sc.metric(
            "promptcache_requests_total",
            provider="anthropic",
            model=model,
            policy="none",
            outcome="ok",
        )
        == 1
    )
    cost = sc.metric("promptcache_cost_usd_total", provider="anthropic", model=model, policy="none")
    without = sc.metric(
        "promptcache_cost_without_cache_usd_total", provider="anthropic", model=model, policy="none"
    )
    # Sonnet 4.x: $3/M input, $15/M output; read 0.1x, 5m write 1.25x.
    assert cost == pytest.approx((50 + 3000 * 0.1 + 700 * 1.25) * 3e-6 + 12 * 15e-6)
    assert without == pytest.approx((50 + 3000 + 700) * 3e-6 + 12 * 15e-6)


@pytest.mark.parametrize(
    ("stream", "include_usage"),
    [(False, False), (True, False), (True, True)],
    ids=["whole", "stream", "stream-with-usage"],
)
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_openai_sdk_same_answer_and_usage_counted_once(
    start_sidecar: StartSidecar,
    fake_upstream: FakeUpstream,
    stream: bool,
    include_usage: bool,
    sync: bool,
) -> None:
    fake_upstream.usage = CacheUsage(uncached=200, cache_read=2048, cache_write=0, output=9)
    sc = await start_sidecar()
    if sync:
        direct = await asyncio.to_thread(
            _openai_call,
            openai.OpenAI(api_key=KEY, base_url=fake_upstream.url + "/v1", max_retries=0),
            stream=stream,
            include_usage=include_usage,
        )
        proxied = await asyncio.to_thread(
            _openai_call,
            openai.OpenAI(api_key=KEY, base_url=sc.openai_url, max_retries=0),
            stream=stream,
            include_usage=include_usage,
        )
    else:
        async with (
            openai.AsyncOpenAI(api_key=KEY, base_url=fake_upstream.url + "/v1", max_retries=0) as a,
            openai.AsyncOpenAI(api_key=KEY, base_url=sc.openai_url, max_retries=0) as b,
        ):
            direct = await _openai_call_async(a, stream=stream, include_usage=include_usage)
            proxied = await _openai_call_async(b, stream=stream, include_usage=include_usage)
    # The app gets the same answer; in particular no usage chunk it did not ask for.
    assert proxied == direct
    if stream:
        assert all(chunk["choices"] for chunk in proxied) != include_usage
    model = "gpt-4o-mini"
    assert _tokens(sc, "cache_read", "openai", model) == 2048
    assert _tokens(sc, "uncached", "openai", model) == 200
    assert _tokens(sc, "cache_write", "openai", model) == 0
    assert fake_upstream.requests[1].headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_openai_responses_api_through_sidecar(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, stream: bool
) -> None:
    fake_upstream.usage = CacheUsage(uncached=100, cache_read=1024, output=7)
    sc = await start_sidecar()

    async def call(base_url: str) -> Any:
        async with openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0) as client:
            if not stream:
                return (
                    await client.responses.create(model="gpt-5-mini", input=QUESTION)
                ).model_dump()
            events = await client.responses.create(model="gpt-5-mini", input=QUESTION, stream=True)
            return [e.model_dump() async for e in events]

    assert await call(sc.openai_url) == await call(fake_upstream.url + "/v1")
    assert _tokens(sc, "cache_read", "openai", "gpt-5-mini") == 1024
    assert _tokens(sc, "uncached", "openai", "gpt-5-mini") == 100
