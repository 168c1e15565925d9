"""The context-prefetch hook in the request path: blocks reach the planner, failures are shaped.

A policy with context sources on a real loopback service: the planner receives the
fetched blocks; a required source that fails answers the app with a provider-shaped 502
naming the source and nothing goes upstream; an optional one that fails still lets the
call through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import pytest

from promptcache.sidecar.planner import MissReason, Plan, Planner, PlanRequest
from promptcache.usage import Usage
from tests.local.conftest import FakeUpstream, StartSidecar
from tests.local.context_services import ContextService


class SpyPlanner(Planner):
    """Passes requests through and remembers what it was given."""

    def __init__(self) -> None:
        self.requests: list[PlanRequest] = []
        self.outcomes: list[Usage] = []

    def plan(self, request: PlanRequest) -> Plan:
        self.requests.append(request)
        return Plan(body=request.body, model=request.body.get("model"))

    def record_outcome(self, plan: Plan, usage: Usage, now: float) -> MissReason | None:
        self.outcomes.append(usage)
        return "first_write"


def _policy(path: Path, base: str, *, required: str) -> Path:
    path.write_text(
        "kind: PromptPolicy\n"
        "metadata: {name: support}\n"
        "spec:\n"
        "  provider: anthropic\n"
        "  contextDeadline: 2s\n"
        "  contextSources:\n"
        f"    - {{name: orders, url: '{base}/text/orders', timeout: 1s}}\n"
        f"    - {{name: profile, url: '{base}/status/500', required: {required}}}\n"
    )
    return path


async def _call(url: str) -> anthropic.types.Message:
    async with anthropic.AsyncAnthropic(api_key="k", base_url=url, max_retries=0) as client:
        return await client.messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )


async def test_context_blocks_reach_the_planner_and_misses_are_counted(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    spy = SpyPlanner()
    async with ContextService.running() as service:
        policy = _policy(tmp_path / "p.yaml", service.base_url, required="false")
        sc = await start_sidecar(planner=spy, policy=policy)
        await _call(sc.url)
    (request,) = spy.requests
    assert request.policy_name == "support"
    names = [block.name for block in request.context]
    assert names == ["orders", "profile"]
    assert request.context[0].text == "orders context (GET)"
    assert spy.outcomes == [Usage(uncached=120, cache_read=3500, output=12)]
    assert sc.metric("promptcache_cache_misses_total", policy="support", reason="first_write") == 1


async def test_required_source_failure_is_a_502_naming_it(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    async with ContextService.running() as service:
        policy = _policy(tmp_path / "p.yaml", service.base_url, required="true")
        sc = await start_sidecar(policy=policy)
        with pytest.raises(anthropic.APIStatusError) as caught:
            await _call(sc.url)
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict)
    assert "'profile'" in body["error"]["message"]
    assert fake_upstream.requests == []


async def test_planner_failure_forwards_the_original(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    class Broken(Planner):
        def plan(self, request: PlanRequest) -> Plan:
            raise KeyError("boom")

    sc = await start_sidecar(planner=Broken())
    message = await _call(sc.url)
    assert message.content
    assert sc.metric("promptcache_transform_errors_total", provider="anthropic", stage="plan") == 1


async def test_a_planner_breaking_its_contract_still_fails_open(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    class NoBody(Planner):
        def plan(self, request: PlanRequest) -> Plan:
            return Plan(body=None, changed=True)  # type: ignore[arg-type]

    sc = await start_sidecar(planner=NoBody())
    assert (await _call(sc.url)).content
    assert len(fake_upstream.requests) == 1  # forwarded once, as the app sent it
    assert b'"content":"hi"' in fake_upstream.requests[0].body
    assert sc.metric("promptcache_transform_errors_total", provider="anthropic", stage="plan") == 1


async def test_an_internal_error_before_sending_forwards_the_original(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptcache.sidecar.headers import upstream_request_headers as real

    calls = 0

    def buggy_once(incoming: Any) -> Any:  # a bug on the proxied route only
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return real(incoming)

    monkeypatch.setattr("promptcache.sidecar.proxy.upstream_request_headers", buggy_once)
    sc = await start_sidecar()
    assert (await _call(sc.url)).content
    assert len(fake_upstream.requests) == 1
    assert (
        sc.metric("promptcache_transform_errors_total", provider="anthropic", stage="internal") == 1
    )
