"""A load check for the simulator: N concurrent streaming users, one arm at a time.

It backs the figures in ``docs/simulator.md`` (the prefill-lane calibration and the
simulator's own CPU cost) and lets anyone re-run them: it starts ``promptcache
simulate`` as a subprocess (the demo's ``demo.services.simulator``), drives it with raw
aiohttp streaming requests shaped like the case study (~3,500 static tokens, ~3,700
changing ones, 1-3 s think time, answers of up to 300 tokens) and prints throughput,
simulated latency percentiles, the token hit rate and the simulator's CPU use.
``cached`` marks the static system block; ``legacy`` puts the changing text first, so
nothing can be cached.

    python -m promptcache.simulator.loadcheck --arm cached --users 75 \
        --duration 40 --time-scale 0.25
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from promptcache.demo.services import simulator

STATIC = "Static persona, guardrails, JSON schema and style guide. " * 245  # ~3,500 tokens
RETRIEVED = "retrieved policy text " * 670  # ~3,700 tokens


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _body(arm: str, user: int, turn: int) -> dict[str, Any]:
    dynamic = f"now={time.time()} user={user} turn={turn} {RETRIEVED}"
    if arm == "legacy":
        system: Any = dynamic + STATIC
        question = "question"
    else:
        system = [{"type": "text", "text": STATIC, "cache_control": {"type": "ephemeral"}}]
        question = dynamic + " question"
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 300,
        "stream": True,
        "system": system,
        "messages": [{"role": "user", "content": question}],
    }


async def _user(
    session: aiohttp.ClientSession, url: str, arm: str, user: int, stop: float, scale: float
) -> list[float]:
    rng = random.Random(user)
    latencies: list[float] = []
    turn = 0
    while time.monotonic() < stop:
        started = time.monotonic()
        async with session.post(url + "/v1/messages", json=_body(arm, user, turn)) as resp:
            async for _ in resp.content.iter_any():
                pass
        latencies.append((time.monotonic() - started) / scale)
        turn += 1
        await asyncio.sleep(rng.uniform(1.0, 3.0) * scale)
    return latencies


async def _main(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix="promptcache-loadcheck-") as logs:
        service, url = simulator(
            time_scale=args.time_scale,
            seed=0,
            log_dir=Path(logs),
            extra=("--prefill-lanes", str(args.prefill_lanes), "--log-level", "WARNING"),
        )
        async with service:
            assert service.pid is not None
            return await _drive(args, url, service.pid)


async def _drive(args: argparse.Namespace, url: str, pid: int) -> str:
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        per_user = await asyncio.gather(
            *(
                _user(session, url, args.arm, u, t0 + args.duration, args.time_scale)
                for u in range(args.users)
            )
        )
        async with session.get(url + "/sim/stats") as resp:
            stats = await resp.json()
    elapsed, cpu = time.monotonic() - t0, _cpu_seconds(pid) - cpu0
    lat = sorted(x for xs in per_user for x in xs)
    return (
        f"arm={args.arm} users={args.users} lanes={args.prefill_lanes} "
        f"time_scale={args.time_scale:g} requests={len(lat)} "
        f"simulated_rps={len(lat) / elapsed * args.time_scale:.2f} "
        f"p50={lat[len(lat) // 2]:.2f}s p95={lat[int(len(lat) * 0.95)]:.2f}s "
        f"token_hit_rate={stats['token_hit_rate']:.2f} simulator_cpu={100 * cpu / elapsed:.0f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m promptcache.simulator.loadcheck")
    parser.add_argument("--arm", choices=("cached", "legacy"), default="cached")
    parser.add_argument("--users", type=int, default=75)
    parser.add_argument("--duration", type=float, default=40.0, help="real seconds")
    parser.add_argument("--time-scale", type=float, default=0.25)
    parser.add_argument("--prefill-lanes", type=int, default=7)
    sys.stdout.write(asyncio.run(_main(parser.parse_args())) + "\n")


if __name__ == "__main__":
    main()
