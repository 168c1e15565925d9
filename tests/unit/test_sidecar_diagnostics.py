"""The conversation table behind Anthropic diagnostics chaining, and the verdict rules."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from promptcache.sidecar.cli import configure, settings_from
from promptcache.sidecar.diagnostics import (
    MISSING,
    NO_DIVERGENCE,
    PENDING,
    Chain,
    disagrees,
    provider_reason,
)


def turn(n: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for i in range(n):
        messages += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]
    return [*messages, {"role": "user", "content": f"q{n}"}]


def test_a_turn_finds_the_answer_it_continues() -> None:
    chain = Chain()
    first = chain.link({"messages": turn(0)})
    assert first is not None
    assert first.previous is None
    chain.remember(first, "msg_1")
    second = chain.link({"messages": turn(1)})
    assert second is not None
    assert second.previous == "msg_1"
    assert second.fields() == {"diagnostics": {"previous_message_id": "msg_1"}}


def test_markers_do_not_change_the_conversation() -> None:
    chain = Chain()
    first = chain.link({"messages": turn(0)})
    assert first is not None
    chain.remember(first, "msg_1")
    marked = turn(1)
    marked[0] = {
        "role": "user",
        "content": [{"type": "text", "text": "q0", "cache_control": {"type": "ephemeral"}}],
    }
    plain = turn(1)
    plain[0] = {"role": "user", "content": [{"type": "text", "text": "q0"}]}
    assert chain.link({"messages": marked}) == chain.link({"messages": plain})


def test_an_app_that_sends_diagnostics_is_left_alone() -> None:
    assert Chain().link({"messages": turn(0), "diagnostics": {"previous_message_id": None}}) is None


def test_bounded() -> None:
    chain = Chain(capacity=2)
    for i in range(5):
        link = chain.link({"messages": [{"role": "user", "content": f"c{i}"}]})
        assert link is not None
        chain.remember(link, f"msg_{i}")
    assert len(chain) == 2


def test_verdicts() -> None:
    assert provider_reason(MISSING) is None
    assert provider_reason(None) == NO_DIVERGENCE
    assert provider_reason({"cache_miss_reason": None}) == PENDING
    assert provider_reason({"cache_miss_reason": {"type": "tools_changed"}}) == "tools_changed"
    assert provider_reason({"cache_miss_reason": {"type": "new_kind"}}) == "other"
    assert disagrees("system_changed", "ttl_expired")
    assert disagrees(NO_DIVERGENCE, "prefix_changed")
    assert not disagrees("system_changed", "prefix_changed")
    assert not disagrees(NO_DIVERGENCE, None)
    assert not disagrees("previous_message_not_found", "prefix_changed")
    assert not disagrees(PENDING, "prefix_changed")
    assert not disagrees("system_changed", "first_write")
    assert not disagrees(NO_DIVERGENCE, "first_write")
    assert disagrees("messages_changed", None)


def test_the_switch_is_off_by_default_and_works_bare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMPTCACHE_ANTHROPIC_DIAGNOSTICS", raising=False)
    parser = argparse.ArgumentParser()
    configure(parser, "sidecar")

    def on(*argv: str) -> bool:
        return settings_from(parser.parse_args(list(argv))).anthropic_diagnostics

    assert not on()
    assert on("--anthropic-diagnostics")  # as the injection webhook passes it
    assert not on("--anthropic-diagnostics", "false")
    monkeypatch.setenv("PROMPTCACHE_ANTHROPIC_DIAGNOSTICS", "true")
    assert on()
