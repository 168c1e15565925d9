"""``python -m bench`` (``make bench``): the sidecar against nginx and the peers, planner cost,
then context prefetch.

Prints the tables and writes ``docs/benchmarks.md``. nginx and wrk come from Debian;
when they are missing and this runs as root with apt-get, they are installed first.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("bench")

DEBIAN_PACKAGES = ("nginx-light", "wrk")


def ensure_tools() -> None:
    """nginx and wrk, from Debian's archive when missing."""
    from bench import nginx, wrk

    if nginx.nginx_binary() and wrk.available():
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SystemExit("bench: needs nginx and wrk (Debian: apt-get install nginx-light wrk)")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *DEBIAN_PACKAGES],
        check=True,
        env=env,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="per path and wrk measurement, all slices"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="slices per measurement, the paths taking turns"
    )
    parser.add_argument("--report", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--skip-context", action="store_true", help="overhead only")
    parser.add_argument(
        "--no-peers", action="store_true", help="without LiteLLM's proxy and Portkey's gateway"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ensure_tools()
    from bench import overhead, planner_bench, report

    log.info(
        "sidecar overhead: direct, nginx, sidecar%s (%gs per measurement)...",
        "" if args.no_peers else ", Portkey, LiteLLM",
        args.seconds,
    )
    run = overhead.run(seconds=args.seconds, rounds=args.rounds, with_peers=not args.no_peers)
    log.info("planner cost per call...")
    planner = planner_bench.run()
    command = "python -m bench" + (f" --seconds {args.seconds:g}" if args.seconds != 8.0 else "")
    command += f" --rounds {args.rounds}" if args.rounds != 3 else ""
    command += " --no-peers" if args.no_peers else ""
    sys.stdout.write(report.peers_lines(run) + "\n\n")
    sys.stdout.write(report.arms_table(run.python) + "\n\n")
    sys.stdout.write(report.ratios_table(run.python) + "\n\n")
    sys.stdout.write(report.targets_table(run) + "\n\n")
    sys.stdout.write(report.table(run.fast, run.rss_mb) + "\n\n")
    sys.stdout.write(planner_bench.table(planner) + "\n")
    report.write(args.report, report.markdown(run, command, planner=planner))
    log.info("written: %s", args.report)
    if not args.skip_context:
        from bench import context_bench

        return context_bench.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
