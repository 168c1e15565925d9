"""The policy file is reloaded when it changes; an invalid version keeps the last good one.

Covers an in-place edit and a ConfigMap-style ``..data`` symlink swap, readiness
reporting the policy in force, the reload-error metric, and the ``policy`` label on the
call metrics.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import anthropic

from tests.local.conftest import FakeUpstream, Sidecar, StartSidecar

POLL = 0.05


def _policy(name: str, mode: str = "observe") -> str:
    return (
        "apiVersion: promptcache.io/v1alpha1\n"
        "kind: PromptPolicy\n"
        f"metadata: {{name: {name}}}\n"
        f"spec: {{provider: anthropic, mode: {mode}}}\n"
    )


async def _ready(sc: Sidecar) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(sc.admin_url + "/readyz") as r:
        body: dict[str, Any] = await r.json()
        body["status"] = r.status
        return body


async def _until(predicate: Any, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(POLL)


async def _call(sc: Sidecar) -> None:
    async with anthropic.AsyncAnthropic(api_key="k", base_url=sc.url, max_retries=0) as client:
        await client.messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )


def _calls(sc: Sidecar, policy: str) -> float:
    return sc.metric(
        "promptcache_requests_total",
        provider="anthropic",
        model="claude-sonnet-4-6",
        policy=policy,
        outcome="ok",
    )


async def test_valid_then_invalid_then_valid_again(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(_policy("support"))
    sc = await start_sidecar(policy=path, policy_poll_interval=POLL)
    ready = await _ready(sc)
    assert ready["status"] == 200
    assert ready["policy"] == "support"
    await _call(sc)
    assert _calls(sc, "support") == 1

    path.write_text("mode: sometimes\n")  # invalid: unknown mode

    async def rejected() -> bool:
        return sc.metric("promptcache_policy_reload_errors_total") == 1

    await _until(rejected)
    ready = await _ready(sc)
    assert ready["policy"] == "support"  # the last good one stays
    assert ready["policyRejected"] is True
    assert "upstreams" not in ready  # no detail on a network-reachable endpoint
    await _call(sc)
    assert _calls(sc, "support") == 2

    path.write_text(_policy("support-v2", mode="enforce"))

    async def reloaded() -> bool:
        return bool((await _ready(sc))["policy"] == "support-v2")

    await _until(reloaded)
    assert (await _ready(sc))["policyRejected"] is False
    await _call(sc)
    assert _calls(sc, "support-v2") == 1
    assert sc.metric("promptcache_policy_reload_errors_total") == 1


async def test_configmap_symlink_swap_is_seen(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    # kubelet's layout: policy.yaml -> ..data/policy.yaml, ..data -> ..<timestamp>
    first, second = tmp_path / "..2026_01", tmp_path / "..2026_02"
    first.mkdir()
    second.mkdir()
    (first / "policy.yaml").write_text(_policy("alpha"))
    (second / "policy.yaml").write_text(_policy("beta"))
    os.symlink(first.name, tmp_path / "..data")
    os.symlink("..data/policy.yaml", tmp_path / "policy.yaml")
    sc = await start_sidecar(policy=tmp_path / "policy.yaml", policy_poll_interval=POLL)
    assert (await _ready(sc))["policy"] == "alpha"

    os.symlink(second.name, tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # the atomic swap

    async def swapped() -> bool:
        return bool((await _ready(sc))["policy"] == "beta")

    await _until(swapped)


async def test_invalid_at_start_serves_pass_through(
    start_sidecar: StartSidecar, fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("spec: [not, a, mapping]\n")
    sc = await start_sidecar(policy=path, policy_poll_interval=POLL)
    ready = await _ready(sc)
    assert ready["status"] == 200  # fail open: the app's calls still work
    assert ready["policy"] is None
    assert ready["policyRejected"] is True
    assert sc.metric("promptcache_policy_reload_errors_total") == 1
    await _call(sc)
    assert _calls(sc, "none") == 1
