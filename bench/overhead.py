"""What the sidecar adds to an LLM call, against the direct path and an nginx hop.

One run, one machine: nginx serves a fixed Anthropic answer at once (the fast
upstream) and, on a second port, proxies to it (the floor for a proxy hop); the sidecar
runs as a real process in front of the same upstream. ``wrk`` sends the ~28 KB request
over one connection (added latency: median and p99) and over 75 (requests per second
and latency under load); an aiohttp client measures the streamed answer's time to first
byte; the sidecar's peak RSS is read from ``/proc``. All paths are up together and take
turns in short slices, each figure the median of its slices, so that a burst of other
work on a shared machine does not land on one path only. Figures are reported as
measured and as ratios to the direct path of the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import aiohttp

from bench import nginx, wrk
from bench.payload import request_body
from promptcache.demo.services import free_port, free_ports

CONCURRENCY = 75
TTFB_REQUESTS = 400
ROUNDS = 3
"""Slices per path and measurement, the paths taking turns (see ``measure_all``)."""
FLOOR = "aiohttp floor"
"""Row name of ``bench.minimal_proxy``."""
SIDECAR_VARIANTS: dict[str, dict[str, str]] = {
    "sidecar": {},
    "sidecar, planner off": {"PROMPTCACHE_PLANNER_ENABLED": "false"},
}
"""Sidecar rows: as shipped (no policy: the planner still reads each request for its
miss diagnosis), and with the planner switched off (the proxy and its measurement)."""


@dataclass(frozen=True, slots=True)
class PathFigures:
    name: str
    sequential: wrk.Result
    loaded: wrk.Result
    ttfb_p50: float
    ttfb_p99: float
    own: OwnTime | None = None
    """The sidecar's own time per call, from its ``promptcache_overhead_seconds``."""


@dataclass(frozen=True, slots=True)
class OwnTime:
    """``promptcache_overhead_seconds`` over a run: mean and the bucket holding p99."""

    mean: float
    p99_at_most: float
    calls: int


def own_time(admin_url: str) -> OwnTime | None:
    """Read the sidecar's overhead histogram from its ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(admin_url + "/metrics", timeout=10).read().decode()
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "promptcache_overhead_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
    if not count:
        return None
    p99 = next(le for le, n in sorted(buckets) if n >= 0.99 * count)
    return OwnTime(mean=total / count, p99_at_most=p99, calls=int(count))


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError("the sidecar exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the sidecar did not start")


@contextlib.contextmanager
def sidecar(upstream: str, port: int, extra_env: dict[str, str]) -> Iterator[tuple[int, str]]:
    """The sidecar as a real process; yields its pid and admin URL."""
    admin = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTCACHE_", "OTEL_"))}
    env |= {"PROMPTCACHE_LOG_LEVEL": "WARNING"} | extra_env
    argv = [
        sys.executable, "-m", "promptcache", "sidecar",
        "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
        "--anthropic-upstream", upstream,
    ]  # fmt: skip
    process = subprocess.Popen(argv, env=env)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", process)
        yield process.pid, f"http://127.0.0.1:{admin}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _ttfb(url: str, body: bytes, count: int) -> list[float]:
    headers = {
        "Content-Type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "bench-key",
        "x-bench-stream": "1",
    }
    times: list[float] = []
    async with aiohttp.ClientSession() as http:
        for i in range(count + 20):
            start = time.perf_counter()
            async with http.post(url, data=body, headers=headers) as r:
                await r.content.readany()
                first = time.perf_counter() - start
                await r.read()
            if i >= 20:  # warm-up
                times.append(first)
    return times


def _median_result(results: list[wrk.Result]) -> wrk.Result:
    """Each figure's median over the rounds of one path."""
    errors = "; ".join(r.errors for r in results if r.errors) or None
    return wrk.Result(
        p50=statistics.median(r.p50 for r in results),
        p90=statistics.median(r.p90 for r in results),
        p99=statistics.median(r.p99 for r in results),
        rps=statistics.median(r.rps for r in results),
        errors=errors,
    )


def slice_seconds(seconds: float, rounds: int) -> int:
    """``seconds`` split into ``rounds`` slices, whole seconds each (wrk takes no less)."""
    return max(1, round(seconds / rounds))


def loaded_rounds(
    bases: dict[str, str], body: bytes, seconds: float, rounds: int
) -> dict[str, wrk.Result]:
    """``CONCURRENCY`` connections per path, the paths taking turns ``rounds`` times."""
    slices: dict[str, list[wrk.Result]] = {name: [] for name in bases}
    for base in bases.values():  # warm-up: pools filled, code paths hot
        wrk.run(base + "/v1/messages", body, connections=CONCURRENCY, seconds=1, stream=False)
    for _ in range(rounds):
        for name, base in bases.items():
            url = base + "/v1/messages"
            result = wrk.run(url, body, connections=CONCURRENCY, seconds=seconds, stream=False)
            slices[name].append(result)
    return {name: _median_result(results) for name, results in slices.items()}


