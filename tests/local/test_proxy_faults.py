"""A misbehaving upstream: retries where a retry is safe, provider-shaped errors where not.

Retries happen only before the first response byte (connection failures, 429/503/529),
honour ``retry-after`` up to a cap, and never repeat a spend-limit 429. Retries never
multiply: a client that retries by itself (the official SDKs) gets each status at once,
and a client that does not gets ``x-should-retry: false`` once the sidecar's are spent. Faults the
sidecar cannot fix become 502 (unreachable) or 504 (timeout) in the provider's error
shape; a stream that breaks midway ends with a provider-shaped error event, and the
sidecar keeps serving.
"""

from __future__ import annotations

import aiohttp
import anthropic
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from tests.local.conftest import (
    FakeUpstream,
    Sidecar,
    StartSidecar,
    free_port,
    reset_before_headers,
    reset_mid_stream,
    slow_headers,
    status,
)

KEY = "sk-test-key-faults"
MODEL = "claude-haiku-4-5"
MESSAGES: list[MessageParam] = [{"role": "user", "content": "hello"}]
CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def _anthropic(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=KEY, base_url=url, max_retries=0)


async def _post_without_sdk(sc: Sidecar) -> tuple[int, dict[str, object], str | None]:
    """One call from a client that does not retry by itself (no ``x-stainless-*`` headers):
    status, JSON body and the ``x-should-retry`` header of the answer."""
    body = {"model": MODEL, "max_tokens": 10, "messages": MESSAGES}
    async with (
        aiohttp.ClientSession() as http,
        http.post(sc.url + "/v1/messages", json=body, headers={"x-api-key": KEY}) as resp,
    ):
        return resp.status, await resp.json(), resp.headers.get("x-should-retry")


def _retries(sc: Sidecar, provider: str, reason: str) -> float:
    return sc.metric("promptcache_upstream_retries_total", provider=provider, reason=reason)


