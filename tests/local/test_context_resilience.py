"""Timeouts, retries, the overall deadline, cancellation and the cacheFor memo, against
real HTTP services on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from promptcache.policy import PolicySpec
from promptcache.sidecar.context import ContextFetcher, ContextMetrics, RequiredSourceError
from promptcache.sidecar.planner import ContextBlock
from tests.local.context_services import (  # noqa: F401 - *_fixture: shared fixtures
    NO_HEADERS,
    ContextService,
    closed_port_url,
    fetch_failures,
    policy,
    registry_fixture,
    service_fixture,
    session_fixture,
)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def fetcher(
    session: aiohttp.ClientSession, registry: CollectorRegistry, spans: InMemorySpanExporter
) -> ContextFetcher:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return ContextFetcher(
        session=session, metrics=ContextMetrics(registry), tracer_provider=provider
    )


async def fetch(fetcher: ContextFetcher, spec: PolicySpec, body: Any = None) -> list[ContextBlock]:
    return await fetcher.fetch(policy_name="p", policy=spec, headers=NO_HEADERS, body=body)


def attempts(spans: InMemorySpanExporter, source: str) -> int:
    (span,) = [s for s in spans.get_finished_spans() if s.name == f"context.fetch {source}"]
    assert span.attributes is not None
    return int(str(span.attributes["promptcache.context.attempts"]))


async def test_per_attempt_timeout(fetcher: ContextFetcher, service: ContextService) -> None:
    spec = policy(
        {"name": "slow", "url": service.base_url + "/sleep/5", "timeout": "200ms"},
        contextDeadline="3s",
    )
    assert await fetch(fetcher, spec) == [ContextBlock("slow", "[context unavailable: timeout]")]


async def test_deadline_shorter_than_a_slow_source(
    fetcher: ContextFetcher, service: ContextService, registry: CollectorRegistry
) -> None:
    spec = policy(
        {"name": "slow", "url": service.base_url + "/sleep/5", "timeout": "10s", "retries": 3},
        {"name": "quick", "url": service.base_url + "/text/quick"},
        contextDeadline="300ms",
    )
    blocks = await fetch(fetcher, spec)
    assert blocks == [
        ContextBlock("slow", "[context unavailable: deadline]"),
        ContextBlock("quick", "quick context (GET)"),
    ]
    assert fetch_failures(registry, "slow", "deadline") == 1


async def test_required_source_past_the_deadline_fails_the_request(
    fetcher: ContextFetcher, service: ContextService
) -> None:
    spec = policy(
        {"name": "orders", "url": service.base_url + "/sleep/5", "required": True},
        contextDeadline="200ms",
    )
    with pytest.raises(RequiredSourceError) as info:
        await fetch(fetcher, spec)
    assert (info.value.source, info.value.reason) == ("orders", "deadline")


@pytest.mark.parametrize(
    ("retries", "expected"),
    [
        (2, '{"key": "k2", "ok": true}'),
        (1, "[context unavailable: status]"),
    ],
)
async def test_retries_on_5xx(
    fetcher: ContextFetcher,
    service: ContextService,
    spans: InMemorySpanExporter,
    retries: int,
    expected: str,
) -> None:
    spec = policy(
        {"name": "flaky", "url": service.base_url + f"/flaky/k{retries}/2", "retries": retries}
    )
    assert await fetch(fetcher, spec) == [ContextBlock("flaky", expected)]
    assert service.hits[f"flaky-k{retries}"] == retries + 1
    assert attempts(spans, "flaky") == retries + 1


async def test_4xx_is_not_retried(fetcher: ContextFetcher, service: ContextService) -> None:
    spec = policy({"name": "nf", "url": service.base_url + "/status/404", "retries": 3})
    assert await fetch(fetcher, spec) == [ContextBlock("nf", "[context unavailable: status]")]
    assert service.hits["status-404"] == 1


async def test_connection_errors_are_retried(
    fetcher: ContextFetcher, spans: InMemorySpanExporter
) -> None:
    spec = policy({"name": "down", "url": closed_port_url() + "/x", "retries": 2})
    assert await fetch(fetcher, spec) == [
        ContextBlock("down", "[context unavailable: unreachable]")
    ]
    assert attempts(spans, "down") == 3


async def test_timeouts_are_retried(
    fetcher: ContextFetcher, service: ContextService, spans: InMemorySpanExporter
) -> None:
    spec = policy(
        {"name": "slow", "url": service.base_url + "/sleep/5", "timeout": "100ms", "retries": 1},
        contextDeadline="3s",
    )
    assert await fetch(fetcher, spec) == [ContextBlock("slow", "[context unavailable: timeout]")]
    assert attempts(spans, "slow") == 2


async def test_caller_cancellation_cancels_the_fetches(
    fetcher: ContextFetcher, service: ContextService, spans: InMemorySpanExporter
) -> None:
    spec = policy({"name": "slow", "url": service.base_url + "/sleep/5"}, contextDeadline="10s")
    task = asyncio.create_task(fetch(fetcher, spec))
    while service.hits["sleep"] == 0:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["promptcache.context.outcome"] == "cancelled"


async def test_required_failure_cancels_the_others(
    fetcher: ContextFetcher, service: ContextService, spans: InMemorySpanExporter
) -> None:
    spec = policy(
        {"name": "slow", "url": service.base_url + "/sleep/5"},
        {"name": "orders", "url": service.base_url + "/status/404", "required": True},
        contextDeadline="10s",
    )
    with pytest.raises(RequiredSourceError):
        await fetch(fetcher, spec)
    outcomes = {
        s.name: (s.attributes or {}).get("promptcache.context.outcome")
        for s in spans.get_finished_spans()
    }
    assert outcomes == {"context.fetch slow": "cancelled", "context.fetch orders": "status"}


async def test_memo_serves_the_second_call(
    fetcher: ContextFetcher, service: ContextService, registry: CollectorRegistry
) -> None:
    spec = policy(
        {"name": "profile", "url": service.base_url + "/text/{user}", "cacheFor": "60s"},
        contextVariables=[{"name": "user", "from": "field", "field": "user"}],
    )
    first = await fetch(fetcher, spec, {"user": "alice"})
    second = await fetch(fetcher, spec, {"user": "alice"})
    assert first == second == [ContextBlock("profile", "alice context (GET)")]
    assert service.hits["alice"] == 1
    assert (
        registry.get_sample_value(
            "promptcache_context_memo_hits_total", {"policy": "p", "source": "profile"}
        )
        == 1
    )
    assert await fetch(fetcher, spec, {"user": "bob"}) == [
        ContextBlock("profile", "bob context (GET)")
    ]
    assert service.hits["bob"] == 1
    assert (
        registry.get_sample_value(
            "promptcache_context_memo_hits_total", {"policy": "p", "source": "profile"}
        )
        == 1
    )


async def test_memo_expires(fetcher: ContextFetcher, service: ContextService) -> None:
    spec = policy({"name": "s", "url": service.base_url + "/text/short", "cacheFor": "100ms"})
    await fetch(fetcher, spec)
    await asyncio.sleep(0.25)
    await fetch(fetcher, spec)
    assert service.hits["short"] == 2


async def test_without_cache_for_every_call_fetches(
    fetcher: ContextFetcher, service: ContextService
) -> None:
    spec = policy({"name": "s", "url": service.base_url + "/text/nomemo"})
    await fetch(fetcher, spec)
    await fetch(fetcher, spec)
    assert service.hits["nomemo"] == 2
    assert len(fetcher.memo) == 0


async def test_failures_are_not_memoised(fetcher: ContextFetcher, service: ContextService) -> None:
    spec = policy({"name": "f", "url": service.base_url + "/flaky/memo/1", "cacheFor": "60s"})
    assert await fetch(fetcher, spec) == [ContextBlock("f", "[context unavailable: status]")]
    ok = [ContextBlock("f", '{"key": "memo", "ok": true}')]
    assert await fetch(fetcher, spec) == ok
    assert await fetch(fetcher, spec) == ok
    assert service.hits["flaky-memo"] == 2


async def test_concurrent_requests_for_a_memoisable_source_share_one_fetch(
    fetcher: ContextFetcher, registry: CollectorRegistry, spans: InMemorySpanExporter
) -> None:
    async with ContextService.running(delay=0.3) as slow:
        spec = policy({"name": "kb", "url": slow.base_url + "/text/shared", "cacheFor": "60s"})
        results = await asyncio.gather(*(fetch(fetcher, spec) for _ in range(5)))
        assert slow.hits["shared"] == 1
    assert all(r == [ContextBlock("kb", "shared context (GET)")] for r in results)
    assert (
        registry.get_sample_value(
            "promptcache_context_coalesced_total", {"policy": "p", "source": "kb"}
        )
        == 4
    )
    outcomes = sorted(
        str((s.attributes or {}).get("promptcache.context.outcome"))
        for s in spans.get_finished_spans()
    )
    assert outcomes == ["coalesced"] * 4 + ["ok"]


async def test_concurrent_requests_without_cache_for_each_fetch(fetcher: ContextFetcher) -> None:
    async with ContextService.running(delay=0.2) as slow:
        spec = policy({"name": "kb", "url": slow.base_url + "/text/own"})
        await asyncio.gather(*(fetch(fetcher, spec) for _ in range(3)))
        assert slow.hits["own"] == 3


async def test_a_cancelled_leader_leaves_the_waiters_to_fetch_themselves(
    fetcher: ContextFetcher,
) -> None:
    async with ContextService.running(delay=0.3) as slow:
        spec = policy(
            {"name": "kb", "url": slow.base_url + "/text/lead", "cacheFor": "60s"},
            contextDeadline="5s",
        )
        leader = asyncio.create_task(fetch(fetcher, spec))
        while slow.hits["lead"] == 0:
            await asyncio.sleep(0.01)
        waiter = asyncio.create_task(fetch(fetcher, spec))
        await asyncio.sleep(0.05)  # the waiter is now waiting for the leader's fetch
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        assert await waiter == [ContextBlock("kb", "lead context (GET)")]
        assert slow.hits["lead"] == 2


async def test_a_shared_failure_reaches_every_waiter_once(
    fetcher: ContextFetcher, service: ContextService, registry: CollectorRegistry
) -> None:
    spec = policy({"name": "kb", "url": service.base_url + "/status/404", "cacheFor": "60s"})
    results = await asyncio.gather(*(fetch(fetcher, spec) for _ in range(3)))
    assert all(r == [ContextBlock("kb", "[context unavailable: status]")] for r in results)
    assert service.hits["status-404"] == 1
    assert fetch_failures(registry, "kb", "status") == 3
    # Not memoised: the next request tries again.
    await fetch(fetcher, spec)
    assert service.hits["status-404"] == 2
