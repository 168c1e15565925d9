"""``Planner.plan(settle=False)``: the proxy's plans settle later, and settle the same.

The proxy sends a planned body first and makes what only the outcome needs (breakpoints,
expected cached tokens, the miss diagnosis's fingerprints, the guard's note) when it
records the call. Settled late, even after later requests were planned, a plan must say
exactly what an eagerly settled one says.
"""

from __future__ import annotations

import json
from typing import Any

from bench.payload import request_body
from bench.planner_bench import demo_requests
from promptcache.sidecar.planner import Plan, Planner, PlanRequest
from promptcache.usage import Usage


def _openai(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": "gpt-5.6",
        "messages": [{"role": "system", "content": body["system"]}, *body["messages"]],
    }


def _requests() -> list[PlanRequest]:
    bodies = [json.loads(raw) for raw in demo_requests(40)]
    out = [PlanRequest(route="messages", body=b, now=float(i)) for i, b in enumerate(bodies)]
    out += [PlanRequest(route="chat", body=_openai(b), now=100.0 + i) for i, b in enumerate(bodies)]
    bench = json.loads(request_body())
    out += [PlanRequest(route="messages", body=bench, now=200.0 + i) for i in range(5)]
    return out


def _facts(plan: Plan) -> tuple[object, ...]:
    d = plan.diagnostics
    assert d is not None
    return (
        plan.body,
        plan.changed,
        plan.breakpoints,
        plan.expected_cached_tokens,
        plan.notes,
        plan.key,
        d.static_fp,
        d.static_expected_tokens,
        d.static_ttl_seconds,
        d.history_read_fp,
        d.history_write_fp,
        d.has_markers,
        d.guard,
        d.template,
        d.prefix_change,
    )


def test_a_plan_settled_later_says_what_an_eager_one_says() -> None:
    eager, late = Planner(), Planner()
    requests = _requests()
    want = [_facts(eager.plan(r)) for r in requests]
    pending = [late.plan(r, settle=False) for r in requests]  # all planned, none settled
    assert all(p.pending is not None for p in pending)
    got = [_facts(p.settle()) for p in pending]
    assert got == want
    assert any(f[9] is not None for f in want), "no plan read a history entry"
    assert any(f[13] is not None for f in want), "no plan applied a learned template"


def test_outcomes_recorded_on_late_plans_lead_to_the_same_next_plans() -> None:
    eager, late = Planner(), Planner()
    for r in _requests():
        a, b = eager.plan(r), late.plan(r, settle=False)
        usage = Usage(uncached=500, cache_read=a.expected_cached_tokens // 2, cache_write_5m=900)
        eager.record_outcome(a, usage, r.now + 1.0)
        late.record_outcome(b, usage, r.now + 1.0)  # settles the plan first
        assert b.pending is None
        assert _facts(b) == _facts(a)
