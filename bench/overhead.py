"""What the sidecar adds to an LLM call, against the direct path, an nginx hop and the peers.

One run, one machine, two upstreams. The Python upstream (``bench.upstream_app``, the
kind of server an app reaches locally) has every arm in front of it: nginx, a bare
aiohttp proxy, the sidecar, and the gateways users would pick instead (LiteLLM's proxy,
Portkey's gateway; ``bench.peers``). The fast upstream (nginx answering a fixed message
at once) measures the hops alone: nginx, the aiohttp floor and the sidecar. ``wrk``
sends the ~28 KB request over one connection (added latency: median and p99) and over
75 (requests per second and latency under load, with each arm's and the upstream's CPU
time from ``/proc``); an aiohttp client measures the streamed answer's time to first
byte; peak RSS is each arm's processes' ``VmHWM``. All paths are up together and take
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

from bench import nginx, peers, wrk
from bench.payload import API_KEY, request_body
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
class Target:
    """Where one arm listens, and the headers each of its requests needs."""

    url: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    pids: tuple[int, ...] = ()
    """Processes whose CPU time and peak RSS are the arm's (none: not measured)."""


@dataclass(frozen=True, slots=True)
class PathFigures:
    name: str
    sequential: wrk.Result
    loaded: wrk.Result
    ttfb_p50: float
    ttfb_p99: float
    own: OwnTime | None = None
    """The sidecar's own time per call, from its ``promptcache_overhead_seconds``."""
    cpu: float | None = None
    """The arm's processes' CPU time during its loaded slices, in cores (1.0: one core)."""
    upstream_cpu: float | None = None
    """The upstream's CPU time during the same slices, in cores."""
    rss_mb: float | None = None
    """Peak RSS (VmHWM) of the arm's processes at the end of the scenario."""


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


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a gateway may fork workers)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
    return out


def tree_peak_rss_mb(pids: tuple[int, ...]) -> float:
    """Sum of the peak RSS of ``pids`` and their descendants (each one's own peak)."""
    total = 0.0
    for pid in pids:
        for p in process_tree(pid):
            with contextlib.suppress(OSError):
                total += peak_rss_mb(p)
    return total


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: tuple[int, ...]) -> float:
    """User + system CPU seconds used so far by ``pids`` and their descendants."""
    total = 0.0
    for pid in pids:
        for p in process_tree(pid):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


async def _ttfb(url: str, body: bytes, count: int, extra: dict[str, str]) -> list[float]:
    headers = {
        "Content-Type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": API_KEY,
        "x-bench-stream": "1",
    } | extra
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


@dataclass(frozen=True, slots=True)
class Loaded:
    """One arm at ``CONCURRENCY`` connections: wrk's medians and the CPU it took."""

    result: wrk.Result
    cpu: float | None
    upstream_cpu: float | None


def loaded_rounds(
    bases: dict[str, Target],
    body: bytes,
    seconds: float,
    rounds: int,
    *,
    upstream_pids: tuple[int, ...] = (),
) -> dict[str, Loaded]:
    """``CONCURRENCY`` connections per path, the paths taking turns ``rounds`` times."""
    slices: dict[str, list[wrk.Result]] = {name: [] for name in bases}
    cpu: dict[str, float] = dict.fromkeys(bases, 0.0)
    upstream_cpu: dict[str, float] = dict.fromkeys(bases, 0.0)
    wall: dict[str, float] = dict.fromkeys(bases, 0.0)
    for t in bases.values():  # warm-up: pools filled, code paths hot
        wrk.run(
            t.url + "/v1/messages", body, connections=CONCURRENCY, seconds=1, stream=False,
            headers=t.headers,
        )  # fmt: skip
    for _ in range(rounds):
        for name, t in bases.items():
            url = t.url + "/v1/messages"
            before = (time.monotonic(), cpu_seconds(t.pids), cpu_seconds(upstream_pids))
            result = wrk.run(
                url, body, connections=CONCURRENCY, seconds=seconds, stream=False,
                headers=t.headers,
            )  # fmt: skip
            wall[name] += time.monotonic() - before[0]
            cpu[name] += cpu_seconds(t.pids) - before[1]
            upstream_cpu[name] += cpu_seconds(upstream_pids) - before[2]
            slices[name].append(result)
    return {
        name: Loaded(
            result=_median_result(results),
            cpu=cpu[name] / wall[name] if bases[name].pids else None,
            upstream_cpu=upstream_cpu[name] / wall[name] if upstream_pids else None,
        )
        for name, results in slices.items()
    }


