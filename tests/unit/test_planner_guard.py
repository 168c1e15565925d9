"""The never-worse guard, with plain data: writes judged against reads, withdrawal, retry."""

from __future__ import annotations

import itertools
from typing import Any

from promptcache.policy import parse_policy
from promptcache.sidecar.planner import Planner, PlanRequest
from promptcache.sidecar.planner.guard import FIRST_BACKOFF, Guard, GuardNote
from promptcache.usage import Usage

NOTE = GuardNote("k", None, "default", ("static",), 1.25, 0.1, 300.0)


def allow(guard: Guard, fp: str, now: float = 0.0) -> bool:
    return guard.allow("k", "static", fp, policy=None, source="default", now=now)


def test_a_prefix_that_is_read_back_stays() -> None:
    guard = Guard()
    assert allow(guard, "a")
    guard.wrote(NOTE, "static", "a", 2000, 1.0)
    for t in range(2, 30):
        assert allow(guard, "a", t)
        guard.read(NOTE, "static", "a", 2000, t)
    track = guard.track("k", "static")
    assert track is not None
    assert track.state == "active"
    assert track.unread_tokens == 0


def test_writes_never_read_are_withdrawn_then_probed_with_doubling_backoff() -> None:
    guard = Guard()
    placed = []
    for i in range(60):
        fp = f"unique-{i}"
        ok = allow(guard, fp, float(i))
        placed.append(ok)
        if ok:
            guard.wrote(NOTE, "static", fp, 1500, float(i))
    marked = [i for i, ok in enumerate(placed) if ok]
    # Two unread writes withdraw it; probes after 8, then 16, then 32 requests.
    assert marked[:2] == [0, 1]
    gaps = [b - a for a, b in itertools.pairwise(marked[1:])]
    assert gaps == [FIRST_BACKOFF, 2 * FIRST_BACKOFF, 4 * FIRST_BACKOFF]
    track = guard.track("k", "static")
    assert track is not None
    assert track.state == "withdrawn"
    # Every write was judged unread: each probe by the next request's other prefix.
    assert guard.unread_tokens[(None, "default")] == 1500 * len(marked)


def test_a_probe_that_is_read_back_makes_the_track_active_again() -> None:
    guard = Guard()
    for i in range(3):
        if allow(guard, f"u{i}", i):
            guard.wrote(NOTE, "static", f"u{i}", 1500, i)
    track = guard.track("k", "static")
    assert track is not None
    assert track.state == "withdrawn"
    i = 3
    while not allow(guard, "stable", i):
        i += 1
    guard.wrote(NOTE, "static", "stable", 1500, i)
    assert allow(guard, "stable", i + 1)
    guard.read(NOTE, "static", "stable", 1500, i + 1)
    assert guard.track("k", "static") is track
    assert track.state in ("active",)


def test_an_unread_write_expires_with_its_ttl() -> None:
    guard = Guard()
    allow(guard, "a")
    guard.wrote(NOTE, "static", "a", 1000, 0.0)
    guard.expire(299.0)
    assert guard.unread_tokens == {}
    guard.expire(301.0)
    assert guard.unread_tokens == {(None, "default"): 1000}


def body(system: str) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 5,
        "system": system,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_the_planner_stops_marking_a_prefix_whose_writes_are_not_read() -> None:
    planner = Planner(learning=False)
    marked = []
    for i in range(6):
        system = f"Now: {i}\n" + "Static instructions for the agent. " * 300
        plan = planner.plan(PlanRequest(route="messages", body=body(system), now=float(i)))
        marked.append(bool(plan.breakpoints))
        planner.record_outcome(plan, Usage(uncached=3, cache_write_5m=2200), float(i) + 0.5)
    assert marked == [True, True, False, False, False, False]


def test_sidecar_observe_mode_applies_unless_the_policy_sets_its_own() -> None:
    system = "Now: 1\n" + "Static instructions for the agent. " * 300
    silent = parse_policy({"provider": "anthropic"})
    enforcing = parse_policy({"provider": "anthropic", "mode": "enforce"})
    planner = Planner(observe=True)
    for spec, observed in ((None, True), (silent, True), (enforcing, False)):
        plan = planner.plan(
            PlanRequest(route="messages", body=body(system), policy_name="p", policy=spec)
        )
        assert plan.observe_only is observed


def test_the_guard_withdraws_an_unread_gpt_5_6_breakpoint() -> None:
    """GPT-5.6 writes cost 1.25x: an explicit breakpoint whose writes are never read goes."""
    planner = Planner(learning=False)
    marked = []
    for i in range(6):
        system = f"Now: {i}\n" + "Static instructions for the agent. " * 300
        request: dict[str, Any] = {
            "model": "gpt-5.6-terra",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": "q"}],
        }
        plan = planner.plan(PlanRequest(route="chat", body=request, now=float(i)))
        system_content = plan.body["messages"][0]["content"]
        marked.append(
            isinstance(system_content, list)
            and any("prompt_cache_breakpoint" in part for part in system_content)
        )
        planner.record_outcome(plan, Usage(uncached=3, cache_write_5m=2600), float(i) + 0.5)
    assert marked == [True, True, False, False, False, False]
