"""The context phase against real HTTP services on loopback: parallelism, variables,
failure behaviour, metrics and spans."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
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
def fetcher(session: aiohttp.ClientSession, registry: CollectorRegistry) -> ContextFetcher:
    return ContextFetcher(session=session, metrics=ContextMetrics(registry))


async def fetch_one(fetcher: ContextFetcher, url: str, **source: Any) -> ContextBlock:
    blocks = await fetcher.fetch(
        policy_name="p",
        policy=policy({"name": "src", "url": url, **source}),
        headers=NO_HEADERS,
        body=None,
    )
    assert len(blocks) == 1
    assert blocks[0].name == "src"
    return blocks[0]


async def test_three_sources_take_about_the_longest_not_the_sum(
    fetcher: ContextFetcher, registry: CollectorRegistry
) -> None:
    delays = {"orders": 0.3, "profile": 0.5, "policies": 0.45}
    async with (
        ContextService.running(delay=delays["orders"]) as orders,
        ContextService.running(delay=delays["profile"]) as profile,
        ContextService.running(delay=delays["policies"]) as policies,
    ):
        spec = policy(
            {"name": "orders", "url": orders.base_url + "/text/orders"},
            {"name": "profile", "url": profile.base_url + "/text/profile"},
            {"name": "policies", "url": policies.base_url + "/text/policies"},
            contextDeadline="5s",
        )
        started = time.perf_counter()
        blocks = await fetcher.fetch(policy_name="p", policy=spec, headers=NO_HEADERS, body=None)
        elapsed = time.perf_counter() - started
    assert [b.name for b in blocks] == ["orders", "profile", "policies"]
    assert [b.text for b in blocks] == [f"{n} context (GET)" for n in delays]
    assert elapsed < 0.7 * sum(delays.values()), elapsed
    assert (
        registry.get_sample_value("promptcache_context_phase_seconds_count", {"policy": "p"}) == 1
    )
    for name in delays:
        assert (
            registry.get_sample_value(
                "promptcache_context_fetch_duration_seconds_count", {"policy": "p", "source": name}
            )
            == 1
        )


async def test_no_sources_means_no_blocks(
    fetcher: ContextFetcher, registry: CollectorRegistry
) -> None:
    assert (
        await fetcher.fetch(policy_name="p", policy=PolicySpec(), headers=NO_HEADERS, body={"x": 1})
        == []
    )
    assert (
        registry.get_sample_value("promptcache_context_phase_seconds_count", {"policy": "p"})
        is None
    )


async def test_variables_from_headers_and_body_fields(
    fetcher: ContextFetcher, service: ContextService
) -> None:
    spec = policy(
        {
            "name": "echo",
            "method": "GET",
            "url": service.base_url + "/echo/{user_id}?tenant={tenant}&tier={tier}",
            "headers": {"Authorization": "Bearer {token}", "X-Oai-User": "{oai_user}"},
        },
        contextVariables=[
            {"name": "user_id", "from": "field", "field": "metadata.user_id"},
            {"name": "oai_user", "from": "field", "field": "user"},
            {"name": "tier", "from": "field", "field": "metadata.tier"},
            {"name": "tenant"},
            {"name": "token", "header": "X-Context-Token"},
        ],
    )
    headers = CIMultiDictProxy(
        CIMultiDict({"X-PromptCache-Tenant": "acme & co", "x-context-token": "t0k"})
    )
    body = {"metadata": {"user_id": "user/42", "tier": "gold"}, "user": "oai-7"}
    blocks = await fetcher.fetch(policy_name="p", policy=spec, headers=headers, body=body)
    echoed = json.loads(blocks[0].text)
    assert echoed["raw_path"] == "/echo/user%2F42?tenant=acme%20%26%20co&tier=gold"
    assert echoed["segment"] == "user/42"
    assert echoed["headers"]["authorization"] == "Bearer t0k"
    assert echoed["headers"]["x-oai-user"] == "oai-7"
    assert "x-promptcache-tenant" not in echoed["headers"]  # app headers are not forwarded


async def test_missing_variable_follows_the_declared_behaviour(
    fetcher: ContextFetcher, service: ContextService, registry: CollectorRegistry
) -> None:
    optional = {"name": "opt", "url": service.base_url + "/text/{user_id}"}
    required = {"name": "req", "url": service.base_url + "/text/{user_id}", "required": True}
    variables = [{"name": "user_id", "from": "field", "field": "metadata.user_id"}]
    blocks = await fetcher.fetch(
        policy_name="p",
        policy=policy(optional, contextVariables=variables),
        headers=NO_HEADERS,
        body={},
    )
    assert blocks == [ContextBlock("opt", "[context unavailable: missing_variable]")]
    with pytest.raises(RequiredSourceError) as info:
        await fetcher.fetch(
            policy_name="p",
            policy=policy(required, contextVariables=variables),
            headers=NO_HEADERS,
            body={"metadata": {}},
        )
    assert (info.value.source, info.value.reason) == ("req", "missing_variable")
    assert service.hits.total() == 0
    assert fetch_failures(registry, "opt", "missing_variable") == 1


async def test_header_value_with_crlf_is_refused(
    fetcher: ContextFetcher, service: ContextService
) -> None:
    spec = policy(
        {"name": "src", "url": service.base_url + "/text/a", "headers": {"X-User": "{user}"}},
        contextVariables=[{"name": "user", "from": "field", "field": "user"}],
    )
    blocks = await fetcher.fetch(
        policy_name="p", policy=spec, headers=NO_HEADERS, body={"user": "u\r\nX-Admin: yes"}
    )
    assert blocks == [ContextBlock("src", "[context unavailable: bad_variable]")]
    assert service.hits.total() == 0


@pytest.mark.parametrize(
    ("path", "extra", "reason"),
    [
        ("/status/404", {}, "status"),
        ("/status/500", {}, "status"),
        ("/status/302", {}, "status"),
        ("/big/5000", {"maxBytes": 1000}, "too_large"),
        ("/stream/5000", {"maxBytes": 1000}, "too_large"),
        ("/binary", {}, "not_text"),
        ("/octets", {}, "not_text"),
    ],
)
async def test_failures_become_the_placeholder(
    fetcher: ContextFetcher,
    service: ContextService,
    registry: CollectorRegistry,
    path: str,
    extra: dict[str, Any],
    reason: str,
) -> None:
    block = await fetch_one(fetcher, service.base_url + path, **extra)
    assert block.text == f"[context unavailable: {reason}]"
    assert fetch_failures(registry, "src", reason) == 1


async def test_unreachable_service(fetcher: ContextFetcher) -> None:
    block = await fetch_one(fetcher, closed_port_url() + "/text/a")
    assert block.text == "[context unavailable: unreachable]"


async def test_exactly_max_bytes_is_fine(fetcher: ContextFetcher, service: ContextService) -> None:
    assert (await fetch_one(fetcher, service.base_url + "/big/1000", maxBytes=1000)).text == (
        "x" * 1000
    )
    assert (await fetch_one(fetcher, service.base_url + "/stream/1000", maxBytes=1000)).text == (
        "y" * 1000
    )


async def test_untyped_utf8_answer_is_text(
    fetcher: ContextFetcher, service: ContextService
) -> None:
    block = await fetch_one(fetcher, service.base_url + "/untyped")
    assert block.text == "plain words, no content type"


async def test_post_source(fetcher: ContextFetcher, service: ContextService) -> None:
    block = await fetch_one(fetcher, service.base_url + "/text/posted", method="POST")
    assert block.text == "posted context (POST)"


async def test_post_body_carries_the_newest_question_to_a_retriever(
    fetcher: ContextFetcher, service: ContextService
) -> None:
    question = 'My "Ridgeline" tent leaks.\nWhat now?'
    spec = policy(
        {
            "name": "docs",
            "method": "POST",
            "url": service.base_url + "/search",
            "body": {"query": "{question}", "k": 3, "filters": {"lang": "en"}},
            "cacheFor": "60s",
        },
        contextVariables=[{"name": "question", "from": "message"}],
    )

    def request(text: str) -> dict[str, Any]:
        return {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": "earlier"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": text},
            ],
        }

    async def ask(text: str) -> Any:
        (block,) = await fetcher.fetch(
            policy_name="p", policy=spec, headers=NO_HEADERS, body=request(text)
        )
        return json.loads(block.text)

    assert await ask(question) == {
        "content_type": "application/json",
        "json": {"query": question, "k": 3, "filters": {"lang": "en"}},
    }
    # The memo is keyed by the body too: the same question is served from it, another
    # question goes to the service.
    await ask(question)
    assert service.hits["search"] == 1
    assert (await ask("Another question"))["json"]["query"] == "Another question"
    assert service.hits["search"] == 2


async def test_custom_and_empty_placeholders(
    fetcher: ContextFetcher, service: ContextService
) -> None:
    spec = policy(
        {
            "name": "a",
            "url": service.base_url + "/status/503",
            "placeholder": "<orders unavailable ({reason})>",
        },
        {"name": "b", "url": service.base_url + "/status/503", "placeholder": ""},
        {"name": "c", "url": service.base_url + "/text/c"},
    )
    blocks = await fetcher.fetch(policy_name="p", policy=spec, headers=NO_HEADERS, body=None)
    assert blocks == [
        ContextBlock("a", "<orders unavailable (status)>"),
        ContextBlock("c", "c context (GET)"),
    ]


async def test_required_failure_names_the_source(
    fetcher: ContextFetcher, service: ContextService
) -> None:
    spec = policy(
        {"name": "fine", "url": service.base_url + "/text/fine"},
        {"name": "orders", "url": service.base_url + "/status/404", "required": True},
    )
    with pytest.raises(RequiredSourceError) as info:
        await fetcher.fetch(policy_name="p", policy=spec, headers=NO_HEADERS, body=None)
    assert (info.value.source, info.value.reason) == ("orders", "status")
    assert "orders" in str(info.value)


async def test_one_span_per_fetch_under_the_request_span(
    session: aiohttp.ClientSession, service: ContextService
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    fetcher = ContextFetcher(
        session=session, metrics=ContextMetrics(CollectorRegistry()), tracer_provider=provider
    )
    spec = policy(
        {"name": "profile", "url": service.base_url + "/echo/{user_id}"},
        {"name": "missing", "url": service.base_url + "/status/404"},
        contextVariables=[{"name": "user_id", "from": "field", "field": "user"}],
    )
    with provider.get_tracer("test").start_as_current_span("request") as parent:
        await fetcher.fetch(
            policy_name="p", policy=spec, headers=NO_HEADERS, body={"user": "secret-user-value"}
        )
    spans = {s.name: s for s in exporter.get_finished_spans()}
    ok, failed = spans["context.fetch profile"], spans["context.fetch missing"]
    for span in (ok, failed):
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        assert "secret-user-value" not in json.dumps(dict(span.attributes or {}))
    assert ok.attributes is not None
    assert failed.attributes is not None
    assert ok.attributes["promptcache.context.source"] == "profile"
    assert ok.attributes["promptcache.context.outcome"] == "ok"
    assert ok.attributes["http.response.status_code"] == 200
    assert int(str(ok.attributes["promptcache.context.bytes"])) > 0
    assert failed.attributes["promptcache.context.outcome"] == "status"
    assert failed.attributes["http.response.status_code"] == 404
    provider.shutdown()


async def test_logs_carry_no_values_or_text(
    fetcher: ContextFetcher, service: ContextService, caplog: pytest.LogCaptureFixture
) -> None:
    spec = policy(
        {"name": "a", "url": service.base_url + "/status/500?u={u}"},
        {"name": "b", "url": closed_port_url() + "/x/{u}"},
        {"name": "c", "url": service.base_url + "/text/{u}"},
        contextVariables=[{"name": "u", "from": "field", "field": "user"}],
    )
    with caplog.at_level("DEBUG", logger="promptcache.sidecar"):
        await fetcher.fetch(
            policy_name="p", policy=spec, headers=NO_HEADERS, body={"user": "secret-user-value"}
        )
    ours = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("promptcache.sidecar")
    )
    assert "failed: status" in ours
    assert "failed: unreachable" in ours
    assert "secret-user-value" not in ours
    assert "answer 500" not in ours
