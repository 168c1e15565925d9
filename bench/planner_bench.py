"""The planner's own cost per call, without HTTP: what one ``Planner.plan`` takes.

The end-to-end rows of ``python -m bench`` mix the planner with aiohttp, the event loop
and the load generator; this isolates it, on the two requests that matter: the bench's
~28 KB Anthropic request with no policy (what every call pays when the sidecar is only
measuring), and the demo's legacy request (timestamp and request id on top of the static
instructions, customer and documents after them, a growing history) under the demo's
``support-agent`` policy (relocation, two breakpoints). The no-policy cases run with
template learning on (the default) and off, and one row times ``Learner.observe`` alone,
so the learner's own cost per call stands beside the planner's. Each call plans a freshly parsed
body, as the proxy does, with the sidecar's garbage-collector settings; the demo's
requests cycle through many conversations and turns, so no two in a row are alike.

    python -m bench.planner_bench [--calls N]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.payload import request_body
from promptcache.demo.app import legacy_system
from promptcache.demo.corpus import retrieve
from promptcache.demo.workload import POLICY_DIR, WorkloadConfig, generate
from promptcache.policy import load_policy_file
from promptcache.sidecar import jsoncodec
from promptcache.sidecar.cli import GC_THRESHOLD
from promptcache.sidecar.learner import Learner
from promptcache.sidecar.planner import Planner, PlanRequest
from promptcache.sidecar.planner.engine import conversation_turn

WARM_UP = 200


@dataclass(frozen=True, slots=True)
class PlanCost:
    """Microseconds per ``Planner.plan`` call."""

    name: str
    mean_us: float
    p50_us: float
    p99_us: float
    calls: int


def demo_requests(count: int) -> list[bytes]:
    """``count`` legacy requests of the demo workload, turn by turn across conversations."""
    workload = generate(WorkloadConfig())
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    out: list[bytes] = []
    for conv in workload.conversations:
        history: list[dict[str, str]] = list(conv.prior_history)
        for turn, question in enumerate(conv.questions):
            system = legacy_system(
                now=start + timedelta(seconds=len(out)),
                request_id=conv.request_ids[turn],
                customer=conv.customer.render(),
                documents=retrieve(question, 3),
            )
            messages = [*history, {"role": "user", "content": question}]
            body = {
                "model": "claude-sonnet-4-6",
                "max_tokens": 300,
                "stream": True,
                "system": system,
                "messages": messages,
            }
            out.append(json.dumps(body, separators=(",", ":")).encode())
            history = [*messages, {"role": "assistant", "content": f"Answer {turn}."}]
            if len(out) >= count:
                return out
    return out


def _measure(
    name: str,
    bodies: Sequence[bytes],
    make: Callable[[dict[str, Any]], PlanRequest],
    calls: int,
    clock: Callable[[], float],
    *,
    learning: bool = True,
) -> PlanCost:
    planner = Planner(learning=learning)
    times: list[float] = []
    for i in range(WARM_UP + calls):
        request = make(jsoncodec.loads(bodies[i % len(bodies)]))
        started = clock()
        planner.plan(request)
        if i >= WARM_UP:
            times.append(clock() - started)
    times.sort()
    return PlanCost(
        name=name,
        mean_us=statistics.fmean(times) * 1e6,
        p50_us=times[len(times) // 2] * 1e6,
        p99_us=times[int(len(times) * 0.99) - 1] * 1e6,
        calls=calls,
    )


def _learner_alone(bodies: Sequence[bytes], calls: int, clock: Callable[[], float]) -> PlanCost:
    """``Learner.observe`` alone on the demo's system prompts (the learner's own cost)."""
    learner = Learner()
    times: list[float] = []
    for i in range(WARM_UP + calls):
        body = jsoncodec.loads(bodies[i % len(bodies)])
        previous, current = conversation_turn(body)
        started = clock()
        learner.observe(("messages", "claude-sonnet-4-6", ""), body["system"], current, previous)
        if i >= WARM_UP:
            times.append(clock() - started)
    times.sort()
    return PlanCost(
        name="demo system prompt, learner alone",
        mean_us=statistics.fmean(times) * 1e6,
        p50_us=times[len(times) // 2] * 1e6,
        p99_us=times[int(len(times) * 0.99) - 1] * 1e6,
        calls=calls,
    )


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}
"""``cpu``: this thread's CPU time, blind to other processes taking the core (A/B runs)."""


def run(*, calls: int = 3000, clock: str = "wall") -> list[PlanCost]:
    """Plan each case ``calls`` times; the sidecar's GC settings apply meanwhile."""
    tick = CLOCKS[clock]
    policy = load_policy_file(POLICY_DIR / "support-agent.yaml")
    bench_body = [request_body()]
    demo = demo_requests(300)
    gc.collect()
    gc.freeze()
    old = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        return [
            _measure(
                "bench request, no policy",
                bench_body,
                lambda b: PlanRequest(route="messages", body=b),
                calls,
                tick,
            ),
            _measure(
                "demo request, no policy",
                demo,
                lambda b: PlanRequest(route="messages", body=b),
                calls,
                tick,
            ),
            _measure(
                "bench request, no policy, learning off",
                bench_body,
                lambda b: PlanRequest(route="messages", body=b),
                calls,
                tick,
                learning=False,
            ),
            _measure(
                "demo request, no policy, learning off",
                demo,
                lambda b: PlanRequest(route="messages", body=b),
                calls,
                tick,
                learning=False,
            ),
            _learner_alone(demo, calls, tick),
            _measure(
                "demo request, support-agent policy",
                demo,
                lambda b: PlanRequest(
                    route="messages", body=b, policy_name=policy.name, policy=policy.spec
                ),
                calls,
                tick,
            ),
        ]
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def table(costs: Sequence[PlanCost]) -> str:
    lines = ["| case | mean us | p50 us | p99 us |", "|---|---:|---:|---:|"]
    lines += [f"| {c.name} | {c.mean_us:.0f} | {c.p50_us:.0f} | {c.p99_us:.0f} |" for c in costs]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.planner_bench", description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args(argv)
    sys.stdout.write(table(run(calls=args.calls, clock=args.clock)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
