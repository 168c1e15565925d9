"""A long, faulty load through the sidecar: what must hold after minutes, not seconds.

``make soak`` (``python -m promptcache.demo.soak``) runs the demo's support-agent app
(official ``anthropic`` SDK, streaming) as N concurrent users through a real sidecar
process to a real simulator process for M minutes, and meanwhile:

* injects upstream faults on a share of calls with the simulator's per-request fault
  knobs (``x-sim-fault``): 429 with ``retry-after``, 529, a reset before the first byte,
  a reset mid-stream, slow headers. Half of the 429 / 529 / reset-before faults are
  transient (the first attempt only: ``x-sim-fault-count: 1``), half persistent (every
  attempt). The app's SDK does not retry (``max_retries=0``), so every answer the
  sidecar gives reaches it; the sidecar leaves retries to a client that says it retries
  (the official SDKs send ``x-stainless-retry-count``), so a transient fault may reach
  the app too, as it would without the sidecar;
* rewrites the sidecar's policy file every ``reload_every`` seconds, alternating between
  two valid policies, and once (the second reload) an invalid one;
* samples the sidecar's RSS and open file descriptors from ``/proc``.

At the end it checks (``SoakResult.violations``): only injected faults reached the app,
each in the provider's error shape (no sidecar 5xx of its own, no connection error); every
persistent fault did reach it; each reload took effect, the invalid one was refused and
counted; RSS and file descriptors stayed within ``rss_growth_mb`` / ``fd_growth`` of
their level after warm-up; the event-loop lag histogram was fed; and input tokens agree
three ways: the app's usage, the sidecar's ``/metrics`` and the simulator's own count.
It never checks a speed. ``tests/local/test_soak.py`` runs a 30-second version.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anthropic
from anthropic.types import (
    RawContentBlockDeltaEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    TextDelta,
)
from prometheus_client.parser import text_string_to_metric_families

from promptcache.demo.app import legacy_system
from promptcache.demo.corpus import retrieve
from promptcache.demo.services import (
    get_text,
    sidecar,
    sidecar_tokens,
    simulator,
    simulator_tokens,
)
from promptcache.demo.workload import (
    POLICY_DIR,
    STATIC_FILE,
    Conversation,
    WorkloadConfig,
    generate,
)
from promptcache.usage import Usage, from_anthropic

log = logging.getLogger(__name__)

FaultKind = Literal["429", "529", "reset-before", "reset-during", "slow-headers"]
FAULT_KINDS: tuple[FaultKind, ...] = ("429", "529", "reset-before", "reset-during", "slow-headers")
FAULT_ARGS: dict[FaultKind, str] = {"429": ":1", "slow-headers": ":2"}
"""429: ``retry-after: 1``; slow headers: 2 wall seconds before the answer starts."""
EXPECTED: dict[FaultKind, str] = {
    "429": "429 rate_limit_error",
    "529": "529 overloaded_error",
    "reset-before": "502 api_error (sidecar: upstream unreachable)",
    "reset-during": "stream error event api_error",
}
"""How each fault must look to the app when it reaches it (Anthropic's shapes)."""
MUST_REACH: frozenset[FaultKind] = frozenset({"reset-during"})
"""Faults no one can hide: the answer had started."""


@dataclass(frozen=True, slots=True)
class SoakOptions:
    """One soak run."""

    minutes: float = 10.0
    users: int = 75
    fault_rate: float = 0.04
    """Share of calls that carry an injected fault."""
    reload_every: float = 60.0
    """Seconds between two policy rewrites."""
    sample_every: float = 5.0
    """Seconds between two samples of the sidecar's RSS and file descriptors."""
    warmup: float = 60.0
    """Seconds before RSS and file descriptors are expected to be flat."""
    rss_growth_mb: float = 12.0
    """Largest allowed rise of RSS after warm-up (median of the last quarter of samples
    over the median of the first quarter after warm-up), MB."""
    fd_growth: int = 30
    """Largest allowed rise of open file descriptors, measured the same way."""
    time_scale: float = 0.25
    """Simulated seconds to real seconds (0.25: the provider runs four times faster)."""
    seed: int = 7
    request_timeout: float = 120.0
    log_dir: Path = Path("soak-report")


@dataclass(frozen=True, slots=True)
class Call:
    """One app call as the app saw it."""

    started: float
    """Seconds since the soak began."""
    ended: float
    fault: FaultKind | None
    persistent: bool
    seen: str
    """``ok`` or the failure's shape: status and error type, or the exception class."""
    sidecar_error: bool
    """The answer carried the sidecar's own ``x-promptcache-error`` header."""
    usage: Usage


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    rss_mb: float
    fds: int
    calls: int


@dataclass(frozen=True, slots=True)
class Reload:
    t: float
    kind: str
    """``A``, ``B`` or ``invalid``."""
    in_force: str | None
    """The policy name ``/readyz`` reported after the reload."""
    error: bool
    """``/readyz`` reported a rejected version."""


@dataclass(slots=True)
class SoakResult:
    options: SoakOptions
    seconds: float = 0.0
    calls: list[Call] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    reloads: list[Reload] = field(default_factory=list)
    tokens: dict[str, Usage] = field(default_factory=dict)
    """Token totals by who counted them: app, sidecar, simulator."""
    injected_at_provider: dict[str, int] = field(default_factory=dict)
    """Faults the simulator injected, by kind (retried attempts included)."""
    retries: float = 0.0
    reload_errors: float = 0.0
    lag_p99_s: float | None = None
    lag_max_bucket_s: float | None = None
    lag_count: int = 0
    rss_growth_mb: float = 0.0
    fd_growth: float = 0.0
    violations: list[str] = field(default_factory=list)

    def by_kind(self) -> dict[tuple[str, str, str], int]:
        """Calls by (fault injected, transient/persistent, what the app saw)."""
        out: dict[tuple[str, str, str], int] = {}
        for c in self.calls:
            key = (
                c.fault or "none",
                ("persistent" if c.persistent else "transient") if c.fault else "",
                c.seen,
            )
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))


