"""Fixtures of the client tier: the frameworks apps really use, through the real sidecar.

``stack`` runs the bundled simulator (keys required, as the providers do) and the real
sidecar application in front of it, both on loopback in the test's event loop; the
frameworks are pointed at the sidecar the way injection points the official SDKs (base
URL only). ``Stack.delta()`` reads what the simulator itself counted for the calls made
since the last look, to check the usage each client reports against the provider's.

The case study's request pattern: a long static system message, a second one carrying
the current time, then the user's question.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from promptcache.sidecar.admin import create_admin_app
from promptcache.sidecar.app import build_state, create_app
from promptcache.sidecar.config import SidecarSettings
from promptcache.sidecar.state import SidecarState
from promptcache.simulator import ManualClock, SimConfig, SimServer

ANTHROPIC_MODEL = "claude-sonnet-4-6"
OPENAI_MODEL = "gpt-4o-mini"
STATIC_SYSTEM = (
    "You are the support agent of an online shop. Answer from the policies below, "
    "politely and briefly. "
    + " ".join(
        f"Policy {i}: returns within {i % 30 + 1} days need the receipt." for i in range(160)
    )
)
"""~2,400 tokens: above every minimum cacheable prefix of the models used here."""
KEY = "sk-client-tier-key"
POLICY = """\
apiVersion: promptcache.io/v1alpha1
kind: PromptPolicy
metadata: {name: client-tier}
spec:
  provider: anthropic
  volatile: {action: relocate}
"""
"""What an app team with the case study's pattern writes: relocate what changes (the time)."""


def dynamic_system(minute: int) -> str:
    """The case study's volatile line: the current time (a different minute per call)."""
    at = datetime.datetime(2026, 12, 4, 10, minute % 60, tzinfo=datetime.UTC)
    return f"Current time: {at.isoformat()}"


@dataclass
class Stack:
    """The simulator and the sidecar in front of it."""

    sim: SimServer
    sidecar_url: str
    state: SidecarState
    registry: CollectorRegistry
    _seen: dict[str, int] = field(default_factory=dict)

    @property
    def openai_url(self) -> str:
        return self.sidecar_url + "/v1"

    def delta(self) -> dict[str, int]:
        """Tokens the simulator counted since the previous call of ``delta``."""
        now: dict[str, int] = dict(self.sim.stats()["tokens"])
        out = {k: now[k] - self._seen.get(k, 0) for k in now}
        self._seen = now
        return out

    def requests(self) -> int:
        return int(self.sim.stats()["requests"])


@pytest.fixture
def policy_text() -> str | None:
    """The sidecar's policy file; a test module overrides this fixture (None: no policy)."""
    return POLICY


@pytest.fixture
async def stack(tmp_path: Path, policy_text: str | None) -> AsyncIterator[Stack]:
    sim = SimServer(SimConfig(time_scale=0, clock=ManualClock(), require_auth=True))
    await sim.start()
    policy: Path | None = None
    if policy_text is not None:
        policy = tmp_path / "policy.yaml"
        policy.write_text(policy_text)
    settings = SidecarSettings(
        anthropic_upstream=sim.url, openai_upstream=sim.url, retry_backoff=0.01, policy=policy
    )
    registry = CollectorRegistry()
    state = build_state(settings, registry=registry)
    proxy = TestServer(create_app(state), host="127.0.0.1")
    admin = TestServer(create_admin_app(state), host="127.0.0.1")
    await proxy.start_server()
    await admin.start_server()
    try:
        yield Stack(sim, str(proxy.make_url("")).rstrip("/"), state, registry)
    finally:
        await admin.close()
        await proxy.close()
        await sim.stop()


def tokens_of(usage: dict[str, Any]) -> dict[str, int]:
    """Anthropic-shaped usage as the simulator's kinds."""
    return {
        "uncached": int(usage.get("input_tokens") or 0),
        "cache_read": int(usage.get("cache_read_input_tokens") or 0),
        "cache_write": int(usage.get("cache_creation_input_tokens") or 0),
        "output": int(usage.get("output_tokens") or 0),
    }
