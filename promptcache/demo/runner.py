"""Drive the three arms of the demo: the same users, the same seed, fresh caches for each.

``legacy`` sends the app's requests straight to the provider (the simulator);
``zero-config`` sends the same app's requests through a sidecar started with no policy
at all, as a team that only annotates its deployment gets it; ``policy`` through a
sidecar with the app's hand-written PromptPolicy. Each arm gets a freshly started
simulator (and sidecar), so no cache entry leaks from one arm into another, and the same
time scale, so their latencies compare. Users are asyncio tasks
sharing one SDK client, as in one app server; they start over a ramp-up, think between
turns, and stop at a deadline so a run is bounded in time whatever happens.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from prometheus_client.parser import text_string_to_metric_families

from promptcache.demo.app import Outcome
from promptcache.demo.report import Comparison, Counted
from promptcache.demo.services import (
    Service,
    get_text,
    sidecar,
    sidecar_tokens,
    simulator,
    simulator_tokens,
)
from promptcache.demo.shapes import DEFAULT, SHAPES, AppShape, AppWorkload
from promptcache.demo.summary import summarise
from promptcache.demo.workload import WorkloadConfig
from promptcache.models import lookup

log = logging.getLogger(__name__)

ARMS = ("legacy", "zero-config", "policy")
"""Direct to the provider; through a sidecar with no policy; with the hand-written one."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """One demo run."""

    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    time_scale: float = 0.25
    """Real seconds per simulated second (0.25: four times faster than the provider)."""
    out_dir: Path = Path("demo-report")
    app: str = DEFAULT
    """The app shape (``promptcache.demo.shapes.SHAPES``)."""
    request_timeout: float = 120.0
    """Real seconds the SDK waits for one answer."""
    arm_deadline: float = 600.0
    """Real seconds one arm may take in all; unfinished users are cancelled."""


class Progress:
    """A one-line progress display on stderr (a line per 10% when not a terminal)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._arm = ""
        self._total = self._done = self._failed = 0
        self._start = self._last = 0.0
        self._step = 0

    def begin(self, arm: str, total: int) -> None:
        self._arm, self._total, self._done, self._failed = arm, total, 0, 0
        self._start = self._last = time.monotonic()
        self._step = 0
        self._draw(force=True)

    def update(self, outcome: Outcome) -> None:
        self._done += 1
        self._failed += 0 if outcome.ok else 1
        self._draw()

    def end(self) -> None:
        self._draw(force=True)
        if self._tty:
            self._stream.write("\n")
        self._stream.flush()

    def _draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        total = max(self._total, 1)
        width = 30
        filled = width * self._done // total
        line = (
            f"{self._arm:<12}[{'#' * filled}{'.' * (width - filled)}] "
            f"{self._done}/{self._total} requests, {self._failed} failed, "
            f"{now - self._start:5.1f}s"
        )
        if self._tty:
            if force or now - self._last >= 0.2:
                self._stream.write("\r" + line)
                self._stream.flush()
                self._last = now
        else:
            step = 10 * self._done // total
            if force or step > self._step:
                self._step = step
                self._stream.write(line + "\n")
                self._stream.flush()


async def drive(
    shape: AppShape,
    workload: AppWorkload,
    *,
    base_url: str,
    time_scale: float,
    progress: Progress,
    request_timeout: float,
    deadline: float,
    arm: str,
) -> list[Outcome]:
    """Run every user of ``workload`` against ``base_url``; return all outcomes."""
    config = workload.config
    app = shape.client(base_url, config, request_timeout)
    outcomes: list[Outcome] = []

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        progress.update(outcome)

    async def user(index: int) -> None:
        for conv in workload.for_user(index):
            await app.conversation(conv, time_scale=time_scale, record=record)

    progress.begin(arm, workload.requests)
    try:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*(user(u) for u in range(config.users)))
    except TimeoutError:
        log.warning("%s: deadline of %.0fs reached; unfinished users cancelled", arm, deadline)
    finally:
        progress.end()
        await app.close()
    return outcomes


async def _settled_metrics(admin_url: str, expected: int, wait_s: float = 5.0) -> str:
    """The sidecar's metrics once it has accounted for ``expected`` requests.

    The app may finish reading a stream a moment before the sidecar records its usage.
    """
    text = ""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        text = await get_text(admin_url + "/metrics")
        done = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("promptcache_requests_total{")
        )
        if done >= expected:
            break
        await asyncio.sleep(0.1)
    return text


def describe(shape: AppShape, workload: AppWorkload) -> str:
    """The workload in one line, with the prompt's proportions."""
    c = workload.config
    return (
        f"{shape.name} ({shape.title}): {c.users} concurrent users, "
        f"{len(workload.conversations)} conversations ({workload.requests} requests per arm), "
        f"model {c.model}, ~{shape.static_tokens():,} static tokens per request, seed {c.seed}"
    )