# -- the app --------------------------------------------------------------------------


def _error_shape(status: int, body: object) -> str | None:
    """``"STATUS TYPE"`` when ``body`` is Anthropic's error shape, else None."""
    if not isinstance(body, dict) or body.get("type") != "error":
        return None
    error = body.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    return f"{status} {error.get('type')}"


async def _call(
    client: anthropic.AsyncAnthropic,
    conv: Conversation,
    turn: int,
    history: list[dict[str, str]],
    headers: dict[str, str],
) -> tuple[str, bool, Usage, str]:
    """One streamed turn: what the app saw, the sidecar-error flag, usage, the reply."""
    question = conv.questions[turn]
    system = legacy_system(
        now=datetime.now(UTC),
        request_id=conv.request_ids[turn],
        customer=conv.customer.render(),
        documents=retrieve(question, 3),
    )
    usage = Usage()
    parts: list[str] = []
    started_stream = False
    try:
        stream = await client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=300,
            system=system,
            messages=[*history, {"role": "user", "content": question}],  # type: ignore[list-item]
            stream=True,
            extra_headers=headers,
        )
        started_stream = True
        if not isinstance(stream, anthropic.AsyncStream):
            return "not a stream", False, usage, ""
        async for event in stream:
            if isinstance(event, RawMessageStartEvent):
                usage = from_anthropic(event.message.usage.model_dump())
            elif isinstance(event, RawMessageDeltaEvent):
                delta = from_anthropic(event.usage.model_dump())
                usage = Usage(
                    uncached=delta.uncached or usage.uncached,
                    cache_read=delta.cache_read or usage.cache_read,
                    cache_write_5m=usage.cache_write_5m,
                    cache_write_1h=usage.cache_write_1h,
                    output=delta.output,
                )
            elif isinstance(event, RawContentBlockDeltaEvent) and isinstance(
                event.delta, TextDelta
            ):
                parts.append(event.delta.text)
    except anthropic.APIStatusError as exc:
        flag = exc.response.headers.get("x-promptcache-error") == "1"
        shape = _error_shape(exc.status_code, exc.body)
        if started_stream and exc.status_code == 200 and shape is not None:
            return f"stream error event {shape.split(' ', 1)[1]}", flag, usage, ""
        if shape is None:
            return f"{exc.status_code} not in the provider's shape", flag, usage, ""
        return shape + (" (sidecar: upstream unreachable)" if flag else ""), flag, usage, ""
    except anthropic.APIError as exc:
        return type(exc).__name__, False, usage, ""
    return "ok", False, usage, "".join(parts)


