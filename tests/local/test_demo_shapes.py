"""The demo's extra app shapes: each runs its three arms with real processes and the SDK.

For the agent with tools, the RAG app with documents in the user message and the
multi-tenant app, a few users run through legacy, zero-config and the hand-written
policy. Checked: every request succeeds, every component counts the same tokens, the
legacy app reads nothing from cache and the hand-written policy does, and the printed
targets are the zero-config ones, with verdicts that follow from the figures. How fast
anything ran is never checked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path

import pytest

from promptcache.demo.cli import SHORT, SHORT_TIME_SCALE
from promptcache.demo.report import Comparison
from promptcache.demo.runner import DemoOptions, Progress, run_sim
from promptcache.demo.shapes import SHAPES

pytestmark = pytest.mark.timeout(240)

SMALL = dataclasses.replace(SHORT, users=3, turns=(2, 3))


@pytest.fixture(scope="module", params=["agent", "rag", "tenants"])
def comparison(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Comparison:
    out = tmp_path_factory.mktemp(request.param)
    options = DemoOptions(
        workload=SMALL, time_scale=SHORT_TIME_SCALE, out_dir=out, app=request.param
    )
    return asyncio.run(run_sim(options, Progress(io.StringIO())))


def test_three_arms_succeed_and_count_alike(comparison: Comparison) -> None:
    expected = SHAPES[comparison.app].generate(SMALL).requests
    for arm in comparison.arms:
        assert arm.failures == 0, arm.name
        assert arm.requests == expected, arm.name
    assert len(comparison.counted) == 5
    assert comparison.consistent()


def test_only_the_sidecar_caches(comparison: Comparison) -> None:
    legacy, policy = comparison.legacy.tokens, comparison.promptcache.tokens
    assert legacy.cache_read == 0
    assert legacy.cache_write == 0
    assert policy.cache_read > 0
    for arm in (comparison.zero_config, comparison.promptcache):
        assert arm.tokens.total_input == pytest.approx(legacy.total_input, rel=0.05), arm.name


def test_zero_config_targets(comparison: Comparison) -> None:
    lg, zc, pc = comparison.arms
    hit, direct, failures = comparison.targets()
    assert "90% of the hand-written policy's" in hit.name
    assert hit.passed == (zc.tokens.hit_ratio >= 0.9 * pc.tokens.hit_ratio)
    assert "never costs more than direct" in direct.name
    assert direct.passed == (zc.cost.input <= lg.cost.input)
    assert failures.passed
    assert "case study" not in comparison.text()


def test_policy_files_load(comparison: Comparison, tmp_path: Path) -> None:
    from promptcache.policy import load_policy_file

    loaded = load_policy_file(SHAPES[comparison.app].policy)
    assert loaded.name == comparison.app
    assert loaded.spec.volatile.action == "relocate"
