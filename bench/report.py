"""The benchmark's table, printed and written to ``docs/benchmarks.md``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from bench import planner_bench
from bench.overhead import CONCURRENCY, TTFB_REQUESTS, PathFigures, Run
from bench.planner_bench import PlanCost

TARGETS = (
    "against the Python upstream, the sidecar as shipped: added latency p50 <= 0.5 ms and "
    "p99 <= 1.5 ms; at 75 connections >= 40% of nginx's requests per second, >= 5x Portkey's "
    "and >= 25x LiteLLM's; peak RSS <= 80 MB and below each peer's"
)
SIDECAR = "sidecar"


NOTES = """## The request path after learning (2026-12-05)

Measured by hand in the running sidecar (a temporary `perf_counter` around `prepare`,
not part of this bench; sequential wrk on the bench request, p50 of ~17,000 calls):
planning took ~109 us there against ~56 us alone (`python -m bench.planner_bench`),
every stage of it ~1.8x slower in the process than in a loop; run six times in a row
inside one request it fell 109 -> 96 -> 88 -> 85 -> 83 -> 83 us. So what counts is the
code the request path runs, not only how fast it runs alone. Two changes took work off
that path:

- What only the outcome needs is made when the outcome is recorded: the proxy plans with
  `Planner.plan(settle=False)` and accounting calls `Plan.settle()` in the ledger's
  backlog, while the upstream works on the next call (the sorted breakpoints, expected
  cached tokens, the miss diagnosis's history fingerprints, the guard's note). A plan
  settled late says exactly what an eager one says
  (`tests/unit/test_planner_settle.py`). `Diagnostics` is filled in place rather than
  copied twice with `dataclasses.replace`; tool names are memoised with the tools'
  digest.
- Result: the bench request planned in ~43 us alone settled at once (the planner table
  above), ~39 us as the proxy plans it; inside the sidecar ~84 us instead of ~109 (by
  hand, as above); the sidecar's own time per call (mean, the bench's
  `promptcache_overhead_seconds` line above) 126-146 -> ~110 us.

Added p50 of the build measured above (bc799dc): 0.49, 0.51 and 0.50 ms in three `python
-m bench --no-peers --skip-context --seconds 6` runs on the shared machine (the aiohttp
floor 0.31-0.34 ms in the same runs), 0.51 and 0.48 ms in two `make bench` runs; the run
above is the last. Tried and left: uvloop again (0.52 against asyncio's 0.53 ms added
p50 on the Python upstream, 0.59 against 0.47 on the fast one), and compiling the
planner and the learner with mypyc (by hand, a throwaway `mypycify` build of a copy of
the tree): ~30% less per call alone (56 -> 39 us), ~10-15% less of the sidecar's own
time in the process, not worth a C build in the edit-test loop and the image.

## The learner's cost (2026-12-04)

With zero configuration the planner learns each prompt's template from traffic; the
planner table above shows that cost per call with learning on and off. The learner's
first build, before its fast path, cost ~365 us p50 of CPU per call on the bench request
(`python -m bench.planner_bench --clock cpu`), and a `make bench` run of that build on a
loaded machine measured the sidecar (no policy) at 751 requests/s against the Python
upstream, a third of the planner-off sidecar's 2,001. With the fast path the same request
planned in ~69 us p50 (~46 us with learning off); since a template that never changed
matches by one string comparison and conversation keys hash string contents directly,
~57 us (interleaved CPU-clock runs of one process, 2026-12-04 21:20 UTC). The gap
between the two sidecar rows above is the whole planner's; the learner's share of it is
the gap between the "no policy" rows of the planner table. Two quiet-machine runs of
`make bench` on 2026-12-04 (21:10 and 21:24 UTC) measured the sidecar at +0.54 and +0.58
ms added p50 (target 0.5) and +1.45 ms p99 both times (target 1.5), the planner-off
sidecar at +0.38 and +0.48 ms, the aiohttp floor at +0.30 and +0.31 ms: the spread
between runs of one build is about as large as what is left to the target. The notes
below predate the learner.

## What the hot path does, and what was tried

Per call the sidecar parses the body once (orjson), plans it, serialises the body again
only when the plan changed it (orjson, copied to its real size), sends it, relays the
answer, and counts the call off the path of the next one (the ledger's backlog: it runs
while the next request is with the upstream, or when the loop is idle, and always before
the metrics are read). What the planner keeps between calls turns
the parts of a request that repeat into lookups: tool definitions by their bytes
(digest, JSON, token counts), static texts by length, ends and a comparison (digest,
volatile spans), model table entries by name. Token estimates walk the body with a stack
rather than recursion.

