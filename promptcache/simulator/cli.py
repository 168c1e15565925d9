"""``promptcache simulate``: the provider simulator as a process of its own.

Prints one line, ``promptcache simulate: listening on http://HOST:PORT``, once it
accepts connections (with ``--listen 127.0.0.1:0`` the port is the one the OS chose), so
a parent process can wait for it; runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from .config import FAULT_KINDS, CacheConfig, LatencyConfig, SimConfig, parse_fault_rule
from .server import SimServer

log = logging.getLogger(__name__)
DEFAULT_LISTEN = "127.0.0.1:8790"


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def configure(parser: argparse.ArgumentParser, command: str) -> None:
    """Options of ``promptcache simulate``."""
    del command
    lat = LatencyConfig()
    parser.add_argument(
        "--listen", type=_listen, default=_listen(DEFAULT_LISTEN), help="HOST:PORT (port 0: any)"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="real seconds per simulated second (0.05 runs 20x faster; 0 never sleeps)",
    )
    parser.add_argument(
        "--machines", type=int, default=4, help="simulated OpenAI cache machines (default 4)"
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=parse_fault_rule,
        metavar="KIND[=ARG][:RATE]",
        help=f"inject a fault into a share of requests; KIND one of {', '.join(FAULT_KINDS)}",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for text, jitter and faults")
    parser.add_argument(
        "--prefill-lanes",
        type=int,
        default=lat.prefill_lanes,
        help=f"prefills served at once (default {lat.prefill_lanes})",
    )
    parser.add_argument(
        "--cache-clock",
        choices=("simulated", "wall"),
        default="simulated",
        help="TTLs run on simulated time (scaled with --time-scale) or on wall time",
    )
    parser.add_argument("--max-cache-entries", type=int, default=CacheConfig().max_entries)
    parser.add_argument(
        "--require-auth",
        action="store_true",
        help="answer 401 to API requests with neither x-api-key nor Authorization: Bearer",
    )
    parser.add_argument("--log-level", default="INFO")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        seed=args.seed,
        time_scale=max(0.0, args.time_scale),
        machines=max(1, args.machines),
        latency=LatencyConfig(prefill_lanes=max(1, args.prefill_lanes)),
        cache=CacheConfig(max_entries=max(1, args.max_cache_entries)),
        faults=tuple(args.fault),
        cache_clock=args.cache_clock,
        require_auth=args.require_auth,
    )


async def _serve(config: SimConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with SimServer(config, host=host, port=port) as server:
        sys.stdout.write(f"promptcache simulate: listening on {server.url}\n")
        sys.stdout.flush()
        await stop.wait()
    log.info("simulator stopped")


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; 0 on a clean stop."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    host, port = args.listen
    asyncio.run(_serve(config_from_args(args), host, port))
    return 0