class Backend(Protocol):
    """Where the model runs: a fresh provider per arm, and what it counted."""

    name: str
    estimates_tokens: bool
    """Counts tokens by the ~4 characters rule, as the workload's ceiling does."""

    def provider(self, arm: str, log_dir: Path) -> tuple[Service, str]:
        """A not-yet-started provider process and its base URL."""
        ...

    async def counted(self, arm: str, base_url: str) -> list[Counted]:
        """Token totals the provider itself counted for the arm just run."""
        ...

    async def notes(self, arm: str, base_url: str) -> list[str]:
        """Lines for the report about the arm just run (e.g. the server's own timings)."""
        ...

    def reachable(
        self, shape: AppShape, workload: AppWorkload, outcomes: list[Outcome]
    ) -> float | None:
        """A real server's reusable share of the prompts (None: the simulator's ceiling
        applies instead)."""
        ...


class SimBackend:
    """The bundled provider simulator."""

    name = "provider simulator"
    estimates_tokens = True

    def __init__(self, *, time_scale: float, seed: int) -> None:
        self._time_scale = time_scale
        self._seed = seed

    def provider(self, arm: str, log_dir: Path) -> tuple[Service, str]:
        return simulator(time_scale=self._time_scale, seed=self._seed, log_dir=log_dir)

    async def counted(self, arm: str, base_url: str) -> list[Counted]:
        stats = simulator_tokens(json.loads(await get_text(base_url + "/sim/stats")))
        return [] if stats is None else [Counted("simulator /sim/stats", arm, stats)]

    async def notes(self, arm: str, base_url: str) -> list[str]:
        config = json.loads(await get_text(base_url + "/sim/stats")).get("config", {})
        model = _means(await get_text(base_url + "/metrics"))
        return [
            f"{arm}: simulator time scale {config.get('time_scale')}, "
            f"prefill lanes {config.get('prefill_lanes')}, seed {config.get('seed')}; "
            f"its own model: mean time to first token "
            f"{model.get('promptcache_sim_time_to_first_token_seconds', math.nan):.2f} s, "
            f"mean wait for a prefill lane "
            f"{model.get('promptcache_sim_prefill_queue_seconds', math.nan):.2f} s"
        ]

    def reachable(
        self, shape: AppShape, workload: AppWorkload, outcomes: list[Outcome]
    ) -> float | None:
        return None


def _means(metrics_text: str) -> dict[str, float]:
    """Mean of each histogram in a Prometheus text (sum / count, all labels together)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                key = sample.name.removesuffix("_sum")
                sums[key] = sums.get(key, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                key = sample.name.removesuffix("_count")
                counts[key] = counts.get(key, 0.0) + sample.value
    return {k: sums[k] / counts[k] for k in sums if counts.get(k)}


async def run_arms(options: DemoOptions, backend: Backend, progress: Progress) -> Comparison:
    """The three arms, each against a fresh provider; two of them through a fresh sidecar."""
    shape = SHAPES[options.app]
    workload = shape.generate(options.workload)
    run = functools.partial(
        drive,
        shape,
        workload,
        time_scale=options.time_scale,
        progress=progress,
        request_timeout=options.request_timeout,
        deadline=options.arm_deadline,
    )
    counted: list[Counted] = []
    notes: list[str] = []
    outcomes: dict[str, list[Outcome]] = {}
    for arm in ARMS:
        log_dir = options.out_dir / "logs" / arm
        provider, base = backend.provider(arm, log_dir)
        async with provider:
            if arm == "legacy":
                outcomes[arm] = await run(base_url=base, arm=arm)
            else:
                proxy, proxy_url, admin_url = sidecar(
                    policy=shape.policy if arm == "policy" else None,
                    anthropic=base,
                    openai=base,
                    log_dir=log_dir,
                )
                async with proxy:
                    outcomes[arm] = await run(base_url=proxy_url, arm=arm)
                    metrics = await _settled_metrics(admin_url, len(outcomes[arm]))
                counted.append(Counted("sidecar /metrics", arm, sidecar_tokens(metrics)))
            counted += await backend.counted(arm, base)
            notes += await backend.notes(arm, base)

    info = lookup("anthropic", options.workload.model)
    arms = {a: summarise(a, outcomes[a], time_scale=options.time_scale, info=info) for a in ARMS}
    notes += [
        f"{a.name}: mean time to first token as the app measured it {a.ttft_average:.2f} s"
        for a in arms.values()
    ]
    estimated = backend.estimates_tokens
    return Comparison(
        legacy=arms["legacy"],
        promptcache=arms["policy"],
        zero_config=arms["zero-config"],
        ceiling=shape.ceiling(workload, outcomes["policy"]) if estimated else None,
        time_scale=options.time_scale,
        backend=backend.name,
        workload=describe(shape, workload),
        app=shape.name,
        case_study=shape.case_study,
        reachable=backend.reachable(shape, workload, outcomes["policy"]),
        counted=counted,
        notes=notes,
    )


async def run_sim(options: DemoOptions, progress: Progress) -> Comparison:
    """The demo on the bundled simulator."""
    backend = SimBackend(time_scale=options.time_scale, seed=options.workload.seed)
    return await run_arms(options, backend, progress)