Measured by hand while optimising (2026-11-26, this machine, shared with other work):

- `python -m bench.planner_bench --clock cpu`, p50 per call, median of 4 interleaved
  runs of the code before and after: bench request without policy 117 -> 61 us; demo
  request without policy 113 -> 97 us; with the support-agent policy 104 -> 90 us.
- The sidecar's own time per call with the planner (`promptcache_overhead_seconds` in
  `make bench`): mean 258 us before, ~150 us after; without the planner ~50 us both.
- Peak RSS 75.8 -> 64.5 MB: orjson hands back its whole working buffer (~256 KB for a
  28 KB body), and a planned body lives as long as its call.
- Sequentially the proxy process is busy for almost all of each request's round trip, so
  added latency is its CPU time per request (from `/proc`, 4 s wrk runs): the aiohttp
  floor ~300 us, the sidecar without the planner ~390 us, with it ~550 us. The counting
  done after the answer (usage, cost, histograms, miss diagnosis: ~30-40 us in the
  process) ran before the app's next request on the same connection, which waited for
  it; it now waits in the ledger's backlog and runs while that request is with the
  upstream. A/B of the build before and after (7 interleaved 2 s wrk slices, medians):
  added p50 0.487 -> 0.430 ms with the planner, 0.292 -> 0.270 ms without it; two
  interleaved `python -m bench --skip-context` runs of each build on a quiet machine:
  0.40, 0.41 -> 0.40, 0.38 ms with the planner, 0.28, 0.27 -> 0.26, 0.25 ms without;
  requests per second and peak RSS unchanged. Code runs ~1.5-2x slower inside the
  sidecar than alone (the planner: ~55 us alone, ~80-90 us in the process), as aiohttp
  and the planner share the caches.
- Where the time goes now (py-spy on the running sidecar, sequential wrk, per request):
  the floor's own aiohttp work (server parse and write, client request and response,
  the 28 KB socket write) is most of it; on top of it the sidecar parses the body
  (orjson, ~15 us), plans it (the bulk of the difference with the planner), serialises
  the planned body (~4 us) and copies headers both ways (~1-2 us each). Tried and left:
  skipping aiohttp's per-request `skip_auto_headers` work and its per-read timer
  (`sock_read`): no change the A/B could see (5 slices each).
- Garbage collector: in the process the bench starts, the threshold is (20000, 20, 50)
  with ~59,000 start-up objects frozen; ~22,000 sequential calls saw one young
  collection (~1.5 ms) and no older one.
- uvloop 0.23 instead of asyncio's loop, A/B against nginx's fast upstream (5 s wrk
  runs, variants interleaved, medians per session; added latency sequential, requests
  per second at 75 connections). No consistent gain, and with the planner on 5 of 11
  uvloop runs had a p99 over 200 ms at 75 connections (asyncio: none over 110 ms), so
  the sidecar does not use it:

| session | sidecar | asyncio loop | uvloop |
|---|---|---|---|
| 1 (2 rounds) | planner on | 0.52 / 3.25 / 2,351 | 0.52 / 3.46 / 2,324 |
| 1 | planner off | 0.34 / 2.82 / 3,260 | 0.30 / 3.26 / 3,645 |
| 2 (3 rounds) | planner on | 0.72 / 5.47 / 2,229 | 0.79 / 5.19 / 1,688 |
| 2 | planner off | 0.55 / 4.21 / 3,322 | 0.46 / 3.49 / 3,393 |
| 3 (3 rounds) | planner on | 0.62 / 4.44 / 2,189 | 0.80 / 4.91 / 1,757 |
| 4 (3 rounds) | planner on | 0.72 / 4.70 / 2,302 | 0.52 / 3.69 / 2,752 |
| 4 | planner off | 0.38 / 3.67 / 2,995 | 0.42 / 4.16 / 2,844 |

(Each cell: added p50 ms / added p99 ms / requests per second at 75 connections.)