class FaultPlan:
    """Which calls carry which fault: seeded, and every kind in turn."""

    def __init__(self, rate: float, seed: int) -> None:
        self._rate = rate
        self._rng = random.Random(seed)
        self._count = 0

    def next(self) -> tuple[FaultKind | None, bool, dict[str, str]]:
        if self._rng.random() >= self._rate:
            return None, False, {}
        n = self._count
        self._count += 1
        kind = FAULT_KINDS[n % len(FAULT_KINDS)]
        persistent = (n // len(FAULT_KINDS)) % 2 == 0
        headers = {"x-sim-fault": kind + FAULT_ARGS.get(kind, "")}
        if not persistent:
            headers |= {"x-sim-fault-count": "1", "x-sim-fault-key": f"soak-{n}"}
        return kind, persistent, headers


async def _users(
    base_url: str, options: SoakOptions, result: SoakResult, begin: float, stop_at: float
) -> None:
    workload = generate(
        WorkloadConfig(users=options.users, conversations_per_user=3, seed=options.seed)
    )
    plan = FaultPlan(options.fault_rate, options.seed)
    client = anthropic.AsyncAnthropic(
        base_url=base_url,
        api_key="soak-not-a-real-key",
        max_retries=0,  # every answer the sidecar gives reaches the app
        timeout=options.request_timeout,
    )
    scale = options.time_scale

    async def user(index: int) -> None:
        convs = workload.for_user(index)
        await asyncio.sleep(convs[0].think_times[0] * scale)
        for conv in (convs[i % len(convs)] for i in range(1_000_000)):
            history = list(conv.prior_history)
            for turn in range(len(conv.questions)):
                if time.monotonic() >= stop_at:
                    return
                fault, persistent, headers = plan.next()
                started = time.monotonic() - begin
                seen, flag, usage, reply = await _call(client, conv, turn, history, headers)
                result.calls.append(
                    Call(
                        started=started,
                        ended=time.monotonic() - begin,
                        fault=fault,
                        persistent=persistent,
                        seen=seen,
                        sidecar_error=flag,
                        usage=usage,
                    )
                )
                if seen != "ok" or not reply:
                    break  # the user starts another conversation
                history += [
                    {"role": "user", "content": conv.questions[turn]},
                    {"role": "assistant", "content": reply},
                ]
                await asyncio.sleep(conv.think_times[(turn + 1) % len(conv.think_times)] * scale)

    try:
        await asyncio.gather(*(user(u) for u in range(options.users)))
    finally:
        await client.close()


# -- the policy reloads and the sampler --------------------------------------------------

VALID_B_TTL = "1h"
INVALID_POLICY = """apiVersion: promptcache.io/v1alpha1
kind: PromptPolicy
metadata:
  name: support-agent-broken
spec:
  provider: anthropic
  staticBlocks:
    - name: support-static
      mode: match
      ttl: 7m
"""


def _write_atomically(path: Path, text: str) -> None:
    """As kubelet swaps a ConfigMap: the new file appears whole or not at all."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _policies(folder: Path) -> dict[str, str]:
    """Two valid policies (the demo's, and the same with 1h breakpoints) and a broken one."""
    shutil.copy(STATIC_FILE, folder / STATIC_FILE.name)
    a = (POLICY_DIR / "support-agent.yaml").read_text()
    b = a.replace("name: support-agent\n", "name: support-agent-1h\n").replace(
        "ttl: 5m", f"ttl: {VALID_B_TTL}"
    )
    return {"A": a, "B": b, "invalid": INVALID_POLICY}


async def _readyz(admin_url: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(await get_text(admin_url + "/readyz"))
    return parsed


async def _reloader(
    path: Path,
    texts: dict[str, str],
    admin_url: str,
    options: SoakOptions,
    result: SoakResult,
    begin: float,
    stop_at: float,
) -> None:
    names = {"A": "support-agent", "B": "support-agent-1h"}
    valid = 0
    k = 0
    while True:
        k += 1
        due = begin + k * options.reload_every
        if due >= stop_at - 2:
            return
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if k == 2:
            kind = "invalid"
        else:
            valid += 1
            kind = "B" if valid % 2 else "A"
        _write_atomically(path, texts[kind])
        want = names.get(kind)
        body: dict[str, Any] = {}
        for _ in range(50):  # the watcher polls once a second
            await asyncio.sleep(0.2)
            body = await _readyz(admin_url)
            if (kind == "invalid" and body.get("policyRejected")) or (
                want and body.get("policy") == want and not body.get("policyRejected")
            ):
                break
        result.reloads.append(
            Reload(
                t=time.monotonic() - begin,
                kind=kind,
                in_force=body.get("policy"),
                error=bool(body.get("policyRejected")),
            )
        )


def _proc_sample(pid: int) -> tuple[float, int]:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def _sampler(
    pid: int, options: SoakOptions, result: SoakResult, begin: float, stop_at: float
) -> None:
    while time.monotonic() < stop_at:
        with contextlib.suppress(OSError):
            rss, fds = _proc_sample(pid)
            result.samples.append(Sample(time.monotonic() - begin, rss, fds, len(result.calls)))
        await asyncio.sleep(options.sample_every)


# -- the checks ---------------------------------------------------------------------------


def _histogram(metrics: str, name: str) -> tuple[list[tuple[float, float]], float]:
    buckets: list[tuple[float, float]] = []
    count = 0.0
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == name + "_bucket":
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name == name + "_count":
                count += s.value
    return sorted(buckets), count


def _counter(metrics: str, name: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == name
    )


def growth(values: list[float], times: list[float], warmup: float) -> float:
    """Median of the last quarter of samples minus the median of the first quarter after
    warm-up (0 with fewer than four samples after warm-up)."""
    after = [v for v, t in zip(values, times, strict=True) if t >= warmup]
    if len(after) < 4:
        return 0.0
    q = max(1, len(after) // 4)
    return statistics.median(after[-q:]) - statistics.median(after[:q])


def check(result: SoakResult) -> list[str]:
    """Every invariant the soak holds the sidecar to; an empty list means all held."""
    out: list[str] = []
    o = result.options
    for (fault, persistence, seen), n in result.by_kind().items():
        if seen == "ok":
            if fault in MUST_REACH or (persistence == "persistent" and fault in EXPECTED):
                out.append(f"{n} call(s) with a {persistence} {fault} fault succeeded")
            continue
        if fault == "none":
            out.append(f"{n} call(s) without an injected fault failed: {seen}")
        elif seen != EXPECTED.get(fault):  # type: ignore[call-overload]
            out.append(f"{n} call(s) with an injected {fault} reached the app as {seen}")
    if not result.calls:
        out.append("no calls were made")
    for r in result.reloads:
        if r.kind == "invalid" and not r.error:
            out.append(f"the invalid policy at {r.t:.0f}s was not reported as rejected")
        if r.kind != "invalid" and (r.error or r.in_force is None):
            out.append(f"policy {r.kind} at {r.t:.0f}s did not take effect ({r.in_force})")
    invalid = sum(1 for r in result.reloads if r.kind == "invalid")
    if result.reload_errors != invalid:
        out.append(f"policy reload errors counted {result.reload_errors:g}, expected {invalid}")
    if result.rss_growth_mb > o.rss_growth_mb:
        out.append(f"RSS grew {result.rss_growth_mb:.1f} MB after warm-up (> {o.rss_growth_mb})")
    if result.fd_growth > o.fd_growth:
        out.append(f"open files grew by {result.fd_growth:.0f} after warm-up (> {o.fd_growth})")
    if result.lag_count == 0:
        out.append("the sidecar's event-loop lag histogram has no observations")
    app, side, sim = (result.tokens.get(k) for k in ("app", "sidecar", "simulator"))
    if app is None or side is None or sim is None:
        out.append("token counts missing")
    else:
        for kind in ("uncached", "cache_read", "cache_write"):
            values = {who: getattr(u, kind) for who, u in result.tokens.items()}
            if len(set(values.values())) != 1:
                out.append(f"{kind} input tokens disagree: {values}")
        if app.output != side.output:
            out.append(f"output tokens: app {app.output} != sidecar {side.output}")
    return out


# -- the run ------------------------------------------------------------------------------


async def _settled_metrics(admin_url: str, calls: int, wait_s: float = 10.0) -> str:
    """The sidecar's metrics once it has counted every call (counting runs off the path)."""
    text = ""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        text = await get_text(admin_url + "/metrics")
        if _counter(text, "promptcache_requests_total") >= calls:
            break
        await asyncio.sleep(0.2)
    return text


async def run_soak(options: SoakOptions) -> SoakResult:
    """Run the soak and check it; ``SoakResult.violations`` lists what did not hold."""
    result = SoakResult(options=options)
    log_dir = options.log_dir / "logs"
    with tempfile.TemporaryDirectory(prefix="promptcache-soak-") as tmp:
        folder = Path(tmp)
        texts = _policies(folder)
        policy = folder / "policy.yaml"
        _write_atomically(policy, texts["A"])
        sim, sim_url = simulator(
            time_scale=options.time_scale,
            seed=options.seed,
            log_dir=log_dir,
            extra=("--log-level", "WARNING"),
        )
        async with sim:
            proxy, proxy_url, admin_url = sidecar(
                policy=policy, anthropic=sim_url, openai=sim_url, log_dir=log_dir
            )
            async with proxy:
                pid = proxy.pid
                assert pid is not None
                begin = time.monotonic()
                stop_at = begin + options.minutes * 60
                tasks = [
                    asyncio.create_task(_sampler(pid, options, result, begin, stop_at)),
                    asyncio.create_task(
                        _reloader(policy, texts, admin_url, options, result, begin, stop_at)
                    ),
                ]
                try:
                    async with asyncio.timeout(options.minutes * 60 + options.request_timeout):
                        await _users(proxy_url, options, result, begin, stop_at)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                result.seconds = time.monotonic() - begin
                metrics = await _settled_metrics(admin_url, len(result.calls))
            stats = json.loads(await get_text(sim_url + "/sim/stats"))
    _collect(result, metrics, stats)
    result.violations = check(result)
    return result


def _collect(result: SoakResult, metrics: str, stats: dict[str, Any]) -> None:
    usages = [c.usage for c in result.calls]
    result.tokens = {
        "app": Usage(
            uncached=sum(u.uncached for u in usages),
            cache_read=sum(u.cache_read for u in usages),
            cache_write_5m=sum(u.cache_write for u in usages),
            output=sum(u.output for u in usages),
        ),
        "sidecar": sidecar_tokens(metrics),
    }
    sim = simulator_tokens(stats)
    if sim is not None:
        result.tokens["simulator"] = Usage(
            uncached=sim.uncached,
            cache_read=sim.cache_read,
            cache_write_5m=sim.cache_write,
            output=sim.output,
        )
    result.injected_at_provider = {str(k): int(v) for k, v in stats.get("faults", {}).items()}
    result.retries = _counter(metrics, "promptcache_upstream_retries_total")
    result.reload_errors = _counter(metrics, "promptcache_policy_reload_errors_total")
    buckets, count = _histogram(metrics, "promptcache_event_loop_lag_seconds")
    result.lag_count = int(count)
    if count:
        result.lag_p99_s = next((le for le, n in buckets if n >= 0.99 * count), None)
        below = [le for le, n in buckets if n < count]
        result.lag_max_bucket_s = next((le for le, n in buckets if n >= count), None)
        if below and result.lag_max_bucket_s is None:
            result.lag_max_bucket_s = below[-1]
    times = [s.t for s in result.samples]
    warm = min(result.options.warmup, result.seconds / 3)
    result.rss_growth_mb = growth([s.rss_mb for s in result.samples], times, warm)
    result.fd_growth = growth([float(s.fds) for s in result.samples], times, warm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m promptcache.demo.soak", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    d = SoakOptions()
    parser.add_argument("--minutes", type=float, default=d.minutes)
    parser.add_argument("--users", type=int, default=d.users)
    parser.add_argument("--fault-rate", type=float, default=d.fault_rate)
    parser.add_argument("--reload-every", type=float, default=d.reload_every, help="seconds")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--report", type=Path, default=None, help="markdown report (+ .png)")
    parser.add_argument("--log-dir", type=Path, default=d.log_dir)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    options = SoakOptions(
        minutes=args.minutes,
        users=args.users,
        fault_rate=args.fault_rate,
        reload_every=args.reload_every,
        warmup=min(d.warmup, args.minutes * 60 / 4),
        seed=args.seed,
        log_dir=args.log_dir,
    )
    sys.stderr.write(
        f"soak: {options.users} streaming users, {options.minutes:g} min, faults on "
        f"{options.fault_rate:.0%} of calls, policy reload every {options.reload_every:g}s\n"
    )
    result = asyncio.run(run_soak(options))
    from promptcache.demo.soak_report import markdown, plot

    command = "python -m promptcache.demo.soak " + " ".join(argv or sys.argv[1:])
    if args.report is not None:
        png = args.report.with_suffix(".png")
        plot(result, png)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(markdown(result, command=command.strip(), plot_name=png.name))
        sys.stderr.write(f"soak: report {args.report}, plot {png}\n")
    sys.stdout.write(markdown(result, command=command.strip(), plot_name=None, brief=True))
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
