"""``promptcache demo`` in its short mode: real simulator and sidecar processes, real SDK.

What is checked is that the figures agree with each other, never how fast anything was:
every request succeeded; the token totals the app received equal those the sidecar's
``/metrics`` and the simulator's ``/sim/stats`` counted (so the three hit rates are
equal); cost per request recomputed by hand from those tokens at the list prices equals
the report's; both arms ran on the same time scale; the legacy arm got no cache hits and
the promptcache arm did; the report folder holds the Markdown and both plots.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
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
    for arm in (comparison.legacy, comparison.promptcache):
        assert arm.failures == 0, arm.name
        assert arm.requests == expected, arm.name
        assert len(arm.latency_s) == expected
        assert len(arm.ttft_s) == expected


def test_sidecar_simulator_and_app_count_the_same_tokens(comparison: Comparison) -> None:
    sources = {(c.arm, c.source): c.tokens for c in comparison.counted}
    assert set(sources) == {
        ("legacy", "simulator /sim/stats"),
        ("promptcache", "sidecar /metrics"),
        ("promptcache", "simulator /sim/stats"),
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


def _by_hand(arm: ArmSummary) -> tuple[float, float]:
    t, n = arm.tokens, arm.ok
    write = t.cache_write_5m + t.cache_write_1h
    inp = (t.uncached * INPUT + t.cache_read * READ + write * WRITE_5M) / 1e6 / n
    return inp, t.output * OUTPUT / 1e6 / n


def test_cost_recomputed_from_token_counts(comparison: Comparison) -> None:
    for arm in (comparison.legacy, comparison.promptcache):
        assert arm.tokens.cache_write_1h == 0
        inp, out = _by_hand(arm)
        assert arm.cost.input == pytest.approx(inp, rel=1e-9)
        assert arm.cost.output == pytest.approx(out, rel=1e-9)
        assert arm.cost.total == pytest.approx(inp + out, rel=1e-9)
        assert arm.cost_direct == pytest.approx(inp, rel=1e-9)
    legacy_in, _ = _by_hand(comparison.legacy)
    assert legacy_in == pytest.approx(comparison.legacy.input_tokens_per_request * INPUT / 1e6)


def test_targets_follow_from_the_figures(comparison: Comparison) -> None:
    lg, pc = comparison.legacy, comparison.promptcache
    hit, cost, p95, failures = comparison.targets()
    assert hit.passed == (pc.tokens.hit_ratio >= 0.85)
    assert cost.passed == (pc.cost.input <= 0.35 * lg.cost.input)
    assert p95.passed == (pc.p95 <= 0.65 * lg.p95)
    assert failures.passed


def test_hit_rate_stays_under_the_workloads_ceiling(comparison: Comparison) -> None:
    """A cache cannot read what it was never sent: a rate above the ceiling would mean
    the ceiling (or the counting) is wrong."""
    c = comparison.ceiling
    assert c is not None
    assert 0 < c.documents_behind <= c.any_cache < 1
    assert comparison.promptcache.tokens.hit_ratio <= c.documents_behind + 0.01
    assert "this workload's ceiling" in comparison.targets()[0].value


def test_p95_stays_above_its_floor(comparison: Comparison) -> None:
    """The floor replaces each first token by the fastest one: nothing measured beats it."""
    pc = comparison.promptcache
    assert 0 < pc.p95_floor <= pc.p95
    assert "for any cache in this run" in comparison.targets()[2].value


def test_both_arms_ran_on_the_same_time_scale(comparison: Comparison) -> None:
    scales = [n for n in comparison.notes if "simulator time scale" in n]
    assert len(scales) == 2
    assert all(f"time scale {SHORT_TIME_SCALE}," in n for n in scales), scales


def test_report_folder(comparison: Comparison, out_dir: Path) -> None:
    out = out_dir
    text = (out / "report.md").read_text("utf-8")
    for row in ("Median latency", "P95 latency", "Token cache hit rate", "Input cost / request"):
        assert f"| {row} |" in text
    assert text.count("| PASS |") + text.count("| FAIL |") == 4
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
    assert proc.stdout.count("  equal") == 3
    assert proc.stdout.rstrip().splitlines()[-1].startswith(f"Report: {out / 'report.md'}")
    assert "promptcache [" in proc.stderr
