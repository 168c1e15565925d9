"""One GenAI-convention span per proxied call, its context sent upstream; metrics on /metrics."""

from __future__ import annotations

import aiohttp
import anthropic
import openai
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from tests.local.conftest import CacheUsage, FakeUpstream, StartSidecar

APP_TRACE = "0af7651916cd43dd8448eb211c80319c"


async def test_span_attributes_and_trace_propagation(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.usage = CacheUsage(uncached=10, cache_read=4000, cache_write=96, output=12)
    sc = await start_sidecar()
    client = anthropic.AsyncAnthropic(api_key="k", base_url=sc.url, max_retries=0)
    async with (
        client,
        client.messages.stream(
            model="claude-opus-4-6",
            max_tokens=20,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"traceparent": f"00-{APP_TRACE}-b7ad6b7169203331-01"},
        ) as s,
    ):
        await s.get_final_message()
    (span,) = sc.finished_spans()
    assert span.name == "chat claude-opus-4-6"
    assert span.kind is SpanKind.CLIENT
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.request.model"] == "claude-opus-4-6"
    assert attrs["gen_ai.response.model"] == "claude-opus-4-6"
    assert attrs["gen_ai.usage.input_tokens"] == 10 + 4000 + 96
    assert attrs["gen_ai.usage.output_tokens"] == 12
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 4000
    assert attrs["gen_ai.usage.cache_write.input_tokens"] == 96  # the current name
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 96  # the old one, kept for now
    assert attrs["http.response.status_code"] == 200
    # A child of the app's trace, and the upstream saw the sidecar's span as parent.
    assert span.context is not None
    assert format(span.context.trace_id, "032x") == APP_TRACE
    sent = fake_upstream.requests[-1].headers["traceparent"]
    assert sent == f"00-{APP_TRACE}-{span.context.span_id:016x}-01"


async def test_failed_call_span_is_an_error(start_sidecar: StartSidecar) -> None:
    sc = await start_sidecar(openai_upstream="http://127.0.0.1:9", retry_max_attempts=1)
    async with openai.AsyncOpenAI(api_key="k", base_url=sc.openai_url, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
    assert caught.value.status_code == 502
    (span,) = sc.finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "502"


async def test_metrics_endpoint_exposes_the_contract_names(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    sc = await start_sidecar()
    async with anthropic.AsyncAnthropic(api_key="k", base_url=sc.url, max_retries=0) as client:
        await client.messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    async with aiohttp.ClientSession() as http, http.get(sc.admin_url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    for name in (
        "promptcache_requests_total",
        'promptcache_input_tokens_total{kind="cache_read"',
        'promptcache_input_tokens_total{kind="cache_write"',
        'promptcache_input_tokens_total{kind="uncached"',
        "promptcache_output_tokens_total",
        "promptcache_request_duration_seconds_bucket",
        "promptcache_time_to_first_token_seconds_bucket",
        "promptcache_overhead_seconds_bucket",
        "promptcache_cost_usd_total",
        "promptcache_cost_without_cache_usd_total",
    ):
        assert name in text, name
    assert sc.metric("promptcache_overhead_seconds_count", provider="anthropic") == 1
    model_odd = "x" * 65
    async with anthropic.AsyncAnthropic(api_key="k", base_url=sc.url, max_retries=0) as client:
        await client.messages.create(
            model=model_odd, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert (
        sc.metric(
            "promptcache_requests_total",
            provider="anthropic",
            model="other",
            policy="none",
            outcome="ok",
        )
        == 1
    )
