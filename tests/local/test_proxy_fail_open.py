"""Failing open in the request path: a planner that raises or breaks its contract, or a
bug of the sidecar's own before anything went upstream, costs the app nothing: the
request goes upstream as the app sent it, and the failure is counted.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from promptcache.sidecar.planner import Plan, Planner, PlanRequest
from tests.local.conftest import FakeUpstream, StartSidecar


async def _call(url: str) -> anthropic.types.Message:
    async with anthropic.AsyncAnthropic(api_key="k", base_url=url, max_retries=0) as client:
        return await client.messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )


async def test_planner_failure_forwards_the_original(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    class Broken(Planner):
        def plan(self, request: PlanRequest, *, settle: bool = True) -> Plan:
            raise KeyError("boom")

    sc = await start_sidecar(planner=Broken())
    message = await _call(sc.url)
    assert message.content
    assert sc.metric("promptcache_transform_errors_total", provider="anthropic", stage="plan") == 1


async def test_a_planner_breaking_its_contract_still_fails_open(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream
) -> None:
    class NoBody(Planner):
        def plan(self, request: PlanRequest, *, settle: bool = True) -> Plan:
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
