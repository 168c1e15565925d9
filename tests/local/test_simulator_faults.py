"""Each fault knob of the simulator, as the official SDKs experience it.

Per request: ``x-sim-fault`` (optionally only the first N requests of an
``x-sim-fault-key``); per run: ``SimConfig.faults`` (``--fault``). Status faults must
carry the provider's error body and headers; resets must look like network failures.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest

from promptcache.simulator import FaultRule, SimConfig, SimServer

MODEL = "claude-sonnet-4-6"
ASK: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 30,
    "messages": [{"role": "user", "content": "Where is my parcel?"}],
}
CHAT: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(SimConfig(time_scale=0.001)) as server:
        yield server


@pytest.fixture
async def claude(sim: SimServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0) as client:
        yield client


@pytest.fixture
async def gpt(sim: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0) as client:
        yield client


def fault(value: str, *, count: int | None = None, key: str | None = None) -> dict[str, str]:
    headers = {"x-sim-fault": value}
    if count is not None:
        headers["x-sim-fault-count"] = str(count)
    if key is not None:
        headers["x-sim-fault-key"] = key
    return headers


@pytest.mark.parametrize(
    ("kind", "status", "error_type", "exception"),
    [
        ("429", 429, "rate_limit_error", anthropic.RateLimitError),
        ("529", 529, "overloaded_error", anthropic.OverloadedError),
        ("500", 500, "api_error", anthropic.InternalServerError),
    ],
)
async def test_anthropic_status_faults(
    sim: SimServer,
    claude: anthropic.AsyncAnthropic,
    kind: str,
    status: int,
    error_type: str,
    exception: type[anthropic.APIStatusError],
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.url + "/v1/messages", json=ASK, headers=fault(kind)) as resp,
    ):
        body = await resp.json()
        headers = resp.headers
    assert resp.status == status
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert isinstance(body["error"]["message"], str)
    assert body["request_id"] == headers["request-id"]
    if kind == "429":
        assert headers["retry-after"] == "1"
        assert headers["retry-after-ms"] == "1000"
    with pytest.raises(exception) as raised:
        await claude.messages.create(**ASK, extra_headers=fault(kind))
    assert raised.value.status_code == status
    assert sim.stats()["faults"] == {kind: 2}


@pytest.mark.parametrize(
    ("kind", "status", "error_type", "code", "exception"),
    [
        ("429", 429, "requests", "rate_limit_exceeded", openai.RateLimitError),
        ("529", 503, "server_error", None, openai.InternalServerError),
        ("500", 500, "server_error", None, openai.InternalServerError),
    ],
)
async def test_openai_status_faults(
    gpt: openai.AsyncOpenAI,
    kind: str,
    status: int,
    error_type: str,
    code: str | None,
    exception: type[openai.APIStatusError],
) -> None:
    with pytest.raises(exception) as raised:
        await gpt.chat.completions.create(**CHAT, extra_headers=fault(kind))
    assert raised.value.status_code == status
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["type"] == error_type
    assert raised.value.body["code"] == code
    assert raised.value.body["param"] is None


async def test_retry_after_header_value(sim: SimServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.url + "/v1/messages", json=ASK, headers=fault("429:2.5")) as resp,
    ):
        assert resp.status == 429
        assert resp.headers["retry-after"] == "2"
        assert resp.headers["retry-after-ms"] == "2500"


async def test_fault_count_fails_only_the_first_requests_of_a_key(sim: SimServer) -> None:
    key = uuid.uuid4().hex
    headers = fault("429:0.01", count=2, key=key)
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=2) as client:
        message = await client.messages.create(**ASK, extra_headers=headers)
        again = await client.messages.create(**ASK, extra_headers=headers)
    assert message.usage.output_tokens == 30
    assert again.usage.output_tokens == 30
    assert sim.stats()["faults"] == {"429": 2}
    assert sim.stats()["by_api"]["anthropic"]["requests"] == 4
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0) as client:
        with pytest.raises(anthropic.RateLimitError):
            await client.messages.create(**ASK, extra_headers=fault("429", count=1, key="other"))


async def test_reset_before_any_byte(
    claude: anthropic.AsyncAnthropic, gpt: openai.AsyncOpenAI
) -> None:
    with pytest.raises(anthropic.APIConnectionError):
        await claude.messages.create(**ASK, extra_headers=fault("reset-before"))
    with pytest.raises(openai.APIConnectionError):
        await gpt.chat.completions.create(**CHAT, extra_headers=fault("reset-before"))


async def test_reset_during_the_stream(
    sim: SimServer, claude: anthropic.AsyncAnthropic, gpt: openai.AsyncOpenAI
) -> None:
    texts: list[str] = []
    chunks: list[Any] = []

    async def read_claude() -> None:
        async with claude.messages.stream(**ASK, extra_headers=fault("reset-during")) as stream:
            async for text in stream.text_stream:
                texts.append(text)

    async def read_gpt() -> None:
        response = await gpt.chat.completions.create(
            **CHAT, stream=True, extra_headers=fault("reset-during")
        )
        async for chunk in response:
            chunks.append(chunk)

    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        await read_claude()
    assert len(texts) == 2  # message_start and two deltas arrived, then the reset
    with pytest.raises(openai.APIConnectionError):
        await read_gpt()
    assert len(chunks) == 3  # the role chunk and two content chunks
    with pytest.raises(anthropic.APIConnectionError):
        await claude.messages.create(**ASK, extra_headers=fault("reset-during"))
    # The aborted requests were prefilled: their input is billed, their output partly.
    stats = sim.stats()["by_api"]["anthropic"]
    assert stats["errors"] == 2
    assert stats["tokens"]["uncached"] == 2 * 5


async def test_slow_headers_trip_a_client_timeout(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.APITimeoutError):
        await claude.messages.create(**ASK, extra_headers=fault("slow-headers:0.8"), timeout=0.2)
    message = await claude.messages.create(**ASK, extra_headers=fault("slow-headers=0.05"))
    assert message.usage.output_tokens == 30


async def test_run_faults_hit_a_share_and_the_header_opts_out() -> None:
    config = SimConfig(time_scale=0, faults=(FaultRule("500", rate=0.5),), seed=3)
    async with (
        SimServer(config) as sim,
        anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0) as client,
    ):
        failed = 0
        for _ in range(40):
            try:
                await client.messages.create(**ASK)
            except anthropic.InternalServerError:
                failed += 1
        spared = [
            await client.messages.create(**ASK, extra_headers=fault("none")) for _ in range(5)
        ]
        stats = sim.stats()
    assert 8 <= failed <= 32
    assert stats["faults"] == {"500": failed}
    assert len(spared) == 5


async def test_an_unknown_fault_is_a_loud_400(sim: SimServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.url + "/v1/messages", json=ASK, headers=fault("teapot")) as resp,
    ):
        assert resp.status == 400
        body = await resp.json()
    assert "unknown fault 'teapot'" in body["error"]["message"]
