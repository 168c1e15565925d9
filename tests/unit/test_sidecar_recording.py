"""The record stage: one record per call, whichever way the handler leaves."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from promptcache.sidecar.accounting import Call, Recording
from promptcache.sidecar.app import build_state
from promptcache.sidecar.config import SidecarSettings
from promptcache.sidecar.relay import Relayed
from promptcache.sidecar.state import SidecarState


def _state() -> tuple[SidecarState, CollectorRegistry]:
    registry = CollectorRegistry()
    return build_state(SidecarSettings(), registry=registry), registry


def _call() -> Call:
    return Call(
        arrived=time.perf_counter(),
        family="anthropic",
        provider="anthropic",
        policy=None,
        policy_label="none",
    )


def _count(registry: CollectorRegistry, outcome: str) -> float:
    labels = {"provider": "anthropic", "model": "other", "policy": "none", "outcome": outcome}
    return registry.get_sample_value("promptcache_requests_total", labels) or 0.0


async def test_an_answered_call_is_counted_once_off_the_path() -> None:
    state, registry = _state()
    with Recording(state, _call()) as recording:
        recording.answered(Relayed(200, "ok"))
    assert _count(registry, "ok") == 1  # a scrape runs the backlog first
    state.backlog.close()
    assert _count(registry, "ok") == 1


async def test_a_failed_call_is_counted_once_with_its_outcome() -> None:
    state, registry = _state()
    with Recording(state, _call()) as recording:
        recording.failed("timeout", 504)
    assert _count(registry, "timeout") == 1
    assert _count(registry, "ok") == 0


async def test_a_cancelled_call_is_counted_as_client_closed() -> None:
    state, registry = _state()
    call = _call()
    with pytest.raises(asyncio.CancelledError), Recording(state, call):
        raise asyncio.CancelledError
    assert _count(registry, "client_closed") == 1


async def test_a_bug_counts_nothing_and_propagates() -> None:
    state, registry = _state()
    with pytest.raises(KeyError), Recording(state, _call()):
        raise KeyError("bug")
    assert sum(_count(registry, o) for o in ("ok", "client_closed", "internal_error")) == 0