async def test_429_with_retry_after_is_retried_then_succeeds(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar()
    fake_upstream.then(status(429, headers={"retry-after": "0.05"}))
    code, message, _ = await _post_without_sdk(sc)
    assert code == 200
    assert message["type"] == "message"
    assert len(fake_upstream.requests) == 2
    assert _retries(sc, "anthropic", "status_429") == 1


@pytest.mark.parametrize("code", [503, 529])
async def test_overloaded_is_retried_then_relayed_when_it_persists(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, code: int
) -> None:
    sc = await start_sidecar(retry_max_attempts=3)
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake_upstream.then(*[status(code, overloaded)] * 3)
    answered, body, should_retry = await _post_without_sdk(sc)
    assert answered == code
    assert body == overloaded  # the upstream's own answer, relayed
    assert should_retry == "false"  # the sidecar's attempts are spent: none on top
    assert len(fake_upstream.requests) == 3
    assert _retries(sc, "anthropic", f"status_{code}") == 2


async def test_spend_limit_429_is_never_retried(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar()
    limit = {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "enforced_spend_limit_reached"},
    }
    fake_upstream.then(status(429, limit, headers={"retry-after": "0"}))
    async with _anthropic(sc.url) as client:
        with pytest.raises(anthropic.RateLimitError):
            await client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert len(fake_upstream.requests) == 1
    assert _retries(sc, "anthropic", "status_429") == 0


async def test_retry_after_beyond_cap_is_left_to_the_app(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar(retry_after_max=1.0)
    fake_upstream.then(status(429, headers={"retry-after": "30"}))
    async with _anthropic(sc.url) as client:
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "30"
    assert len(fake_upstream.requests) == 1


async def test_bad_request_is_not_retried(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar()
    fake_upstream.then(status(400))
    async with _anthropic(sc.url) as client:
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert len(fake_upstream.requests) == 1


async def test_connection_refused_is_a_provider_shaped_502(start_sidecar: StartSidecar) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sc = await start_sidecar(anthropic_upstream=dead, openai_upstream=dead)
    async with _anthropic(sc.url) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert dead in body["error"]["message"]
    async with openai.AsyncOpenAI(api_key=KEY, base_url=sc.openai_url, max_retries=0) as oai:
        with pytest.raises(openai.APIStatusError) as ocaught:
            await oai.chat.completions.create(model="gpt-4o", messages=CHAT)
    assert ocaught.value.status_code == 502
    assert isinstance(ocaught.value.body, dict)
    assert set(ocaught.value.body) == {"message", "type", "param", "code"}
    assert _retries(sc, "anthropic", "connection") == 2
    assert (
        sc.metric(
            "promptcache_requests_total",
            provider="anthropic",
            model=MODEL,
            policy="none",
            outcome="unreachable",
        )
        == 1
    )


async def test_reset_before_first_byte_is_retried(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar()
    fake_upstream.then(reset_before_headers())
    async with _anthropic(sc.url) as client:
        message = await client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert message.usage.cache_read_input_tokens == fake_upstream.usage.cache_read
    assert _retries(sc, "anthropic", "connection") == 1


async def test_reset_every_time_is_a_502(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar(retry_max_attempts=2)
    fake_upstream.then(reset_before_headers(), reset_before_headers())
    async with _anthropic(sc.url) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert caught.value.status_code == 502


async def test_reset_mid_stream_ends_with_an_error_event_and_sidecar_stays_up(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar()
    fake_upstream.then(reset_mid_stream(events=3))
    received: list[str] = []

    async def consume(client: anthropic.AsyncAnthropic) -> None:
        async with client.messages.stream(model=MODEL, max_tokens=10, messages=MESSAGES) as s:
            async for event in s:
                received.append(event.type)

    async with _anthropic(sc.url) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await consume(client)
        assert "broke off the stream" in str(caught.value)
        assert received[0] == "message_start"  # what had arrived was relayed first
        # The sidecar is healthy: the next call works.
        again = await client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
        assert again.content
    assert (
        sc.metric(
            "promptcache_requests_total",
            provider="anthropic",
            model=MODEL,
            policy="none",
            outcome="stream_error",
        )
        == 1
    )
    async with aiohttp.ClientSession() as http, http.get(sc.admin_url + "/healthz") as r:
        assert r.status == 200


async def test_openai_reset_mid_stream_raises_in_the_sdk(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar()
    fake_upstream.then(reset_mid_stream(events=2))
    async with openai.AsyncOpenAI(api_key=KEY, base_url=sc.openai_url, max_retries=0) as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=CHAT, stream=True)
        with pytest.raises(openai.APIError, match="broke off the stream"):
            async for _ in stream:
                pass


@pytest.mark.parametrize(
    "timeouts",
    [
        {"upstream_headers_timeout": 0.3},
        {"upstream_headers_timeout": 0.3, "upstream_read_timeout": 0.3},
    ],
    ids=["headers-deadline", "read-timeout"],
)
async def test_slow_headers_become_a_504(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, timeouts: dict[str, float]
) -> None:
    sc = await start_sidecar(**timeouts)
    fake_upstream.then(slow_headers(5.0))
    async with _anthropic(sc.url) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert caught.value.status_code == 504
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "timeout_error"
    assert fake_upstream.url in body["error"]["message"]
    assert len(fake_upstream.requests) == 1  # a timeout is not retried


async def test_retry_waits_fit_the_budget(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar(retry_budget=0.2)
    fake_upstream.then(status(529, headers={"retry-after": "1"}))
    async with _anthropic(sc.url) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert caught.value.status_code == 529  # a 1 s wait does not fit a 0.2 s budget
    assert len(fake_upstream.requests) == 1


async def _faults(simulator: str, kind: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(simulator + "/sim/stats") as resp:
        stats = await resp.json()
    return int(stats["faults"].get(kind, 0))


@pytest.mark.parametrize("kind", ["429", "529"])
async def test_sdk_retries_are_not_multiplied(
    start_sidecar: StartSidecar, simulator_url: str, kind: str
) -> None:
    """The official SDKs at their default retries (2) against a provider that always
    refuses: the provider sees 3 attempts per call, as it would without the sidecar."""
    sc = await start_sidecar(anthropic_upstream=simulator_url, openai_upstream=simulator_url)
    fault = {"x-sim-fault": f"{kind}=0"}  # always, with ``retry-after: 0`` for a 429
    async with anthropic.AsyncAnthropic(
        api_key=KEY, base_url=sc.url, default_headers=fault
    ) as claude:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await claude.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert caught.value.status_code == int(kind)
    assert await _faults(simulator_url, kind) == 3
    async with openai.AsyncOpenAI(
        api_key=KEY, base_url=sc.openai_url, default_headers=fault
    ) as gpt:
        with pytest.raises(openai.APIStatusError) as ocaught:
            await gpt.chat.completions.create(model="gpt-4o", messages=CHAT)
    assert ocaught.value.status_code == (503 if kind == "529" else 429)  # OpenAI's overload
    assert await _faults(simulator_url, kind) == 6
    assert _retries(sc, "anthropic", f"status_{kind}") == 0
