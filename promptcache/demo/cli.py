"""``promptcache demo``: an app's workload, before and after, with one command.

Runs the app (the case study's support agent unless ``--app`` names another shape) three
times: legacy, zero-config (the sidecar with no policy) and with its hand-written policy.
Prints the side-by-side table, the targets check and the cross-check on stdout, the
progress on stderr, writes the report folder and names it last. Exit status: 0 when
every request succeeded and the components' token counts agree (with ``--check-targets``:
and every target passed); 1 otherwise; 2 when a helper process could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import datetime
from pathlib import Path

from promptcache.demo.llama import run_llama_cli
from promptcache.demo.report import write
from promptcache.demo.runner import DemoOptions, Progress, run_sim
from promptcache.demo.services import ServiceError
from promptcache.demo.shapes import DEFAULT, SHAPES
from promptcache.demo.workload import WorkloadConfig, workload_from

SHORT = WorkloadConfig(users=6, turns=(2, 3), think_time=(0.5, 1.5), ramp_up=1.0)
"""``--short``: a few users, two or three turns each, for tests and a quick look."""
SHORT_TIME_SCALE = 0.02
DEFAULT_TIME_SCALE = 0.5


def configure(parser: argparse.ArgumentParser, command: str) -> None:
    """The demo's flags."""
    del command
    parser.add_argument("--short", action="store_true", help="a few users, a few turns, fast")
    parser.add_argument(
        "--app",
        choices=sorted(SHAPES),
        default=DEFAULT,
        help="the app shape: support (the case study's, default), agent (tools and a "
        "tool-use loop), rag (documents in the user message), tenants (20 system prompts)",
    )
    parser.add_argument(
        "--backend",
        choices=("sim", "llama"),
        default="sim",
        help="sim: the bundled provider simulator (default); llama: a real llama.cpp server",
    )
    parser.add_argument("--users", type=int, help="concurrent users (default 75)")
    parser.add_argument("--conversations", type=int, help="conversations per user (default 1)")
    parser.add_argument("--turns", type=int, help="turns per conversation (default 4-8 varied)")
    parser.add_argument("--seed", type=int, help="workload seed (default 7)")
    parser.add_argument(
        "--time-scale",
        type=float,
        help="real seconds per simulated second, for the simulator and the users' think time "
        f"alike (default {DEFAULT_TIME_SCALE}; --short {SHORT_TIME_SCALE})",
    )
    parser.add_argument("--out", type=Path, help="report folder (default demo-report-<time>)")
    parser.add_argument(
        "--check-targets", action="store_true", help="exit 1 when a target is not met"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the demo does")


def options_from(args: argparse.Namespace) -> DemoOptions:
    """``DemoOptions`` for the simulator backend from the parsed flags."""
    workload = workload_from(args, SHORT if args.short else WorkloadConfig())
    scale = args.time_scale
    if scale is None:
        scale = SHORT_TIME_SCALE if args.short else DEFAULT_TIME_SCALE
    out = args.out or Path(f"demo-report-{datetime.now():%Y%m%d-%H%M%S}")
    return DemoOptions(workload=workload, time_scale=scale, out_dir=out, app=args.app)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.backend == "llama":
        return run_llama_cli(args)
    options = options_from(args)
    try:
        comparison = asyncio.run(run_sim(options, Progress()))
    except ServiceError as exc:
        sys.stderr.write(f"promptcache demo: {exc}\n")
        return 2
    path = write(comparison, options.out_dir)
    sys.stdout.write(comparison.text() + "\n\n")
    sys.stdout.write(f"Report: {path} (plots: latency.png, cost.png in {options.out_dir})\n")
    failed = sum(a.failures for a in comparison.arms)
    targets_ok = all(t.passed for t in comparison.targets())
    sound = failed == 0 and comparison.consistent()
    return 0 if sound and (targets_ok or not args.check_targets) else 1
