"""The per-call ledger exposes what prometheus_client's own metrics would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from promptcache.usage import Usage
from sidecar.metrics import Metrics


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
