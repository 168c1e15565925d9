"""Without tracing, calls are counted after their answers (the ledger's backlog), yet exactly.

The span-less path is the one ``promptcache sidecar`` runs when no OTLP endpoint is set:
each answered call waits in ``sidecar.ledger.Backlog`` until the next call is on its way
upstream or the loop is idle. Whatever reads the metrics in between sees every call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from promptcache.sidecar.app import build_state, create_app
from promptcache.sidecar.config import SidecarSettings
from promptcache.sidecar.planner import MissReason, Plan, Planner
from promptcache.usage import Usage
from tests.local.conftest import CacheUsage, FakeUpstream


class Outcomes(Planner):
    """The real planner, noting each outcome it is told about."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, float]] = []

    def record_outcome(self, plan: Plan, usage: Usage, now: float) -> MissReason | None:
        self.seen.append((usage.cache_read, now))
        return super().record_outcome(plan, usage, now)


@pytest.fixture
async def untraced(
    fake_upstream: FakeUpstream,
) -> AsyncIterator[tuple[str, CollectorRegistry, Outcomes]]:
    settings = SidecarSettings(
        anthropic_upstream=fake_upstream.url, openai_upstream=fake_upstream.url
    )
    registry = CollectorRegistry()
    planner = Outcomes()
    state = build_state(settings, registry=registry, tracer_provider=None, planner=planner)
    server = TestServer(create_app(state), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), registry, planner
    finally:
        await server.close()


async def test_untraced_calls_are_counted_exactly_and_in_order(
    untraced: tuple[str, CollectorRegistry, Outcomes], fake_upstream: FakeUpstream
) -> None:
    url, registry, planner = untraced
    system = "You are a support agent. " * 400  # long enough for the planner to mark it
    async with anthropic.AsyncAnthropic(api_key="k", base_url=url, max_retries=0) as client:
        for cache_read in (0, 2400):
            fake_upstream.usage = CacheUsage(uncached=20, cache_read=cache_read, output=7)
            await client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=5,
                system=system,
                messages=[{"role": "user", "content": "hi"}],
            )
    fake_upstream.usage = CacheUsage(uncached=30, cache_read=1024, output=3)
    async with openai.AsyncOpenAI(api_key="k", base_url=url + "/v1", max_retries=0) as oai:
        stream = await oai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert [chunk async for chunk in stream]

    # Read at once: nothing has given the loop an idle moment since the last answer.
    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    sonnet = {"provider": "anthropic", "model": "claude-sonnet-4-6", "policy": "none"}
    gpt = {"provider": "openai", "model": "gpt-4o", "policy": "none"}
    assert value("promptcache_requests_total", **sonnet, outcome="ok") == 2
    assert value("promptcache_requests_total", **gpt, outcome="ok") == 1
    assert value("promptcache_input_tokens_total", kind="cache_read", **sonnet) == 2400
    assert value("promptcache_input_tokens_total", kind="uncached", **sonnet) == 40
    assert value("promptcache_input_tokens_total", kind="cache_read", **gpt) == 1024
    assert value("promptcache_output_tokens_total", **gpt) == 3
    assert (
        value("promptcache_request_duration_seconds_count", provider="openai", policy="none") == 1
    )
    # The planner heard of each outcome once, in call order, with the time of each answer.
    assert [read for read, _ in planner.seen] == [0, 2400, 1024]
    times = [now for _, now in planner.seen]
    assert times == sorted(times)
