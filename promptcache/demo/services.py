"""The demo's helper processes: the simulator, the sidecar, llama-server.

Each runs as a real subprocess on a free loopback port, exactly as a user would start it
(``python -m promptcache simulate ...``), with its output in a log file of the report
folder, and is stopped with SIGTERM (then SIGKILL) by the process id we started. The
readiness wait is bounded; a process that exits early is reported with its log's tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from promptcache.usage import Usage

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A helper process did not come up."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (the OS picks them; the
    sockets are held open together while chosen, so no two are the same)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def promptcache_command(*args: str) -> list[str]:
    """``promptcache ARGS`` run with this interpreter (works without the venv on PATH)."""
    return [sys.executable, "-m", "promptcache", *args]


class Service:
    """One subprocess, started on enter and stopped on exit."""

    def __init__(self, name: str, argv: list[str], *, ready_url: str, log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.ready_url = ready_url
        self.log_path = log_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    async def start(self, *, wait_s: float = 180.0) -> None:
        # 180 s, not 60: on a 2-core machine shared with other work (load average near
        # 100) the sidecar once took over 60 s just to import and bind.
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("PROMPTCACHE_POLICY", None)  # the demo says which policy, or none
        self._proc = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, not awaited
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        await self._wait_ready(wait_s)

    async def _wait_ready(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    raise ServiceError(
                        f"{self.name} exited with {self._proc.returncode}: {self.tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    async with session.get(
                        self.ready_url, timeout=aiohttp.ClientTimeout(total=2)
                    ) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise ServiceError(f"{self.name} not ready after {wait_s:.0f}s: {self.tail()}")

    @property
    def pid(self) -> int | None:
        """The running process's id (``None`` before start and after stop)."""
        return self._proc.pid if self._proc is not None else None

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text("utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, *, grace: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self) -> Service:
        try:
            await self.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def simulator(
    *, time_scale: float, seed: int, log_dir: Path, extra: Sequence[str] = ()
) -> tuple[Service, str]:
    """A fresh provider simulator (``extra``: more ``simulate`` flags); returns the
    service and its base URL."""
    port = free_port()
    argv = promptcache_command(
        "simulate",
        "--listen",
        f"127.0.0.1:{port}",
        "--time-scale",
        f"{time_scale:g}",
        "--seed",
        str(seed),
        *extra,
    )
    base = f"http://127.0.0.1:{port}"
    return Service("simulator", argv, ready_url=base + "/sim/stats", log_dir=log_dir), base


def sidecar(
    *, policy: Path | None, anthropic: str, openai: str, log_dir: Path
) -> tuple[Service, str, str]:
    """A sidecar in front of the given upstreams; returns it, its base URL and admin URL.

    ``policy=None`` starts it with no policy at all (the zero-config arm)."""
    port, admin = free_port(), free_port()
    argv = promptcache_command(
        "sidecar",
        "--listen",
        f"127.0.0.1:{port}",
        "--admin-listen",
        f"127.0.0.1:{admin}",
        *(("--policy", str(policy)) if policy is not None else ()),
        "--anthropic-upstream",
        anthropic,
        "--openai-upstream",
        openai,
    )
    admin_url = f"http://127.0.0.1:{admin}"
    svc = Service("sidecar", argv, ready_url=admin_url + "/readyz", log_dir=log_dir)
    return svc, f"http://127.0.0.1:{port}", admin_url


async def get_text(url: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp,
    ):
        resp.raise_for_status()
        return await resp.text()


def sidecar_tokens(metrics_text: str) -> Usage:
    """Token totals from the sidecar's ``promptcache_input/output_tokens_total``."""
    kinds: dict[str, float] = {}
    output = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "promptcache_input_tokens_total":
                kind = sample.labels.get("kind", "")
                kinds[kind] = kinds.get(kind, 0.0) + sample.value
            elif sample.name == "promptcache_output_tokens_total":
                output += sample.value
    return Usage(
        uncached=int(kinds.get("uncached", 0)),
        cache_read=int(kinds.get("cache_read", 0)),
        cache_write_5m=int(kinds.get("cache_write", 0)),
        output=int(output),
    )


def simulator_tokens(stats: dict[str, Any]) -> Usage | None:
    """Token totals from the simulator's ``/sim/stats`` (None if it has no token counts)."""
    tokens = stats.get("tokens")
    if not isinstance(tokens, dict):
        return None

    def n(key: str) -> int:
        value = tokens.get(key, 0)
        return int(value) if isinstance(value, int | float) else 0

    return Usage(
        uncached=n("uncached"),
        cache_read=n("cache_read"),
        cache_write_5m=n("cache_write_5m"),
        cache_write_1h=n("cache_write_1h"),
        output=n("output"),
    )
