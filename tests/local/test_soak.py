"""A 30-second soak: the long run's invariants, on a short run (never a speed).

``promptcache.demo.soak`` drives streaming users (official ``anthropic`` SDK) through a
real sidecar process to a real simulator process, with injected upstream faults of every
kind and policy hot-reloads (one of them invalid), and checks that only injected faults
reached the app, in the provider's shape; that each reload took effect or was refused and
counted; that RSS and open files stayed flat; that the loop-lag histogram was fed; and
that input tokens agree between the app, the sidecar's /metrics and the simulator.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from promptcache.demo.soak import FAULT_KINDS, SoakOptions, SoakResult, check, run_soak
from promptcache.usage import Usage


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> SoakResult:
    options = SoakOptions(
        minutes=0.5,
        users=10,
        fault_rate=0.2,  # enough faults for every kind, transient and persistent, in 30 s
        reload_every=8.0,
        sample_every=1.0,
        warmup=8.0,
        log_dir=tmp_path_factory.mktemp("soak"),
    )
    return asyncio.run(run_soak(options))


def test_every_invariant_held(soak: SoakResult) -> None:
    assert soak.violations == []


def test_every_fault_kind_was_injected_and_persistent_ones_reached_the_app(
    soak: SoakResult,
) -> None:
    injected = {c.fault for c in soak.calls if c.fault}
    assert injected == set(FAULT_KINDS)
    reached = {c.fault for c in soak.calls if c.fault and c.seen != "ok"}
    assert {"429", "529", "reset-before", "reset-during"} <= reached


def test_no_call_without_a_fault_failed(soak: SoakResult) -> None:
    clean = [c for c in soak.calls if c.fault is None]
    assert clean
    assert [c.seen for c in clean if c.seen != "ok"] == []


def test_reloads_alternate_and_the_invalid_one_is_refused(soak: SoakResult) -> None:
    kinds = [r.kind for r in soak.reloads]
    assert kinds[:3] == ["B", "invalid", "A"]
    assert soak.reloads[1].error
    assert soak.reloads[1].in_force == "support-agent-1h"  # the last good policy stays
    assert soak.reloads[2].in_force == "support-agent"
    assert soak.reload_errors == 1


def test_tokens_agree_three_ways(soak: SoakResult) -> None:
    app, side, sim = soak.tokens["app"], soak.tokens["sidecar"], soak.tokens["simulator"]
    assert app.total_input > 0
    assert (app.uncached, app.cache_read, app.cache_write) == (
        side.uncached,
        side.cache_read,
        side.cache_write,
    )
    assert (app.uncached, app.cache_read, app.cache_write) == (
        sim.uncached,
        sim.cache_read,
        sim.cache_write,
    )
    assert app.output == side.output


def test_process_was_sampled_and_loop_lag_measured(soak: SoakResult) -> None:
    assert len(soak.samples) >= 10
    assert all(s.rss_mb > 0 and s.fds > 0 for s in soak.samples)
    assert soak.lag_count > 0
    assert soak.lag_p99_s is not None


def test_check_catches_what_must_not_happen(soak: SoakResult, tmp_path: Path) -> None:
    """The checks can fail: a clean call failing, a sidecar 5xx, tokens that disagree."""
    from dataclasses import replace

    bad = SoakResult(options=soak.options, calls=list(soak.calls), reloads=soak.reloads)
    bad.tokens = dict(soak.tokens)
    bad.reload_errors = soak.reload_errors
    bad.lag_count = soak.lag_count
    clean = next(c for c in soak.calls if c.fault is None)
    bad.calls.append(replace(clean, seen="502 api_error (sidecar: upstream unreachable)"))
    bad.tokens["sidecar"] = Usage(uncached=1)
    found = check(bad)
    assert any("without an injected fault failed" in v for v in found)
    assert any("input tokens disagree" in v for v in found)
