"""The 2026 provider features through the real sidecar, against the simulator.

* An extended-thinking tool loop (streamed and not): the turn of tool results stays
  tool results only while relocated context still reaches the model — as a
  mid-conversation system message on models that take one (Opus 4.8), inside the last
  tool result elsewhere (Sonnet 4.6) — and the loop's next step reads the cache.
* A top-level automatic ``cache_control`` with ``ttl: 1h``: the sidecar adds a 1h static
  marker before it, so calls with a changing question read the static prefix.
* GPT-5.6: a stable system prompt and a changing question read nothing on their own (the
  implicit breakpoint sits at the newest message); through the sidecar the breakpoint at
  the end of the static part makes the second call read it, writes are billed at 1.25x.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from promptcache.models import lookup
from promptcache.pricing import cost
from promptcache.sidecar.app import build_state, create_app
from promptcache.sidecar.config import SidecarSettings
from promptcache.simulator import ManualClock, SimConfig, SimServer
from promptcache.usage import Usage

STATIC = "Support desk rules that never change between calls. " * 200  # ~2,600 tokens
POLICY = """\
apiVersion: promptcache.io/v1alpha1
kind: PromptPolicy
metadata: {name: agent}
spec:
  provider: anthropic
  volatile: {action: relocate}
"""


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(SimConfig(time_scale=0, clock=ManualClock(), keep_bodies=4)) as s:
        yield s


@pytest.fixture
async def sidecar(sim: SimServer, tmp_path: Path) -> AsyncIterator[tuple[str, CollectorRegistry]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = SidecarSettings(anthropic_upstream=sim.url, openai_upstream=sim.url, policy=policy)
    registry = CollectorRegistry()
    server = TestServer(create_app(build_state(settings, registry=registry)), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), registry
    await server.close()


def system(minute: int) -> list[Any]:
    return [
        {"type": "text", "text": STATIC},
        {"type": "text", "text": f"Current time: 2026-12-04T10:{minute:02d}:00+00:00"},
    ]


def loop(steps: int) -> list[Any]:
    """A tool loop ``steps`` tool calls deep, with thinking blocks passed back."""
    messages: list[Any] = [{"role": "user", "content": "Where is order 42?"}]
    for n in range(steps):
        messages += [
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": f"look {n}", "signature": f"sig{n}"},
                    {"type": "tool_use", "id": f"toolu_{n}", "name": "status", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": "ok"}],
            },
        ]
    return messages


async def ask(client: anthropic.AsyncAnthropic, stream: bool, **body: Any) -> Any:
    if not stream:
        return await client.messages.create(**body)
    async with client.messages.stream(**body) as s:
        return await s.get_final_message()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("model", "where"),
    [("claude-opus-4-8", "system message"), ("claude-sonnet-4-6", "tool result")],
)
async def test_thinking_tool_loop(
    sim: SimServer, sidecar: tuple[str, CollectorRegistry], stream: bool, model: str, where: str
) -> None:
    url, _ = sidecar
    reads: list[int] = []
    async with anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0) as client:
        for step in (1, 2):
            body: dict[str, Any] = {
                "model": model,
                "max_tokens": 2048,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "tools": [{"name": "status", "input_schema": {"type": "object"}}],
                "system": system(step),
                "messages": loop(step),
            }
            reply = await ask(client, stream, **body)
            assert reply.content
            reads.append(reply.usage.cache_read_input_tokens or 0)
            sent = sim.simulation.bodies[-1]["messages"]
            turn = 2 * step  # the newest tool-results turn
            assert [b["type"] for b in sent[turn]["content"]] == ["tool_result"]
            if where == "system message":
                assert sent[turn + 1]["role"] == "system"
                assert "Current time" in sent[turn + 1]["content"][0]["text"]
                assert sent[turn]["content"] == body["messages"][turn]["content"]
            else:
                assert len(sent) == turn + 1
                inner = sent[turn]["content"][0]["content"]
                assert "Current time" in inner[-1]["text"]
            assert all("Current time" not in b["text"] for b in sim.simulation.bodies[-1]["system"])
    # The loop's second step reads the static prefix and the first step's history.
    assert reads[1] > len(STATIC) // 4


async def test_automatic_1h_marker_gains_a_static_prefix(
    sim: SimServer, sidecar: tuple[str, CollectorRegistry]
) -> None:
    url, _ = sidecar
    reads: list[int] = []
    async with anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0) as client:
        for minute in range(3):
            reply = await client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=16,
                cache_control={"type": "ephemeral", "ttl": "1h"},
                system=system(minute),
                messages=[{"role": "user", "content": f"question {minute}"}],
            )
            reads.append(reply.usage.cache_read_input_tokens or 0)
    sent = sim.simulation.bodies[-1]
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert reads[0] == 0
    assert all(r >= len(STATIC) // 4 for r in reads[1:]), reads


def chat(question: str) -> dict[str, Any]:
    return {
        "model": "gpt-5.6-terra",
        "max_tokens": 16,
        "messages": [
            {"role": "system", "content": STATIC},
            {"role": "user", "content": question},
        ],
    }


async def test_gpt_5_6_reads_the_static_prefix_only_through_the_sidecar(
    sim: SimServer, sidecar: tuple[str, CollectorRegistry]
) -> None:
    url, registry = sidecar
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0) as direct:
        await direct.chat.completions.create(**chat("first question"))
        alone = await direct.chat.completions.create(**chat("second question"))
    assert alone.usage is not None
    assert alone.usage.prompt_tokens_details is not None
    assert alone.usage.prompt_tokens_details.cached_tokens == 0  # the codex#35300 case
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client:
        first = await client.chat.completions.create(**chat("third question"))
        second = await client.chat.completions.create(**chat("fourth question"))
    sent = sim.simulation.bodies[-1]
    assert sent["messages"][0]["content"][0]["prompt_cache_breakpoint"] == {"mode": "explicit"}
    assert "prompt_cache_options" not in sent
    assert second.usage is not None
    assert second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens >= len(STATIC) // 4
    # Writes are priced at 1.25x in the sidecar's cost metric.
    billed = 0.0
    for reply in (first, second):
        assert reply.usage is not None
        details = reply.usage.prompt_tokens_details
        assert details is not None
        read, write = details.cached_tokens or 0, details.cache_write_tokens or 0
        usage = Usage(
            uncached=reply.usage.prompt_tokens - read - write,
            cache_read=read,
            cache_write_5m=write,
            output=reply.usage.completion_tokens,
        )
        billed += cost(usage, lookup("openai", "gpt-5.6-terra")).total
    metric = registry.get_sample_value(
        "promptcache_cost_usd_total",
        {"provider": "openai", "model": "gpt-5.6-terra", "policy": "agent"},
    )
    assert metric == pytest.approx(billed)
    assert (first.usage.prompt_tokens_details.cache_write_tokens or 0) > 0


async def test_bearer_keys_pass_every_route(tmp_path: Path) -> None:
    """SDK 2.x authenticates with ``Authorization: Bearer``; keys required upstream."""
    config = SimConfig(time_scale=0, clock=ManualClock(), require_auth=True)
    async with SimServer(config) as sim:
        settings = SidecarSettings(anthropic_upstream=sim.url, openai_upstream=sim.url)
        app = create_app(build_state(settings, registry=CollectorRegistry()))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        url = str(server.make_url("")).rstrip("/")
        try:
            async with (
                anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0) as claude,
                openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as gpt,
            ):
                ask: list[Any] = [{"role": "user", "content": "q"}]
                await claude.messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=ask)
                counted = await claude.messages.count_tokens(  # passed through untouched
                    model="claude-sonnet-4-6", messages=ask
                )
                assert counted.input_tokens > 0
                await gpt.chat.completions.create(model="gpt-4o", messages=ask, max_tokens=8)
                await gpt.responses.create(model="gpt-4o", input="q", max_output_tokens=16)
            assert sim.stats()["auth"] == {"bearer": 4}
        finally:
            await server.close()