def measure_all(
    bases: dict[str, Target],
    body: bytes,
    stream_body: bytes,
    seconds: float,
    rounds: int,
    *,
    upstream_pids: tuple[int, ...] = (),
) -> list[PathFigures]:
    """Every path, taking turns: ``rounds`` slices of ``seconds / rounds`` each, sequential
    then loaded, each figure the median of its slices.

    The machine may be shared: a burst of someone else's work then lands on a slice of
    every path alike instead of on one path's whole measurement.
    """
    share = slice_seconds(seconds, rounds)
    for t in bases.values():
        wrk.run(
            t.url + "/v1/messages", body, connections=1, seconds=1, stream=False,
            headers=t.headers,
        )  # fmt: skip
    sequential: dict[str, list[wrk.Result]] = {name: [] for name in bases}
    for _ in range(rounds):
        for name, t in bases.items():
            url = t.url + "/v1/messages"
            sequential[name].append(
                wrk.run(url, body, connections=1, seconds=share, stream=False, headers=t.headers)
            )
    loaded = loaded_rounds(bases, body, share, rounds, upstream_pids=upstream_pids)
    out: list[PathFigures] = []
    for name, t in bases.items():
        ttfb = sorted(
            asyncio.run(_ttfb(t.url + "/v1/messages", stream_body, TTFB_REQUESTS, t.headers))
        )
        out.append(
            PathFigures(
                name=name,
                sequential=_median_result(sequential[name]),
                loaded=loaded[name].result,
                ttfb_p50=statistics.median(ttfb),
                ttfb_p99=ttfb[int(len(ttfb) * 0.99) - 1],
                cpu=loaded[name].cpu,
                upstream_cpu=loaded[name].upstream_cpu,
                rss_mb=tree_peak_rss_mb(t.pids) if t.pids else None,
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
    python: list[PathFigures]
    """Every arm, peers included, against a Python (aiohttp) upstream."""
    rss_mb: float
    """The sidecar's peak RSS over both scenarios."""
    machine: dict[str, str]
    rounds: int = ROUNDS
    """Interleaved slices per path and measurement."""
    peers: dict[str, str] = dataclasses.field(default_factory=dict)
    """Each peer's version, or why it is missing from this run."""


@contextlib.contextmanager
def minimal_proxy(port: int, upstream: str) -> Iterator[int]:
    """``bench.minimal_proxy``: the floor for any aiohttp hop."""
    with _module_process(port, "bench.minimal_proxy", str(port), upstream) as pid:
        yield pid


@contextlib.contextmanager
def python_upstream(port: int) -> Iterator[int]:
    with _module_process(port, "bench.upstream_app", str(port)) as pid:
        yield pid


@contextlib.contextmanager
def _module_process(port: int, module: str, *args: str) -> Iterator[int]:
    process = subprocess.Popen([sys.executable, "-m", module, *args])
    try:
        _wait_ready(f"http://127.0.0.1:{port}", process)
        yield process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass(frozen=True, slots=True)
class Arms:
    """One scenario's arms, up together: targets by row name (in table order)."""

    targets: dict[str, Target]
    sidecars: dict[str, tuple[int, str]]
    """Each sidecar row's pid and admin URL."""


@contextlib.contextmanager
def all_paths(
    upstream: str,
    nginx_base: str,
    floor_port: int,
    sidecar_ports: dict[str, int],
    *,
    nginx_pid: int | None = None,
    peer_arms: dict[str, Target] | None = None,
) -> Iterator[Arms]:
    """Every path up at once in front of ``upstream``."""
    with contextlib.ExitStack() as stack:
        targets = {
            "direct": Target(upstream),
            "nginx": Target(nginx_base, pids=(nginx_pid,) if nginx_pid else ()),
        }
        floor_pid = stack.enter_context(minimal_proxy(floor_port, upstream))
        targets[FLOOR] = Target(f"http://127.0.0.1:{floor_port}", pids=(floor_pid,))
        sidecars: dict[str, tuple[int, str]] = {}
        for name, env in SIDECAR_VARIANTS.items():
            port = sidecar_ports[name]
            sidecars[name] = stack.enter_context(sidecar(upstream, port, env))
            targets[name] = Target(f"http://127.0.0.1:{port}", pids=(sidecars[name][0],))
        targets |= peer_arms or {}
        yield Arms(targets=targets, sidecars=sidecars)


@contextlib.contextmanager
def peer_arms(upstream: str, notes: dict[str, str]) -> Iterator[dict[str, Target]]:
    """LiteLLM's proxy and Portkey's gateway in front of ``upstream``, those that start.

    ``notes`` receives each peer's version, or why it is not in this run.
    """
    with contextlib.ExitStack() as stack:
        arms: dict[str, Target] = {}
        litellm_port, portkey_port = free_ports(2)
        for name, port in (("Portkey gateway", portkey_port), ("LiteLLM proxy", litellm_port)):
            try:
                if name.startswith("Portkey"):
                    peer = peers.ensure_portkey(upstream)
                    pid = stack.enter_context(peers.portkey_running(port))
                else:
                    peer = peers.ensure_litellm()
                    pid = stack.enter_context(peers.litellm_running(port, upstream))
            except peers.PeerUnavailableError as exc:
                notes[name] = f"not in this run: {exc}"
                sys.stderr.write(f"bench: {name} {notes[name]}\n")
                continue
            notes[peer.name] = peer.version
            arms[f"{peer.name} {peer.version}"] = Target(
                f"http://127.0.0.1:{port}", headers=peer.headers, pids=(pid,)
            )
        yield arms


def run(*, seconds: float = 8.0, rounds: int = ROUNDS, with_peers: bool = True) -> Run:
    """Both scenarios; also the sidecar's peak RSS (MB) and the peers' versions."""
    body, stream_body = request_body(), request_body(stream=True)
    upstream_port, proxy_port, answer_port, py_port, py_proxy, floor_port = free_ports(6)
    sidecar_ports = dict(zip(SIDECAR_VARIANTS, free_ports(len(SIDECAR_VARIANTS)), strict=True))
    notes: dict[str, str] = {}
    with (
        python_upstream(py_port) as py_pid,
        nginx.running(
            upstream_port=upstream_port,
            proxy_port=proxy_port,
            answer_port=answer_port,
            python_port=py_port,
            python_proxy_port=py_proxy,
        ) as nginx_pid,
    ):
        py_upstream = f"http://127.0.0.1:{py_port}"
        nginx_py = f"http://127.0.0.1:{py_proxy}"
        with contextlib.ExitStack() as stack:
            extra = stack.enter_context(peer_arms(py_upstream, notes)) if with_peers else {}
            arms = stack.enter_context(
                all_paths(
                    py_upstream, nginx_py, floor_port, sidecar_ports,
                    nginx_pid=nginx_pid, peer_arms=extra,
                )
            )  # fmt: skip
            python = [
                dataclasses.replace(f, own=own_time(arms.sidecars[f.name][1]))
                if f.name in arms.sidecars
                else f
                for f in measure_all(
                    arms.targets, body, stream_body, seconds, rounds, upstream_pids=(py_pid,)
                )
            ]
        fast_upstream = f"http://127.0.0.1:{upstream_port}"
        nginx_fast = f"http://127.0.0.1:{proxy_port}"
        with all_paths(fast_upstream, nginx_fast, floor_port, sidecar_ports) as arms:
            fast = [
                dataclasses.replace(f, own=own_time(arms.sidecars[f.name][1]))
                if f.name in arms.sidecars
                else f
                for f in measure_all(arms.targets, body, stream_body, seconds, rounds)
            ]
    rss = max(f.rss_mb or 0.0 for f in [*python, *fast] if f.name in SIDECAR_VARIANTS)
    return Run(fast=fast, python=python, rss_mb=rss, machine=machine(), rounds=rounds, peers=notes)
