"""Benchmark: context fetched one source after another vs all at once.

The case study's app spent ~1.5 s fetching order history, user metadata and policy
documents one after another, and ~0.5 s once it fetched them together. This runs the
same shape on loopback - three real HTTP services answering in 300, 500 and 450 ms -
through the sidecar's ``ContextFetcher``: once per source in turn (what an app without
the sidecar does), and once as one policy whose sources start together. It prints both
times and their ratio; it asserts nothing (a benchmark, not a test).

    python -m bench.context_bench [--rounds N] [--report PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry

from promptcache.policy import PolicySpec, parse_policy
from promptcache.sidecar.context import ContextFetcher, ContextMetrics

SERVICES = {"order_history": 0.300, "user_metadata": 0.500, "policy_documents": 0.450}
"""Source name -> seconds the service takes to answer (the case study's three calls)."""


async def _start_service(delay: float) -> tuple[web.AppRunner, str]:
    async def answer(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(text=f"context for {request.match_info['user']}")

    app = web.Application()
    app.router.add_get("/context/{user}", answer)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _policy(urls: dict[str, str]) -> PolicySpec:
    return parse_policy(
        {
            "contextDeadline": "5s",
            "contextVariables": [{"name": "user_id", "from": "field", "field": "metadata.user_id"}],
            "contextSources": [
                {"name": name, "url": url + "/context/{user_id}", "timeout": "2s"}
                for name, url in urls.items()
            ],
        }
    )


async def _run(rounds: int) -> dict[str, Any]:
    started = [await _start_service(delay) for delay in SERVICES.values()]
    urls = {name: base for name, (_, base) in zip(SERVICES, started, strict=True)}
    together = _policy(urls)
    one_each = [_policy({name: url}) for name, url in urls.items()]
    headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
    body = {"metadata": {"user_id": "bench-user"}}
    sequential: list[float] = []
    parallel: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            fetcher = ContextFetcher(session=session, metrics=ContextMetrics(CollectorRegistry()))
            for _ in range(rounds):
                t0 = time.perf_counter()
                for spec in one_each:
                    await fetcher.fetch(policy_name="seq", policy=spec, headers=headers, body=body)
                sequential.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                blocks = await fetcher.fetch(
                    policy_name="par", policy=together, headers=headers, body=body
                )
                parallel.append(time.perf_counter() - t0)
                if any(b.text.startswith("[context unavailable") for b in blocks):
                    raise RuntimeError("a context service failed during the benchmark")
    finally:
        for runner, _ in started:
            await runner.cleanup()
    seq, par = statistics.median(sequential), statistics.median(parallel)
    return {
        "services_seconds": SERVICES,
        "rounds": rounds,
        "sum_of_services_seconds": round(sum(SERVICES.values()), 3),
        "longest_service_seconds": max(SERVICES.values()),
        "sequential_median_seconds": round(seq, 4),
        "parallel_median_seconds": round(par, 4),
        "parallel_over_sequential": round(par / seq, 3),
        "speedup": round(seq / par, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the figures; ``--report`` also writes them as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.context_bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--report", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    result = asyncio.run(_run(max(1, args.rounds)))
    services = ", ".join(f"{n} {int(s * 1000)} ms" for n, s in SERVICES.items())
    print(f"context prefetch: three services on loopback ({services}), {result['rounds']} rounds")
    print(f"  sequential (one after another): {result['sequential_median_seconds'] * 1000:7.1f} ms")
    print(f"  parallel   (sidecar, together): {result['parallel_median_seconds'] * 1000:7.1f} ms")
    print(
        f"  ratio parallel/sequential: {result['parallel_over_sequential']:.2f} "
        f"(speedup x{result['speedup']}; longest service "
        f"{int(result['longest_service_seconds'] * 1000)} ms, sum "
        f"{int(result['sum_of_services_seconds'] * 1000)} ms)"
    )
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(result, indent=2) + "\n")
        print(f"  report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
