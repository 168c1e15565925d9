"""What the planner decides reaches the wire and the metrics.

A scripted planner stands in for the real one: a rewrite goes upstream compactly
serialised; observe mode sends the app's bytes and counts what enforcing would have
saved; volatile spans and breakpoints are counted per policy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import pytest

from promptcache.sidecar.planner import Breakpoint, MissReason, Plan, Planner, PlanRequest
from promptcache.usage import Usage
from tests.local.conftest import FakeUpstream, StartSidecar


class Scripted(Planner):
    def __init__(self, *, observe: bool) -> None:
        self.observe = observe

    def plan(self, request: PlanRequest, *, settle: bool = True) -> Plan:
        body: dict[str, Any] = dict(request.body)
        system = body.get("system")
        body["system"] = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
        return Plan(
            body=request.body if self.observe else body,
            changed=True,
            observe_only=self.observe,
            breakpoints=[Breakpoint("system", "5m", 4000, "system[0]", "planner")],
            volatile_found={"datetime": 2, "uuid": 1},
            expected_cached_tokens=4000,
            model=body.get("model"),
        )

    def record_outcome(self, plan: Plan, usage: Usage, now: float) -> MissReason | None:
        return None if usage.cache_read else "first_write"


def _policy(path: Path, mode: str) -> Path:
    path.write_text(f"kind: PromptPolicy\nmetadata: {{name: agent}}\nspec: {{mode: {mode}}}\n")
    return path


async def _call(url: str) -> None:
    async with anthropic.AsyncAnthropic(api_key="k", base_url=url, max_retries=0) as client:
        await client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=5,
            system="You are a helpful agent. Today is 2026-11-26.",
            messages=[{"role": "user", "content": "hi"}],
        )


@pytest.mark.parametrize("mode", ["enforce", "observe"])
async def test_plan_reaches_wire_and_metrics(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, tmp_path: Path, mode: str
) -> None:
    observe = mode == "observe"
    sc = await start_sidecar(
        planner=Scripted(observe=observe), policy=_policy(tmp_path / "p.yaml", mode)
    )
    await _call(sc.url)
    sent = fake_upstream.requests[0].body
    system = json.loads(sent)["system"]
    if observe:
        assert isinstance(system, str)  # the app's bytes, untouched
        assert sc.metric("promptcache_predicted_cacheable_tokens_total", policy="agent") == 4000
        # Sonnet: $3/M input, reads at 0.1x: 4000 tokens would save 4000 * 3e-6 * 0.9.
        saved = sc.metric("promptcache_predicted_savings_usd_total", policy="agent")
        assert saved == pytest.approx(4000 * 3e-6 * 0.9)
        assert sc.metric("promptcache_breakpoints_total", policy="agent", tier="system") == 0
    else:
        assert system[0]["cache_control"] == {"type": "ephemeral"}
        assert b": " not in sent  # compact
        assert sc.metric("promptcache_breakpoints_total", policy="agent", tier="system") == 1
        assert sc.metric("promptcache_predicted_cacheable_tokens_total", policy="agent") == 0
    assert sc.metric("promptcache_volatile_spans_total", policy="agent", detector="datetime") == 2
    assert sc.metric("promptcache_volatile_spans_total", policy="agent", detector="uuid") == 1
