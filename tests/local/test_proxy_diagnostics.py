"""Anthropic cache diagnostics chained by the sidecar (``--anthropic-diagnostics``).

The real sidecar in front of the simulator, the official SDK as the app (which sends no
``diagnostics`` of its own): off by default the field never goes upstream; on, each
request carries the id of the response it continues, the provider's verdict is counted
beside the sidecar's diagnosis, and disagreements are counted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from anthropic.types import TextBlockParam
from prometheus_client import CollectorRegistry

from promptcache.sidecar.app import build_state, create_app
from promptcache.sidecar.config import SidecarSettings
from promptcache.simulator import ManualClock, SimConfig, SimServer

MODEL = "claude-sonnet-4-6"
STATIC = "Support desk rules that never change between calls. " * 200
Start = Callable[..., Awaitable[tuple[anthropic.AsyncAnthropic, CollectorRegistry]]]


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(SimConfig(time_scale=0, clock=ManualClock())) as s:
        yield s


@pytest.fixture
async def start(sim: SimServer, tmp_path: Path) -> AsyncIterator[Start]:
    servers: list[TestServer] = []
    clients: list[anthropic.AsyncAnthropic] = []

    async def go(
        *, policy: str | None = None, **settings: Any
    ) -> tuple[anthropic.AsyncAnthropic, CollectorRegistry]:
        path = None
        if policy is not None:
            path = tmp_path / "policy.yaml"
            path.write_text(policy)
        config = SidecarSettings(
            anthropic_upstream=sim.url, openai_upstream=sim.url, policy=path, **settings
        )
        registry = CollectorRegistry()
        server = TestServer(create_app(build_state(config, registry=registry)), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        client = anthropic.AsyncAnthropic(
            base_url=str(server.make_url("")).rstrip("/"), api_key="k", max_retries=0
        )
        clients.append(client)
        return client, registry

    yield go
    for client in clients:
        await client.close()
    for server in servers:
        await server.close()


def system(text: str = STATIC) -> list[TextBlockParam]:
    return [{"type": "text", "text": text}]


async def conversation(client: anthropic.AsyncAnthropic, *, last_system: str = STATIC) -> None:
    """Three turns; the third changes the system prompt."""
    history: list[Any] = [{"role": "user", "content": "first question"}]
    for turn in range(3):
        reply = await client.messages.create(
            model=MODEL,
            max_tokens=16,
            system=system(last_system if turn == 2 else STATIC),
            messages=history,
        )
        history += [
            {"role": "assistant", "content": reply.content[0].text},  # type: ignore[union-attr]
            {"role": "user", "content": f"question {turn + 2}"},
        ]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


async def test_off_by_default_nothing_is_sent(start: Start, sim: SimServer) -> None:
    client, _ = await start()
    await conversation(client)
    assert sim.stats()["diagnostics_fingerprints"] == 0


async def test_chained_and_recorded(start: Start, sim: SimServer) -> None:
    client, registry = await start(anthropic_diagnostics=True)
    await conversation(client, last_system=STATIC + " Changed today.")
    assert sim.stats()["diagnostics_fingerprints"] == 3
    name = "promptcache_provider_cache_miss_reasons_total"
    # Turn 2 continues turn 1 unchanged (whatever the sidecar makes of its read, it is not
    # a changed prefix); turn 3 changed the system prompt, which the sidecar sees as a
    # changed or a new prefix. They agree both times.
    assert sample(registry, name, policy="none", reason="none") == 1
    changed = sample(registry, name, policy="none", reason="system_changed")
    assert changed == 1
    assert (
        sample(registry, name, reason="system_changed", sidecar_reason="prefix_changed")
        + sample(registry, name, reason="system_changed", sidecar_reason="first_write")
        == 1
    )
    assert sample(registry, "promptcache_cache_miss_disagreements_total", policy="none") == 0


async def test_an_edited_history_is_a_disagreement(start: Start, sim: SimServer) -> None:
    client, registry = await start(anthropic_diagnostics=True)
    first = await client.messages.create(
        model=MODEL, max_tokens=16, system=system(), messages=[{"role": "user", "content": "q1"}]
    )
    del first
    edited: list[Any] = [
        {"role": "user", "content": "q1 (edited)"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "q2"},
    ]
    # The app rewrote its first question: no stored history matches, so the sidecar finds
    # no previous response and sends null; nothing to compare, nothing counted.
    await client.messages.create(model=MODEL, max_tokens=16, system=system(), messages=edited)
    assert sample(registry, "promptcache_cache_miss_disagreements_total", policy="none") == 0
    assert sim.stats()["diagnostics_fingerprints"] == 2


async def test_app_diagnostics_left_alone(start: Start, sim: SimServer) -> None:
    client, _ = await start(anthropic_diagnostics=True)
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 16,
        "system": system(),
        "messages": [{"role": "user", "content": "q"}],
        "diagnostics": {"previous_message_id": "msg_from_the_app"},
    }
    reply = await client.messages.create(**body)
    assert reply.diagnostics is not None
    assert reply.diagnostics.cache_miss_reason is not None
    assert reply.diagnostics.cache_miss_reason.type == "previous_message_not_found"


async def test_a_policy_opts_out(start: Start, sim: SimServer) -> None:
    policy = (
        "apiVersion: promptcache.io/v1alpha1\nkind: PromptPolicy\nmetadata: {name: quiet}\n"
        "spec:\n  provider: anthropic\n  anthropicDiagnostics: false\n"
    )
    client, _ = await start(anthropic_diagnostics=True, policy=policy)
    await conversation(client)
    assert sim.stats()["diagnostics_fingerprints"] == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_streamed_answers_chain_too(start: Start, sim: SimServer, stream: bool) -> None:
    client, registry = await start(anthropic_diagnostics=True)
    history: list[Any] = [{"role": "user", "content": "q1"}]
    for turn in range(2):
        if stream:
            async with client.messages.stream(
                model=MODEL, max_tokens=16, system=system(), messages=history
            ) as s:
                text = await s.get_final_text()
        else:
            reply = await client.messages.create(
                model=MODEL, max_tokens=16, system=system(), messages=history
            )
            text = reply.content[0].text  # type: ignore[union-attr]
        history += [{"role": "assistant", "content": text}, {"role": "user", "content": f"q{turn}"}]
    name = "promptcache_provider_cache_miss_reasons_total"
    assert sample(registry, name, policy="none", reason="none") == 1
    assert sample(registry, "promptcache_cache_miss_disagreements_total") == 0


async def test_an_upstream_that_refuses_the_field_gets_the_apps_bytes_once(
    tmp_path: Path,
) -> None:
    """A gateway in front of Anthropic that does not know ``diagnostics`` (400)."""
    seen: list[dict[str, Any]] = []

    async def messages(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        if "diagnostics" in body:
            error = {"type": "invalid_request_error",
                     "message": "diagnostics: Extra inputs are not permitted"}  # fmt: skip
            return web.json_response({"type": "error", "error": error}, status=400)
        usage = {"input_tokens": 5, "output_tokens": 1}
        return web.json_response(
            {
                "id": f"msg_{len(seen)}",
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": usage,
            }
        )

    gateway = web.Application()
    gateway.router.add_post("/v1/messages", messages)
    upstream = TestServer(gateway, host="127.0.0.1")
    await upstream.start_server()
    base = str(upstream.make_url("")).rstrip("/")
    settings = SidecarSettings(
        anthropic_upstream=base, openai_upstream=base, anthropic_diagnostics=True
    )
    server = TestServer(create_app(build_state(settings, registry=CollectorRegistry())))
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        async with anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0) as client:
            for question in ("q1", "q2"):
                reply = await client.messages.create(
                    model=MODEL, max_tokens=8, messages=[{"role": "user", "content": question}]
                )
                assert reply.content
    finally:
        await server.close()
        await upstream.close()
    # The first call: refused with the field, answered without it; the second goes
    # without it straight away.
    assert ["diagnostics" in b for b in seen] == [True, False, False]
