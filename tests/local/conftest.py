"""Shared fixtures of the local tier: real servers on loopback, driven by the official SDKs.

* ``fake_upstream``: a running ``tests.local.fake_upstream.FakeUpstream``, a scripted
  Anthropic + OpenAI server that answers with realistic bodies and event streams carrying
  cache usage, records what it got, and misbehaves on request (status codes, resets, slow
  headers). Its names are re-exported here for the tests that import them from conftest.
* ``start_sidecar``: builds the real sidecar application (``sidecar.app``) on a free
  loopback port with a fresh metrics registry and an in-memory span exporter;
  ``Sidecar`` gives its URLs and reads its metrics.
* ``sidecar_process``: ``promptcache sidecar`` as a real child process (flags and
  environment as given), ready when it answers ``/readyz``; stopped with SIGTERM.
* ``simulator_url``: ``promptcache simulate`` as a real child process (the demo's
  ``demo.services.simulator``: no simulated sleeps, seed 0); yields its base URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from promptcache.demo.services import free_port, simulator
from promptcache.sidecar.admin import create_admin_app
from promptcache.sidecar.app import build_state, create_app
from promptcache.sidecar.config import SidecarSettings
from promptcache.sidecar.planner import Planner
from promptcache.sidecar.state import SidecarState
from tests.local.fake_upstream import (
    REPLY,
    Behaviour,
    CacheUsage,
    FakeUpstream,
    Recorded,
    reset_before_headers,
    reset_mid_stream,
    slow_headers,
    sse,
    status,
    stream_events,
)

__all__ = [
    "REPLY",
    "Behaviour",
    "CacheUsage",
    "FakeUpstream",
    "Recorded",
    "RunSidecar",
    "Sidecar",
    "SidecarProcess",
    "StartSidecar",
    "free_port",
    "reset_before_headers",
    "reset_mid_stream",
    "slow_headers",
    "sse",
    "status",
    "stream_events",
]


@pytest.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()


# --------------------------------------------------------------------------- the sidecar
@dataclass
class Sidecar:
    """A running sidecar application on loopback."""

    url: str
    admin_url: str
    state: SidecarState
    registry: CollectorRegistry
    spans: InMemorySpanExporter

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value (0.0 when it was never set)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def finished_spans(self) -> tuple[ReadableSpan, ...]:
        return self.spans.get_finished_spans()


StartSidecar = Callable[..., Awaitable[Sidecar]]


@pytest.fixture
async def start_sidecar(fake_upstream: FakeUpstream) -> AsyncIterator[StartSidecar]:
    """``await start_sidecar(**settings)``: a sidecar in front of ``fake_upstream``.

    ``planner=`` replaces the planner (a spy, or one that fails on purpose).
    """
    servers: list[TestServer] = []
    providers: list[TracerProvider] = []

    async def start(*, planner: Planner | None = None, **overrides: Any) -> Sidecar:
        values: dict[str, Any] = {
            "anthropic_upstream": fake_upstream.url,
            "openai_upstream": fake_upstream.url,
            "retry_backoff": 0.01,
        } | overrides
        settings = SidecarSettings(**values)
        registry = CollectorRegistry()
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
        state = build_state(settings, registry=registry, tracer_provider=provider, planner=planner)
        proxy = TestServer(create_app(state, tracer_provider=provider), host="127.0.0.1")
        admin = TestServer(create_admin_app(state), host="127.0.0.1")
        await proxy.start_server()
        await admin.start_server()
        servers.extend([proxy, admin])
        return Sidecar(
            url=str(proxy.make_url("")).rstrip("/"),
            admin_url=str(admin.make_url("")).rstrip("/"),
            state=state,
            registry=registry,
            spans=exporter,
        )

    try:
        yield start
    finally:
        for server in reversed(servers):
            await server.close()
        for provider in providers:
            provider.shutdown()


@dataclass
class SidecarProcess:
    """``promptcache sidecar`` running as a child process."""

    url: str
    admin_url: str
    process: asyncio.subprocess.Process

    async def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then the exit code (killed after ``timeout``)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise


RunSidecar = Callable[..., contextlib.AbstractAsyncContextManager[SidecarProcess]]


@contextlib.asynccontextmanager
async def _run_sidecar(
    args: Sequence[str] = (), env: Mapping[str, str] | None = None, *, ready_timeout: float = 60.0
) -> AsyncIterator[SidecarProcess]:
    port, admin = free_port(), free_port()
    argv = [
        sys.executable, "-m", "promptcache", "sidecar",
        "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}", *args,
    ]  # fmt: skip
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTCACHE_", "OTEL_"))}
    child_env.update(env or {})
    process = await asyncio.create_subprocess_exec(
        *argv, env=child_env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    running = SidecarProcess(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", process)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert process.returncode is None, "the sidecar exited during start-up"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(running.admin_url + "/readyz") as r:
                        if r.status == 200:
                            break
                assert loop.time() < deadline, "the sidecar did not become ready"
                await asyncio.sleep(0.1)
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
def sidecar_process() -> RunSidecar:
    """``async with sidecar_process(args, env) as proc``: a real sidecar process."""
    return _run_sidecar


# --------------------------------------------------------------------------- the simulator
@pytest.fixture
async def simulator_url(tmp_path: Path) -> AsyncIterator[str]:
    """A fresh ``promptcache simulate`` process (time scale 0: answers at once); its URL.

    Its output goes to ``simulator/simulator.log`` under the test's ``tmp_path``.
    """
    service, url = simulator(time_scale=0.0, seed=0, log_dir=tmp_path / "simulator")
    async with service:
        yield url
