"""Streams are relayed as they happen; the sidecar adapts to what the upstream accepts.

* the first event reaches the app while the upstream is still holding the rest back;
* an app that hangs up mid-stream frees the upstream connection and the sidecar serves on;
* an OpenAI-compatible server that refuses ``stream_options`` gets the app's own bytes;
* a gzip-compressed answer is relayed compressed, and its usage is still counted.
"""

from __future__ import annotations

import asyncio
import gzip
import json

import aiohttp
import openai
from aiohttp import web

from tests.local.conftest import (
    Behaviour,
    CacheUsage,
    FakeUpstream,
    StartSidecar,
    stream_events,
)


def held_stream(
    release: asyncio.Event, sent_first: asyncio.Event, *, pace: float = 0.0
) -> Behaviour:
    """An Anthropic stream that sends its first event, then waits for ``release``
    (then sends the rest ``pace`` seconds apart)."""

    async def behave(request: web.Request) -> web.StreamResponse:
        payload = json.loads(await request.read())
        events = stream_events("anthropic", payload, CacheUsage())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(events[0])
        sent_first.set()
        await asyncio.wait_for(release.wait(), timeout=10)
        for event in events[1:]:
            await asyncio.sleep(pace)
            await response.write(event)
        await response.write_eof()
        return response

    return behave


BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 5,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


async def test_first_event_arrives_before_the_upstream_finishes(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar()
    release, sent_first = asyncio.Event(), asyncio.Event()
    fake_upstream.then(held_stream(release, sent_first))
    async with (
        aiohttp.ClientSession() as http,
        http.post(sc.url + "/v1/messages", json=BODY) as r,
    ):
        first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), timeout=5)
        assert first.startswith(b"event: message_start")
        assert not release.is_set()  # the rest is still upstream
        release.set()
        rest = await r.read()
    assert rest.rstrip().endswith(b'data: {"type":"message_stop"}')
    assert (
        sc.metric(
            "promptcache_input_tokens_total",
            kind="cache_read",
            provider="anthropic",
            model="claude-sonnet-4-6",
            policy="none",
        )
        == CacheUsage().cache_read
    )


async def test_app_hanging_up_mid_stream(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar()
    release, sent_first = asyncio.Event(), asyncio.Event()
    fake_upstream.then(held_stream(release, sent_first, pace=0.05))
    async with aiohttp.ClientSession() as http:
        r = await http.post(sc.url + "/v1/messages", json=BODY)
        await r.content.readuntil(b"\n\n")
        r.close()  # the app goes away
        release.set()

        async def counted() -> bool:
            return (
                sc.metric(
                    "promptcache_requests_total",
                    provider="anthropic",
                    model="claude-sonnet-4-6",
                    policy="none",
                    outcome="client_closed",
                )
                == 1
            )

        for _ in range(300):
            if await counted():
                break
            await asyncio.sleep(0.05)
        assert await counted()
        async with http.post(sc.url + "/v1/messages", json=BODY | {"stream": False}) as again:
            assert again.status == 200


async def test_upstream_refusing_stream_options_gets_the_original(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    async def strict(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b"stream_options" in body:
            error = {"error": {"message": "Unrecognized request argument: stream_options"}}
            return web.json_response(error, status=400)
        return await fake_upstream.answer(request, body)

    sc = await start_sidecar()
    fake_upstream.then(strict, strict)
    async with openai.AsyncOpenAI(api_key="k", base_url=sc.openai_url, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="llama-3", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert chunks
    sent = [r.body for r in fake_upstream.requests]
    assert b"stream_options" in sent[0]
    assert b"stream_options" not in sent[1]
    assert (
        sc.metric(
            "promptcache_transform_errors_total", provider="openai", stage="upstream_rejected"
        )
        == 1
    )


async def test_gzip_answer_relayed_compressed_and_counted(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    async def gzipped(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        answer = await fake_upstream.answer(request, body)
        assert isinstance(answer, web.Response)
        assert answer.body is not None
        raw = answer.body if isinstance(answer.body, bytes) else b""
        return web.Response(
            body=gzip.compress(raw),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )

    sc = await start_sidecar()
    fake_upstream.then(gzipped)
    async with openai.AsyncOpenAI(api_key="k", base_url=sc.openai_url, max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.usage is not None
    assert fake_upstream.requests[0].headers["accept-encoding"].startswith("gzip")
    assert (
        sc.metric(
            "promptcache_input_tokens_total",
            kind="cache_read",
            provider="openai",
            model="gpt-4o",
            policy="none",
        )
        == CacheUsage().cache_read
    )
