"""The simulator's own surface: metrics, stats, reset, unknown routes, the latency model,
and ``promptcache simulate`` as a real process.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from promptcache.simulator import SIMULATION, LatencyConfig, SimConfig, SimServer, create_app

MODEL = "claude-sonnet-4-6"
SYSTEM = [
    {
        "type": "text",
        "text": "Static persona and guardrails. " * 300,  # 2,325 tokens
        "cache_control": {"type": "ephemeral"},
    }
]


def ask(question: str, max_tokens: int = 10) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": question}],
    }


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_stats_and_reset(
    aiohttp_client: Any,
) -> None:
    app = create_app(SimConfig(time_scale=0))
    client: TestClient[Any, Any] = await aiohttp_client(app)
    for question in ("one", "two"):
        resp = await client.post("/v1/messages", json=ask(question))
        assert resp.status == 200
    resp = await client.post("/v1/messages", json=ask("x"), headers={"x-sim-fault": "529"})
    assert resp.status == 529
    resp = await client.post("/v1/messages", json={"model": MODEL})
    assert resp.status == 400

    metrics = samples(await (await client.get("/metrics")).text())
    anthropic_labels = (("api", "anthropic"),)
    assert (
        metrics[("promptcache_sim_requests_total", (("api", "anthropic"), ("outcome", "ok")))] == 2
    )
    assert (
        metrics[("promptcache_sim_requests_total", (("api", "anthropic"), ("outcome", "fault")))]
        == 1
    )
    assert (
        metrics[
            ("promptcache_sim_requests_total", (("api", "anthropic"), ("outcome", "client_error")))
        ]
        == 1
    )
    kinds = {
        kind: metrics[
            ("promptcache_sim_input_tokens_total", (("api", "anthropic"), ("kind", kind)))
        ]
        for kind in ("uncached", "cache_read", "cache_write")
    }
    assert kinds == {"uncached": 2, "cache_read": 2325, "cache_write": 2325}
    assert (
        metrics[("promptcache_sim_cache_lookups_total", (("api", "anthropic"), ("result", "hit")))]
        == 1
    )
    assert (
        metrics[("promptcache_sim_cache_lookups_total", (("api", "anthropic"), ("result", "miss")))]
        == 1
    )
    assert metrics[("promptcache_sim_faults_injected_total", (("kind", "529"),))] == 1
    assert metrics[("promptcache_sim_output_tokens_total", anthropic_labels)] == 20

    stats = await (await client.get("/sim/stats")).json()
    assert stats["tokens"] == {
        "uncached": 2,
        "cache_read": 2325,
        "cache_write": 2325,
        "cache_write_5m": 2325,
        "cache_write_1h": 0,
        "input_total": 4652,
        "output": 20,
    }
    assert stats["requests"] == 4
    assert stats["errors"] == 2
    assert stats["cache"] == {"hits": 1, "misses": 1}
    assert stats["token_hit_rate"] == pytest.approx(2325 / 4652)
    assert stats["faults"] == {"529": 1}
    assert stats["cache_entries"]["anthropic"] == 1
    assert app[SIMULATION].recorder.stats.as_dict()["tokens"] == stats["tokens"]

    assert (await client.post("/sim/reset")).status == 200
    after = await (await client.get("/sim/stats")).json()
    assert after["requests"] == 0
    assert after["cache_entries"]["anthropic"] == 0
    metrics = samples(await (await client.get("/metrics")).text())
    assert (
        "promptcache_sim_requests_total",
        (("api", "anthropic"), ("outcome", "ok")),
    ) not in metrics
    resp = await client.post("/v1/messages", json=ask("three"))
    assert (await resp.json())["usage"]["cache_read_input_tokens"] == 0


async def test_unknown_routes_answer_in_provider_shape(aiohttp_client: Any) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(SimConfig(time_scale=0)))
    resp = await client.get("/v1/models/nope")
    assert resp.status == 404
    body = await resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert (await client.get("/healthz")).status == 200


async def test_a_client_leaving_mid_stream_is_counted_as_aborted() -> None:
    async with (
        SimServer(SimConfig(time_scale=0.05)) as sim,
        aiohttp.ClientSession() as session,
    ):
        resp = await session.post(sim.url + "/v1/messages", json=ask("q", 300) | {"stream": True})
        assert (await resp.content.readany()).startswith(b"event: message_start")
        resp.close()
        for _ in range(100):  # the server notices at its next write
            if sim.stats()["errors"]:
                break
            await asyncio.sleep(0.05)
        registry = sim.simulation.recorder.metrics.registry
        aborted = registry.get_sample_value(
            "promptcache_sim_requests_total", {"api": "anthropic", "outcome": "aborted"}
        )
    assert aborted == 1
    assert sim.stats()["tokens"]["cache_write"] == 2325  # its prefill was billed


def ttft_sum(sim: SimServer) -> float:
    registry = sim.simulation.recorder.metrics.registry
    value = registry.get_sample_value(
        "promptcache_sim_time_to_first_token_seconds_sum", {"api": "anthropic"}
    )
    return value or 0.0


async def test_cached_prefill_is_faster_by_the_calibrated_rates() -> None:
    latency = LatencyConfig(jitter=0.0, tail_probability=0.0)
    async with (
        SimServer(SimConfig(time_scale=0, latency=latency)) as sim,
        anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0) as client,
    ):
        await client.messages.create(**ask("q"))
        uncached = ttft_sum(sim)
        await client.messages.create(**ask("q"))
        cached = ttft_sum(sim) - uncached
    assert uncached == pytest.approx(0.5 + 2326 / 9000)
    assert cached == pytest.approx(0.5 + 1 / 9000 + 2325 / 50_000)


@pytest.mark.parametrize(("lanes", "min_wait", "max_wait"), [(1, 1.5, 60.0), (4, 0.0, 1.0)])
async def test_prefill_lanes_queue_concurrent_requests(
    lanes: int, min_wait: float, max_wait: float
) -> None:
    # Four uncached prefills of ~1 simulated second each, at 1/10 speed.
    latency = LatencyConfig(
        fixed_s=0.0,
        prefill_tokens_per_s=2326.0,
        jitter=0.0,
        tail_probability=0,
        prefill_lanes=lanes,
    )
    async with (
        SimServer(SimConfig(time_scale=0.1, latency=latency)) as sim,
        anthropic.AsyncAnthropic(base_url=sim.url, api_key="k", max_retries=0) as client,
    ):
        await asyncio.gather(
            *(
                client.messages.create(**{**ask("q"), "system": f"{SYSTEM[0]['text']}{i}"})
                for i in range(4)
            )
        )
        registry = sim.simulation.recorder.metrics.registry
        waited = registry.get_sample_value("promptcache_sim_prefill_queue_seconds_sum") or 0.0
    # One lane: the requests wait ~0 + 1 + 2 + 3 simulated seconds (less if they
    # arrive spread out); four lanes: ~none.
    assert min_wait <= waited <= max_wait


@pytest.fixture
async def process() -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "promptcache",
        "simulate",
        "--listen",
        "127.0.0.1:0",
        "--time-scale",
        "0",
        "--fault",
        "429:1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
        assert line.startswith("promptcache simulate: listening on http://127.0.0.1:")
        yield proc, line.rsplit(" ", 1)[1].strip()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_simulate_command_serves_until_sigterm(
    process: tuple[asyncio.subprocess.Process, str],
) -> None:
    proc, url = process
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/messages", json=ask("q")) as resp:
            assert resp.status == 429  # --fault 429:1 hits every request
        async with session.post(
            url + "/v1/messages", json=ask("q"), headers={"x-sim-fault": "none"}
        ) as resp:
            assert resp.status == 200
        async with session.get(url + "/sim/stats") as resp:
            stats = await resp.json()
    assert stats["faults"] == {"429": 1}
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
