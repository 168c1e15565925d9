"""The planner's public surface (the proxy's contract) and its bounded memory."""

from __future__ import annotations

import promptcache.sidecar.planner as planner_pkg
from promptcache.policy import parse_policy
from promptcache.sidecar.planner import Planner, PlanRequest
from promptcache.usage import Usage


def test_public_names() -> None:
    assert sorted(planner_pkg.__all__) == [
        "Breakpoint",
        "ContextBlock",
        "Diagnostics",
        "MissReason",
        "Plan",
        "PlanError",
        "PlanRequest",
        "Planner",
        "PrefixChange",
        "Relocation",
        "Route",
        "Ttl",
    ]
    for name in planner_pkg.__all__:
        assert getattr(planner_pkg, name) is not None


def test_memory_stays_bounded_when_every_prefix_is_new() -> None:
    # An app with a timestamp at the top of its prompt sends a new prefix every time.
    planner = Planner(capacity=8)
    auto = parse_policy({"staticBlocks": [{"name": "core", "content": "x", "ttl": "auto"}]})
    for i in range(200):
        system = f"Request {i}: " + "static text " * 400
        body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "system": system}
        body["messages"] = [
            {"role": "user", "content": f"q{i}"},
            {"role": "assistant", "content": "a " * 5000},
            {"role": "user", "content": "next"},
        ]
        for spec, name in ((None, None), (auto, f"policy-{i}")):
            plan = planner.plan(
                PlanRequest(route="messages", body=body, policy_name=name, policy=spec, now=i)
            )
            planner.record_outcome(plan, Usage(uncached=10, cache_write_5m=1300), i + 0.5)
    assert len(planner._served) <= 8
    assert len(planner._snapshots) <= 8
    assert len(planner._reuse._last) <= 8
    assert len(planner._reuse._gaps) <= 8