def measure_all(
    bases: dict[str, str], body: bytes, stream_body: bytes, seconds: float, rounds: int
) -> list[PathFigures]:
    """Every path, taking turns: ``rounds`` slices of ``seconds / rounds`` each, sequential
    then loaded, each figure the median of its slices.

    The machine may be shared: a burst of someone else's work then lands on a slice of
    every path alike instead of on one path's whole measurement.
    """
    share = slice_seconds(seconds, rounds)
    for base in bases.values():
        wrk.run(base + "/v1/messages", body, connections=1, seconds=1, stream=False)
    sequential: dict[str, list[wrk.Result]] = {name: [] for name in bases}
    for _ in range(rounds):
        for name, base in bases.items():
            url = base + "/v1/messages"
            sequential[name].append(wrk.run(url, body, connections=1, seconds=share, stream=False))
    loaded = loaded_rounds(bases, body, share, rounds)
    out: list[PathFigures] = []
    for name, base in bases.items():
        ttfb = sorted(asyncio.run(_ttfb(base + "/v1/messages", stream_body, TTFB_REQUESTS)))
        out.append(
            PathFigures(
                name=name,
                sequential=_median_result(sequential[name]),
                loaded=loaded[name],
                ttfb_p50=statistics.median(ttfb),
                ttfb_p99=ttfb[int(len(ttfb) * 0.99) - 1],
            )
        )
    return out


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    ).stdout.strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "commit": commit or "unknown",
        "load average at the end (1, 5, 15 min; the machine may be shared)": load,
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "aiohttp": metadata.version("aiohttp"),
        "nginx": nginx.version(),
        "wrk": wrk.version(),
    }


@dataclass(frozen=True, slots=True)
class Run:
    """Everything one benchmark run measured."""

    fast: list[PathFigures]
    """Against nginx's fixed answer: the strictest view of each hop's cost."""
    python: list[tuple[str, wrk.Result]]
    """At 75 connections against a Python (aiohttp) upstream."""
    rss_mb: float
    machine: dict[str, str]
    rounds: int = ROUNDS
    """Interleaved slices per path and measurement."""


@contextlib.contextmanager
def minimal_proxy(port: int, upstream: str) -> Iterator[None]:
    """``bench.minimal_proxy``: the floor for any aiohttp hop."""
    with _module_process(port, "bench.minimal_proxy", str(port), upstream):
        yield


@contextlib.contextmanager
def python_upstream(port: int) -> Iterator[None]:
    with _module_process(port, "bench.upstream_app", str(port)):
        yield


@contextlib.contextmanager
def _module_process(port: int, module: str, *args: str) -> Iterator[None]:
    process = subprocess.Popen([sys.executable, "-m", module, *args])
    try:
        _wait_ready(f"http://127.0.0.1:{port}", process)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def all_paths(
    upstream: str, nginx_base: str, floor_port: int, sidecar_ports: dict[str, int]
) -> Iterator[tuple[dict[str, str], dict[str, tuple[int, str]]]]:
    """Every path up at once in front of ``upstream``: base URLs by row name (in table
    order), and each sidecar's pid and admin URL."""
    with contextlib.ExitStack() as stack:
        bases = {"direct": upstream, "nginx": nginx_base}
        stack.enter_context(minimal_proxy(floor_port, upstream))
        bases[FLOOR] = f"http://127.0.0.1:{floor_port}"
        sidecars: dict[str, tuple[int, str]] = {}
        for name, env in SIDECAR_VARIANTS.items():
            port = sidecar_ports[name]
            sidecars[name] = stack.enter_context(sidecar(upstream, port, env))
            bases[name] = f"http://127.0.0.1:{port}"
        yield bases, sidecars


def run(*, seconds: float = 8.0, rounds: int = ROUNDS) -> Run:
    """Measure direct, nginx and sidecar paths; also the sidecar's peak RSS (MB)."""
    body, stream_body = request_body(), request_body(stream=True)
    upstream_port, proxy_port, answer_port, py_port, py_proxy, floor_port = free_ports(6)
    sidecar_ports = dict(zip(SIDECAR_VARIANTS, free_ports(len(SIDECAR_VARIANTS)), strict=True))
    rss = 0.0
    with (
        python_upstream(py_port),
        nginx.running(
            upstream_port=upstream_port,
            proxy_port=proxy_port,
            answer_port=answer_port,
            python_port=py_port,
            python_proxy_port=py_proxy,
        ),
    ):
        fast_upstream = f"http://127.0.0.1:{upstream_port}"
        nginx_fast = f"http://127.0.0.1:{proxy_port}"
        with all_paths(fast_upstream, nginx_fast, floor_port, sidecar_ports) as (bases, sidecars):
            fast = [
                dataclasses.replace(f, own=own_time(sidecars[f.name][1]))
                if f.name in sidecars
                else f
                for f in measure_all(bases, body, stream_body, seconds, rounds)
            ]
            rss = max([rss, *(peak_rss_mb(pid) for pid, _ in sidecars.values())])
        py_upstream = f"http://127.0.0.1:{py_port}"
        nginx_py = f"http://127.0.0.1:{py_proxy}"
        with all_paths(py_upstream, nginx_py, floor_port, sidecar_ports) as (bases, sidecars):
            share = slice_seconds(seconds, rounds)
            python = list(loaded_rounds(bases, body, share, rounds).items())
            rss = max([rss, *(peak_rss_mb(pid) for pid, _ in sidecars.values())])
    return Run(fast=fast, python=python, rss_mb=rss, machine=machine(), rounds=rounds)
