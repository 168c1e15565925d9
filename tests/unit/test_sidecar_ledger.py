"""The per-call ledger exposes what prometheus_client's own metrics would, and its backlog
of calls still to be counted runs before anything reads them."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from promptcache.sidecar.backlog import IDLE_DELAY, Backlog
from promptcache.sidecar.metrics import Metrics
from promptcache.usage import Usage


def test_ledger_samples_and_exposition() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    ledger = metrics.ledger
    for outcome in ("ok", "ok", "timeout"):
        ledger.count("anthropic", "claude-sonnet-4-6", "none", outcome)
    metrics.record_usage(
        provider="anthropic",
        model="claude-sonnet-4-6",
        policy="none",
        usage=Usage(uncached=100, cache_read=900, cache_write_5m=50, output=10),
        pricing=None,
    )
    for seconds in (0.0001, 0.0004, 0.2, 1000.0):
        ledger.overhead.observe(("anthropic",), seconds)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    common = {"provider": "anthropic", "model": "claude-sonnet-4-6", "policy": "none"}
    assert value("promptcache_requests_total", **common, outcome="ok") == 2
    assert value("promptcache_requests_total", **common, outcome="timeout") == 1
    assert value("promptcache_input_tokens_total", kind="cache_read", **common) == 900
    assert value("promptcache_input_tokens_total", kind="cache_write", **common) == 50
    assert value("promptcache_input_tokens_total", kind="uncached", **common) == 100
    assert value("promptcache_output_tokens_total", **common) == 10
    cost = value("promptcache_cost_usd_total", **common)
    assert cost is not None
    assert abs(cost - ((100 + 90 + 62.5) * 3e-6 + 10 * 15e-6)) < 1e-12
    assert value("promptcache_overhead_seconds_bucket", provider="anthropic", le="0.0001") == 1
    assert value("promptcache_overhead_seconds_bucket", provider="anthropic", le="0.0005") == 2
    assert value("promptcache_overhead_seconds_bucket", provider="anthropic", le="0.1") == 2
    assert value("promptcache_overhead_seconds_bucket", provider="anthropic", le="+Inf") == 4
    assert value("promptcache_overhead_seconds_count", provider="anthropic") == 4
    # The text exposition parses back with the same families and types.
    families = {
        f.name: f.type for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert families["promptcache_requests"] == "counter"
    assert families["promptcache_input_tokens"] == "counter"
    assert families["promptcache_overhead_seconds"] == "histogram"
    assert families["promptcache_request_duration_seconds"] == "histogram"


async def test_backlog_runs_before_any_read_of_the_metrics() -> None:
    registry = CollectorRegistry()
    backlog = Backlog()
    metrics = Metrics(registry, before_collect=backlog.run)
    # Deferred counting updates the ledger and the counters registered after it alike.
    backlog.add(lambda: metrics.ledger.count("anthropic", "m", "none", "ok"))
    backlog.add(lambda: metrics.inc(metrics.cache_misses, ("none", "first_write")))
    # Read at once, before the loop had a turn: the backlog runs first.
    assert (
        registry.get_sample_value(
            "promptcache_cache_misses_total", {"policy": "none", "reason": "first_write"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "promptcache_requests_total",
            {"provider": "anthropic", "model": "m", "policy": "none", "outcome": "ok"},
        )
        == 1
    )
    # Run once only.
    assert (
        registry.get_sample_value(
            "promptcache_cache_misses_total", {"policy": "none", "reason": "first_write"}
        )
        == 1
    )


async def test_backlog_runs_when_idle_without_a_read() -> None:
    backlog = Backlog()
    done: list[int] = []
    backlog.add(lambda: done.append(1))
    await asyncio.sleep(0)
    assert done == []  # not on the next turn: the app's next request may be arriving
    await asyncio.sleep(IDLE_DELAY * 4)
    assert done == [1]


async def test_backlog_run_soon_runs_after_the_request_is_written() -> None:
    backlog = Backlog()
    order: list[str] = []
    backlog.add(lambda: order.append("counted"))
    backlog.run_soon()  # the proxy, just before it sends ...
    backlog.run_soon()  # (one run is enough)
    # ... and the send, which queues the request's write (aiohttp: a task) after it.
    asyncio.get_running_loop().call_soon(order.append, "request written")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order == ["request written", "counted"]


async def test_backlog_failure_costs_one_item_only(caplog: pytest.LogCaptureFixture) -> None:
    backlog = Backlog()
    done: list[int] = []

    def broken() -> None:
        raise KeyError("x")

    backlog.add(broken)
    backlog.add(lambda: done.append(2))
    backlog.close()
    assert done == [2]
    assert "deferred bookkeeping failed: KeyError" in caplog.text
