"""Each cache-miss reason ``Planner.record_outcome`` can give, from concrete outcomes."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from promptcache.policy import PolicySpec, parse_policy
from promptcache.sidecar.planner import Plan, Planner, PlanRequest, Route
from promptcache.usage import Usage

STATIC = "Static instructions for the support agent. " * 120  # 1,290 tokens
LONG = "An earlier turn of this conversation. " * 60


def body(system: str = STATIC, turns: int = 0, tag: str = "") -> dict[str, Any]:
    msgs: list[dict[str, Any]] = []
    for t in range(turns):
        msgs += [
            {"role": "user", "content": f"{tag} question {t} {LONG}"},
            {"role": "assistant", "content": f"{tag} answer {t} {LONG}"},
        ]
    msgs.append({"role": "user", "content": "newest"})
    return {"model": "claude-sonnet-4-5", "max_tokens": 10, "system": system, "messages": msgs}


def plan_at(
    planner: Planner,
    b: dict[str, Any],
    now: float,
    spec: PolicySpec | None = None,
    route: Route = "messages",
) -> Plan:
    return planner.plan(PlanRequest(route=route, body=b, policy_name="p", policy=spec, now=now))


def wrote(tokens: int) -> Usage:
    return Usage(uncached=5, cache_write_5m=tokens)


def read(tokens: int, written: int = 100) -> Usage:
    return Usage(uncached=5, cache_read=tokens, cache_write_5m=written)


def test_first_write_then_hit() -> None:
    planner = Planner(learning=False)
    first = plan_at(planner, body(), 0.0)
    assert first.expected_cached_tokens == 1290
    assert planner.record_outcome(first, wrote(1290), 1.0) == "first_write"
    second = plan_at(planner, body(), 10.0)
    assert planner.record_outcome(second, read(1290), 11.0) is None


def test_a_read_within_tokenizer_tolerance_is_a_hit() -> None:
    planner = Planner(learning=False)
    p = plan_at(planner, body(), 0.0)
    assert planner.record_outcome(p, read(1000), 1.0) is None  # >= 75% of 1,290


def test_below_minimum() -> None:
    planner = Planner(learning=False)
    p = plan_at(planner, body(), 0.0)
    assert planner.record_outcome(p, Usage(uncached=1295), 1.0) == "below_minimum"


def test_prefix_changed_logs_block_and_offset_never_text(caplog: pytest.LogCaptureFixture) -> None:
    planner = Planner(learning=False)
    one = plan_at(planner, body(f"Today is Monday, the secret plan.\n{STATIC}"), 0.0)
    planner.record_outcome(one, wrote(1300), 1.0)
    two = plan_at(planner, body(f"Today is Tuesday, the secret plan.\n{STATIC}"), 10.0)
    assert two.diagnostics is not None
    change = two.diagnostics.prefix_change
    assert change is not None
    assert (change.block, change.offset) == ("system[0]", 9)
    with caplog.at_level(logging.INFO, logger="promptcache.planner"):
        assert planner.record_outcome(two, wrote(1300), 11.0) == "prefix_changed"
    assert "system[0]" in caplog.text
    assert "offset 9" in caplog.text
    assert "Tuesday" not in caplog.text
    assert "secret" not in caplog.text


def test_prefix_changed_names_the_policy_block() -> None:
    planner = Planner(learning=False)
    for i, text in enumerate((STATIC, STATIC.replace("agent", "agents", 1))):
        spec = parse_policy({"staticBlocks": [{"name": "persona", "content": text}]})
        p = plan_at(planner, body("App text."), float(i), spec)
        reason = planner.record_outcome(p, wrote(1300), i + 0.5)
    assert reason == "prefix_changed"
    assert p.diagnostics is not None
    assert p.diagnostics.prefix_change is not None
    assert p.diagnostics.prefix_change.block == "persona"
    assert p.diagnostics.prefix_change.offset == STATIC.index("agent") + len("agent")


@pytest.mark.parametrize(
    ("ttl", "gap", "reason"),
    [("5m", 400.0, "ttl_expired"), ("1h", 400.0, "unknown"), ("5m", 10.0, "unknown")],
)
def test_ttl_expired_or_unknown(ttl: str, gap: float, reason: str) -> None:
    spec = parse_policy({"staticBlocks": [{"name": "core", "content": STATIC, "ttl": ttl}]})
    planner = Planner(learning=False)
    first = plan_at(planner, body(""), 0.0, spec)
    planner.record_outcome(first, wrote(1290), 1.0)
    again = plan_at(planner, body(""), 1.0 + gap, spec)
    assert planner.record_outcome(again, wrote(1290), 2.0 + gap) == reason


def test_simultaneous_first_requests_are_first_writes() -> None:
    planner = Planner(learning=False)
    a = plan_at(planner, body(), 0.0)
    b = plan_at(planner, body(), 0.5)
    assert planner.record_outcome(a, wrote(1290), 2.0) == "first_write"
    # b was sent before a's entry existed.
    assert planner.record_outcome(b, wrote(1290), 2.5) == "first_write"


def test_history_reasons() -> None:
    planner = Planner(learning=False)
    # Turn 2 of a conversation at t=0 writes the history prefix (through answer 0).
    t2 = plan_at(planner, body(turns=1), 0.0)
    planner.record_outcome(t2, wrote(3000), 1.0)
    # Another conversation keeps the static prefix warm at t=350.
    other = plan_at(planner, body(tag="other"), 350.0)
    planner.record_outcome(other, read(1290), 351.0)
    # Turn 3 at t=400 reads the static part but the history entry has expired.
    t3 = plan_at(planner, body(turns=2), 400.0)
    assert t3.expected_cached_tokens > 1290
    assert planner.record_outcome(t3, read(1290, 2000), 401.0) == "ttl_expired"
    # A conversation this sidecar never saw before: its history was never written here.
    stranger = plan_at(planner, body(turns=2, tag="new"), 410.0)
    assert planner.record_outcome(stranger, read(1290, 2000), 411.0) == "first_write"


def test_observe_mode_reports_no_reason() -> None:
    spec = parse_policy({"mode": "observe"})
    planner = Planner(learning=False)
    p = plan_at(planner, body(), 0.0, spec)
    assert p.expected_cached_tokens == 1290
    assert planner.record_outcome(p, Usage(uncached=1300), 1.0) is None


def test_openai_below_minimum_and_first_write() -> None:
    planner = Planner(learning=False)
    messages = [{"role": "system", "content": STATIC}, {"role": "user", "content": "hi"}]
    chat: dict[str, Any] = {"model": "gpt-4o", "messages": messages}
    p = plan_at(planner, chat, 0.0, route="chat")
    assert p.expected_cached_tokens == 1280
    # The real tokenizer counted fewer than 1,024 tokens: nothing could be cached.
    assert planner.record_outcome(p, Usage(uncached=1000), 1.0) == "below_minimum"
    q = plan_at(Planner(learning=False), chat, 0.0, route="chat")
    assert Planner(learning=False).record_outcome(q, Usage(uncached=1300), 1.0) == "first_write"
