"""``promptcache demo`` in its short mode: real simulator and sidecar processes, real SDK.

What is checked is that the figures agree with each other, never how fast anything was:
every request succeeded in all three arms (legacy, zero-config, policy); the token totals
the app received equal those the sidecars' ``/metrics`` and the simulators' ``/sim/stats``
counted (so the hit rates are equal); cost per request recomputed by hand from those
tokens at the list prices equals the report's; the arms ran on the same time scale; the
legacy arm got no cache hits and the policy arm did; each target's verdict follows from
the figures; the report folder holds the Markdown and both plots.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from promptcache.demo.cli import SHORT, SHORT_TIME_SCALE
from promptcache.demo.report import Comparison, write
from promptcache.demo.runner import DemoOptions, Progress, run_sim
from promptcache.demo.summary import ArmSummary, agrees
from promptcache.demo.workload import generate

pytestmark = pytest.mark.timeout(180)

# USD per million tokens for Claude Sonnet 4.x, as the issue states them.
INPUT, READ, WRITE_5M, OUTPUT = 3.00, 0.30, 3.75, 15.00


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def comparison(out_dir: Path) -> Comparison:
    out = out_dir
    options = DemoOptions(workload=SHORT, time_scale=SHORT_TIME_SCALE, out_dir=out)
    result = asyncio.run(run_sim(options, Progress(io.StringIO())))
    write(result, out)
    return result


def test_every_request_succeeded(comparison: Comparison) -> None:
    expected = generate(SHORT).requests
    assert [a.name for a in comparison.arms] == ["legacy", "zero-config", "policy"]
    for arm in comparison.arms:
        assert arm.failures == 0, arm.name
        assert arm.requests == expected, arm.name
        assert len(arm.latency_s) == expected
        assert len(arm.ttft_s) == expected


def test_sidecar_simulator_and_app_count_the_same_tokens(comparison: Comparison) -> None:
    sources = {(c.arm, c.source): c.tokens for c in comparison.counted}
    assert set(sources) == {
        ("legacy", "simulator /sim/stats"),
        ("zero-config", "sidecar /metrics"),
        ("zero-config", "simulator /sim/stats"),
        ("policy", "sidecar /metrics"),
        ("policy", "simulator /sim/stats"),
    }
    for (arm, source), tokens in sources.items():
        own = comparison.arm(arm).tokens
        assert agrees(tokens, own), f"{arm}: {source} counted {tokens}, the app {own}"
        assert tokens.hit_ratio == pytest.approx(own.hit_ratio, abs=1e-12)
    assert comparison.consistent()


def test_caching_happened_only_through_the_sidecar(comparison: Comparison) -> None:
    legacy, cached = comparison.legacy.tokens, comparison.promptcache.tokens
    assert legacy.cache_read == 0
    assert legacy.cache_write_5m + legacy.cache_write_1h == 0
    assert cached.cache_read > 0.3 * cached.total_input
    assert cached.total_input == pytest.approx(legacy.total_input, rel=0.05)
    zero = comparison.zero_config.tokens
    assert zero.total_input == pytest.approx(legacy.total_input, rel=0.05)


def _by_hand(arm: ArmSummary) -> tuple[float, float]:
    t, n = arm.tokens, arm.ok
    write = t.cache_write_5m + t.cache_write_1h
    inp = (t.uncached * INPUT + t.cache_read * READ + write * WRITE_5M) / 1e6 / n
    return inp, t.output * OUTPUT / 1e6 / n


def test_cost_recomputed_from_token_counts(comparison: Comparison) -> None:
    for arm in comparison.arms:
        assert arm.tokens.cache_write_1h == 0
        inp, out = _by_hand(arm)
        assert arm.cost.input == pytest.approx(inp, rel=1e-9)
        assert arm.cost.output == pytest.approx(out, rel=1e-9)
        assert arm.cost.total == pytest.approx(inp + out, rel=1e-9)
        assert arm.cost_direct == pytest.approx(inp, rel=1e-9)
    legacy_in, _ = _by_hand(comparison.legacy)
    assert legacy_in == pytest.approx(comparison.legacy.input_tokens_per_request * INPUT / 1e6)


def test_targets_follow_from_the_figures(comparison: Comparison) -> None:
    lg, zc, pc = comparison.arms
    c = comparison.ceiling
    assert c is not None
    hit, cost, p95, rps, failures, zc_hit, zc_cost, zc_direct = comparison.targets()
    rate = pc.tokens.hit_ratio
    assert hit.passed == (rate >= 0.98 * c.documents_behind and rate > 0.687)
    assert f"{rate * 100:.1f}%" in hit.value
    assert cost.passed == (pc.cost.input <= 0.33 * lg.cost.input)
    reach = 1 - pc.p95_floor / lg.p95
    assert p95.passed == (1 - pc.p95 / lg.p95 >= 0.8 * reach)
    assert "34.8%" in p95.value
    assert rps.passed == (pc.rps >= 1.29 * lg.rps)
    assert failures.passed
    assert zc_hit.passed == (zc.tokens.hit_ratio >= 0.95 * rate)
    assert zc_cost.passed == (zc.cost.input <= 1.05 * pc.cost.input)
    assert zc_direct.passed == (zc.cost.input <= lg.cost.input)


def test_hit_rate_stays_under_the_workloads_ceiling(comparison: Comparison) -> None:
    """A cache cannot read what it was never sent: a rate above the ceiling would mean
    the ceiling (or the counting) is wrong."""
    c = comparison.ceiling
    assert c is not None
    assert 0 < c.documents_behind <= c.any_cache < 1
    assert comparison.promptcache.tokens.hit_ratio <= c.documents_behind + 0.01
    assert "retrieved documents behind the history" in comparison.targets()[0].value


def test_p95_stays_above_its_floor(comparison: Comparison) -> None:
    """The floor replaces each first token by the fastest one: nothing measured beats it."""
    pc = comparison.promptcache
    assert 0 < pc.p95_floor <= pc.p95
    assert "after the fastest first token" in comparison.targets()[2].value


def test_both_arms_ran_on_the_same_time_scale(comparison: Comparison) -> None:
    scales = [n for n in comparison.notes if "simulator time scale" in n]
    assert len(scales) == 3
    assert all(f"time scale {SHORT_TIME_SCALE}," in n for n in scales), scales


def test_report_folder(comparison: Comparison, out_dir: Path) -> None:
    out = out_dir
    text = (out / "report.md").read_text("utf-8")
    for row in ("Median latency", "P95 latency", "Token cache hit rate", "Input cost / request"):
        assert f"| {row} |" in text
    assert text.count("| PASS |") + text.count("| FAIL |") == 8
    assert "| Metric | legacy | zero-config | change | policy | change | case study |" in text
    for png in ("latency.png", "cost.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text


def test_cli_short_run(tmp_path: Path) -> None:
    """The command as a user runs it: exit 0, the table, the folder named at the end."""
    out = tmp_path / "report"
    small = dataclasses.replace(SHORT, users=2)
    proc = subprocess.run(
        [sys.executable, "-m", "promptcache", "demo", "--short", "--users", str(small.users),
         "--seed", "11", "--out", str(out)],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Token cache hit rate" in proc.stdout
    assert "DIFFERENT" not in proc.stdout
    assert proc.stdout.count("  equal") == 5
    assert proc.stdout.rstrip().splitlines()[-1].startswith(f"Report: {out / 'report.md'}")
    for arm in ("legacy", "zero-config", "policy"):
        assert re.search(rf"^{arm} +\[", proc.stderr, re.MULTILINE), arm