What one Python process cannot reach here: 40% of nginx's requests per second against
the fast upstream (nginx serves ~25,000-30,000 per second; the aiohttp floor row, a
proxy doing nothing, reaches ~15%), and an added p99 under 2 ms while the machine is
shared (the aiohttp floor's own added p99 is ~2-3 ms). Run-to-run spread on this
machine is large: before the bench interleaved its paths, two `make bench` runs of the
same build measured 0.49 and 0.87 ms added p50 with the planner on. Three interleaved
runs of this build (the first two one commit earlier, before the counter children were
kept), 2026-11-26 08:52, 09:01 and 09:09 UTC: added p50 with the planner 0.60, 0.67 and
0.65 ms, without it 0.55, 0.42 and 0.37 ms; added p99 4.75, 5.23 and 5.20 ms with the
planner, 4.02, 3.44 and 2.84 ms without it; peak RSS 64.7 MB each time. On a quiet
machine (2026-11-26 10:25-10:40 UTC, the four runs of the A/B above) the same bench
measured an added p50 of 0.38-0.41 ms with the planner and an added p99 of 0.5-2.7 ms:
the p99 moves with whatever else the machine runs, the aiohttp floor's with it
(0.40-1.46 ms in those runs).
"""
"""Fixed text: what was measured once, by hand, while optimising (not re-run by the bench)."""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def _x(value: float, base: float) -> str:
    """``value / base`` as a ratio; ``-`` when the base is not a positive figure (an added
    latency at or below the direct path's has no meaningful ratio)."""
    if value != value or base != base or base <= 0:
        return "-"
    ratio = value / base
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.0f}x"


def bounded_by(f: PathFigures) -> str:
    """What limits an arm at 75 connections, from the CPU it and the upstream used."""
    if f.name == "direct":
        return "the upstream (one Python process)"
    up = f.upstream_cpu
    own = f.cpu
    if up is None or own is None:
        return "-"
    if up >= 0.85 and up >= own:
        return f"the upstream ({up:.2f} cores; itself {own:.2f})"
    if own >= 0.85:
        return f"itself ({own:.2f} cores; upstream {up:.2f})"
    return f"the shared machine (itself {own:.2f}, upstream {up:.2f} cores)"


def _added(f: PathFigures, direct: PathFigures) -> tuple[float, float, float]:
    return (
        f.sequential.p50 - direct.sequential.p50,
        f.sequential.p99 - direct.sequential.p99,
        f.ttfb_p50 - direct.ttfb_p50,
    )


def arms_table(results: list[PathFigures]) -> str:
    """Every arm against the Python upstream: measured figures."""
    direct = results[0]
    lines = [
        "| arm | added p50 ms | added p99 ms | rps @75 | p99 @75 ms | stream TTFB added ms | "
        "peak RSS MB | bounded by (CPU in cores during its @75 slices) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for f in results:
        p50, p99, ttfb = _added(f, direct)
        rss = f"{f.rss_mb:.1f}" if f.rss_mb else "-"
        lines.append(
            f"| {f.name} | {_ms(p50)} | {_ms(p99)} | {f.loaded.rps:,.0f} | {_ms(f.loaded.p99)} | "
            f"{_ms(ttfb)} | {rss} | {bounded_by(f)} |"
        )
    errors = [
        f"{f.name}: {e}" for f in results for e in (f.sequential.errors, f.loaded.errors) if e
    ]
    if errors:
        lines += ["", "wrk reported errors: " + "; ".join(errors)]
    return "\n".join(lines)


def ratios_table(results: list[PathFigures]) -> str:
    """The same arms as ratios to the sidecar and to nginx of the same run."""
    by = {f.name: f for f in results}
    direct, side, ngx = results[0], by.get(SIDECAR), by.get("nginx")
    if side is None or ngx is None:
        return ""
    s50, s99, sttfb = _added(side, direct)
    n50, n99, nttfb = _added(ngx, direct)
    lines = [
        "| arm | added p50 / sidecar | / nginx | added p99 / sidecar | / nginx | "
        "rps / sidecar | / nginx | TTFB added / sidecar | / nginx | peak RSS / sidecar | / nginx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in results[1:]:
        p50, p99, ttfb = _added(f, direct)
        rss, s_rss, n_rss = f.rss_mb or 0.0, side.rss_mb or 0.0, ngx.rss_mb or 0.0
        lines.append(
            f"| {f.name} | {_x(p50, s50)} | {_x(p50, n50)} | {_x(p99, s99)} | {_x(p99, n99)} | "
            f"{_x(f.loaded.rps, side.loaded.rps)} | {_x(f.loaded.rps, ngx.loaded.rps)} | "
            f"{_x(ttfb, sttfb)} | {_x(ttfb, nttfb)} | {_x(rss, s_rss)} | {_x(rss, n_rss)} |"
        )
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def targets(run: Run) -> list[tuple[str, str, bool | None]]:
    """Each target: what it asks, what this run measured, PASS/FAIL (None: not measured)."""
    by = {f.name: f for f in run.python}
    direct, side, ngx = run.python[0], by.get(SIDECAR), by.get("nginx")
    if side is None or ngx is None:
        return []
    p50, p99, _ = _added(side, direct)
    rps = side.loaded.rps
    rss = side.rss_mb or run.rss_mb
    out: list[tuple[str, str, bool | None]] = [
        ("added latency p50 <= 0.5 ms", f"{_ms(p50)} ms", p50 <= 0.0005),
        ("added latency p99 <= 1.5 ms", f"{_ms(p99)} ms", p99 <= 0.0015),
        (
            ">= 40% of nginx's requests/s (Python upstream)",
            f"{rps / ngx.loaded.rps:.0%} ({rps:,.0f} / {ngx.loaded.rps:,.0f})",
            rps >= 0.4 * ngx.loaded.rps,
        ),
    ]
    for label, factor in (("Portkey", 5), ("LiteLLM", 25)):
        peer = next((f for f in run.python if f.name.startswith(label)), None)
        if peer is None:
            out.append((f">= {factor}x {label}'s requests/s", "peer not in this run", None))
            out.append((f"peak RSS below {label}'s", "peer not in this run", None))
            continue
        out.append(
            (
                f">= {factor}x {label}'s requests/s",
                f"{rps / max(peer.loaded.rps, 1e-9):.1f}x ({rps:,.0f} / {peer.loaded.rps:,.0f})",
                rps >= factor * peer.loaded.rps,
            )
        )
        peer_rss = peer.rss_mb or float("nan")
        out.append((f"peak RSS below {label}'s", f"{rss:.1f} vs {peer_rss:.1f} MB", rss < peer_rss))
    out.append(("peak RSS <= 80 MB", f"{run.rss_mb:.1f} MB (both scenarios)", run.rss_mb <= 80))
    return out


def targets_table(run: Run) -> str:
    lines = ["| target | this run | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {m} | **{_verdict(ok)}** |" for t, m, ok in targets(run)]
    return "\n".join(lines)


def peers_lines(run: Run) -> str:
    if not run.peers:
        return "- peers: not run (`--no-peers`)"
    return "\n".join(f"- {name}: {note}" for name, note in run.peers.items())


def table(results: list[PathFigures], rss_mb: float) -> str:
    direct = results[0]
    by = {r.name: r for r in results}
    nginx_rps = by["nginx"].loaded.rps if "nginx" in by else float("nan")
    lines = [
        "| path | seq p50 ms | seq p99 ms | added p50 ms | added p99 ms | "
        f"rps @{CONCURRENCY} | vs direct | vs nginx | p50 @{CONCURRENCY} ms | "
        f"p99 @{CONCURRENCY} ms | stream TTFB p50 ms | TTFB added ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s, lo = r.sequential, r.loaded
        lines.append(
            f"| {r.name} | {_ms(s.p50)} | {_ms(s.p99)} | "
            f"{_ms(s.p50 - direct.sequential.p50)} | {_ms(s.p99 - direct.sequential.p99)} | "
            f"{lo.rps:,.0f} | {lo.rps / direct.loaded.rps:.0%} | {lo.rps / nginx_rps:.0%} | "
            f"{_ms(lo.p50)} | {_ms(lo.p99)} | {_ms(r.ttfb_p50)} | "
            f"{_ms(r.ttfb_p50 - direct.ttfb_p50)} |"
        )
    lines.append("")
    for r in results:
        if r.own is not None:
            lines.append(
                f"- {r.name}: its own time per call (`promptcache_overhead_seconds`, all "
                f"{r.own.calls:,} calls of the run) mean {r.own.mean * 1e6:.0f} us, p99 <= "
                f"{r.own.p99_at_most * 1e3:g} ms; the rest of the added latency is aiohttp "
                "and the event loop."
            )
    lines.append(f"- Sidecar peak RSS (VmHWM, over all runs): **{rss_mb:.1f} MB**.")
    errors = [
        f"{r.name}: {e}" for r in results for e in (r.sequential.errors, r.loaded.errors) if e
    ]
    if errors:
        lines.append("")
        lines.append("wrk reported errors: " + "; ".join(errors))
    return "\n".join(lines)


def planner_section(costs: Sequence[PlanCost], run: Run) -> str:
    """The planner's own cost per call, next to the sidecar's own time in the same run."""
    own = {r.name: r.own for r in run.fast if r.own is not None}
    on, off = own.get("sidecar"), own.get("sidecar, planner off")
    scale = ""
    if on is not None and off is not None:
        scale = (
            f" In the overhead run above the sidecar's own time per call was {on.mean * 1e6:.0f} us"
            f" with the planner and {off.mean * 1e6:.0f} us without it."
        )
    return f"""## The planner's own cost per call

`bench/planner_bench.py` times `Planner.plan` alone (no HTTP), on a freshly parsed body
per call as the proxy does, with the sidecar's garbage-collector settings: the request
above with no policy, and the demo's legacy requests (timestamp and request id on top of
the static instructions, customer and documents after them, a growing history; see
`docs/demo.md`) with and without the demo's `support-agent` policy.{scale}

{planner_bench.table(costs)}
"""


def markdown(run: Run, command: str, *, planner: Sequence[PlanCost] = ()) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    planner_text = planner_section(planner, run) if planner else ""
    env = "\n".join(f"- {k}: {v}" for k, v in run.machine.items())
    return f"""# Benchmarks

Generated by `{command}` on {when}. Every figure below comes from that one run on one
machine: 2 shared cores, with other agents' builds and tests running at the same time
(the load average below), so compare rows with each other (the ratios), not with other
machines or runs.

## The sidecar against what users would pick instead

A ~28 KB Anthropic Messages request (the case study's ~7,200-token prompt, tools and
conversation), streamed or not, sent to the same Python upstream
(`bench/upstream_app.py`: an aiohttp server that reads the body and answers a fixed
message, the kind of server an app reaches locally) through every arm:

- **direct**: no hop.
- **nginx**: `proxy_pass` with keep-alive and buffering off (the floor for a proxy hop; 2
  worker processes).
- **aiohttp floor**: `bench/minimal_proxy.py`, an aiohttp server that reads the body,
  posts it upstream with a pooled client and returns the answer, nothing else.
- **sidecar**: a real `promptcache sidecar` process, no policy (the planner reads every
  request, places its breakpoints and diagnoses misses); also with the planner switched
  off (`PROMPTCACHE_PLANNER_ENABLED=false`).
- **Portkey gateway** (`@portkey-ai/gateway` from npm, one Node process): its open-source
  gateway has no breakpoint injection, so it forwards the body (provider and upstream in
  its `x-portkey-provider` / `x-portkey-custom-host` headers).
- **LiteLLM proxy** (`litellm[proxy]` from PyPI, its own virtual environment, one
  worker, a master key): `cache_control_injection_points` put the same two breakpoints
  the sidecar's planner places on this request (end of the system prompt, the last
  assistant turn).

The bench installs both peers itself when they are missing (`.venv-peers/`); a peer that
cannot be installed or started here is named below with the reason and left out.

{peers_lines(run)}

Sequential figures come from `wrk` over one keep-alive connection, the `@{CONCURRENCY}`
figures from `wrk` over {CONCURRENCY} connections; all arms run at once and take turns
({run.rounds} interleaved slices per arm and measurement, each figure the median of its
slices). "added" is the arm's latency minus the direct path's; stream TTFB is the median
time to the first body byte of a streamed answer (aiohttp client, {TTFB_REQUESTS}
sequential requests) minus the direct path's. Peak RSS is the `VmHWM` of the arm's
processes. "Bounded by" compares the CPU time the arm's processes and the upstream used
during the arm's loaded slices (1.00 = one core busy all the time; 0.85 or more counts as
bound): on a quiet machine nginx in front of this one-process upstream is bounded by the
upstream and a single-process proxy by itself; when other work takes the cores, neither
gets a whole one and the column says "the shared machine".

{arms_table(run.python)}

The same run as ratios (arm / sidecar and arm / nginx; above 1 means more latency, more
requests per second or more memory than the sidecar or nginx):

{ratios_table(run.python)}

Targets (from the issue; {TARGETS}), printed by the run, nothing tuned to pass:

{targets_table(run)}

## The hops alone, against a fast upstream

The same request against nginx answering a fixed message at once (it reads the whole body
first): the upstream costs almost nothing, so nginx is bounded by itself and the table
shows each hop's own cost. The peers are measured against the Python upstream only.

{table(run.fast, run.rss_mb)}

{planner_text}
{NOTES}

## Machine

{env}

## Reproduce

```
make bench            # or: .venv/bin/python -m bench [--seconds N] [--rounds N] [--no-peers]
.venv/bin/python -m bench.planner_bench [--calls N] [--clock cpu]   # the planner alone
```

nginx and wrk come from Debian (`apt-get install nginx-light wrk`); `python -m bench`
installs them with apt-get when it runs as root and they are missing. The peers come from
PyPI and npm, pinned (`bench/peers.py`), into `.venv-peers/`.
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
