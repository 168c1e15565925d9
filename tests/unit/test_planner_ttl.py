"""``ttl: auto``: the 5m-or-1h arithmetic with concrete numbers, and the planner using it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from promptcache.models import lookup
from promptcache.policy import parse_policy
from promptcache.sidecar.planner import Planner, PlanRequest
from promptcache.sidecar.planner.ttl import ReuseTracker, choose_ttl, expected_cost

INFO = lookup("anthropic", "claude-sonnet-4-5")  # write 5m 1.25x, write 1h 2x, read 0.1x
MIN = 60.0


def test_expected_cost_per_use() -> None:
    # A gap longer than the TTL re-writes (1.25x); a shorter one reads (0.1x).
    assert expected_cost([2 * MIN] * 4, 300, 1.25, 0.1) == pytest.approx(0.1)
    assert expected_cost([10 * MIN] * 4, 300, 1.25, 0.1) == pytest.approx(1.25)
    assert expected_cost([MIN, 20 * MIN], 300, 1.25, 0.1) == pytest.approx(0.675)
    assert expected_cost([], 300, 1.25, 0.1) == pytest.approx(1.25)


@pytest.mark.parametrize(
    ("gaps", "ttl", "cost_5m", "cost_1h"),
    [
        # every 10 minutes: 5m re-writes every time, 1h always reads
        ([10 * MIN] * 6, "1h", 1.25, 0.10),
        # every 2 minutes: both always read; tie -> 5m (cheaper first write)
        ([2 * MIN] * 6, "5m", 0.10, 0.10),
        # half 1 minute, half 20 minutes: 0.5*1.25 + 0.5*0.1 = 0.675 vs 0.10
        ([MIN, 20 * MIN] * 3, "1h", 0.675, 0.10),
        # every 2 hours: both re-write; 1.25 < 2.0
        ([120 * MIN] * 6, "5m", 1.25, 2.00),
        # 3 of 4 gaps 30 min, 1 of 4 gaps 3 h: 5m = 1.25; 1h = 0.25*2 + 0.75*0.1 = 0.575
        ([30 * MIN, 30 * MIN, 30 * MIN, 180 * MIN], "1h", 1.25, 0.575),
        # 1 of 4 gaps 10 min, 3 of 4 gaps 3 h: 5m = 1.25; 1h = 0.75*2 + 0.25*0.1 = 1.525
        ([10 * MIN, 180 * MIN, 180 * MIN, 180 * MIN], "5m", 1.25, 1.525),
    ],
)
def test_choose_ttl(gaps: list[float], ttl: str, cost_5m: float, cost_1h: float) -> None:
    choice = choose_ttl(gaps, INFO)
    assert choice.ttl == ttl
    assert choice.cost_5m == pytest.approx(cost_5m)
    assert choice.cost_1h == pytest.approx(cost_1h)


def test_too_few_gaps_choose_5m() -> None:
    assert choose_ttl([10 * MIN, 10 * MIN], INFO).ttl == "5m"


def test_prices_decide() -> None:
    # If a 1h write cost 20x, re-writing hourly would cost more than 5m re-writes.
    pricey = replace(INFO, write_1h_multiplier=20.0)
    gaps = [10 * MIN, 10 * MIN, 10 * MIN, 180 * MIN]
    assert choose_ttl(gaps, INFO).ttl == "1h"  # 5m 1.25 vs 1h 0.575
    assert choose_ttl(gaps, pricey).ttl == "5m"  # 5m 1.25 vs 1h 5.075


def test_reuse_tracker_is_bounded() -> None:
    tracker = ReuseTracker(capacity=2)
    for key in ("a", "b", "c"):
        tracker.observe(key, 0.0)
    assert tracker.observe("a", 10.0) == ()  # "a" was evicted: no gap remembered
    assert tracker.observe("c", 5.0) == (5.0,)


STATIC = "Static instructions for the support agent. " * 120


@pytest.mark.parametrize(("every", "ttl"), [(10 * MIN, "1h"), (1 * MIN, "5m")])
def test_planner_learns_the_ttl_from_reuse(every: float, ttl: str) -> None:
    spec = parse_policy({"staticBlocks": [{"name": "core", "content": STATIC, "ttl": "auto"}]})
    planner = Planner()
    chosen = []
    for i in range(6):
        body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}
        body["messages"] = [{"role": "user", "content": "Hi"}]
        plan = planner.plan(
            PlanRequest(route="messages", body=body, policy_name="p", policy=spec, now=i * every)
        )
        chosen.append(plan.breakpoints[0].ttl)
    # 5m until MIN_GAPS gaps were seen, then what the arithmetic says.
    assert chosen == ["5m", "5m", "5m", ttl, ttl, ttl]
    assert any(n.startswith(f"ttl auto: {ttl}") for n in plan.notes)
