"""The simulator as an aiohttp application, and a handle to run it in-process.

``create_app(config)`` builds the application (state under typed ``AppKey``s) so tests
can drive it through aiohttp's utilities; ``SimServer`` runs it on a loopback port
inside the caller's event loop (the demo, local tests); ``promptcache simulate`` runs it
as its own process. Besides the provider routes it serves ``GET /metrics``
(Prometheus text from its own registry), ``GET /sim/stats`` (the same totals as JSON),
``POST /sim/reset`` (empty caches, zero counters), ``GET /healthz`` and, for clients
that count before they send, ``POST /v1/messages/count_tokens``.
"""

from __future__ import annotations

import json
import types
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .anthropic_api import messages_route
from .anthropic_cache import VERSION_2023, parse_request
from .config import SimConfig
from .engine import Route, Simulation
from .errors import ApiError, error_response
from .openai_api import chat_route, responses_route

SIMULATION = web.AppKey("simulation", Simulation)
"""The simulation behind an application: caches, counters, faults."""


def _handler(sim: Simulation, route: Route[Any]) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await sim.serve(request, route)

    return handle


async def _metrics(request: web.Request) -> web.Response:
    registry = request.app[SIMULATION].recorder.metrics.registry
    response = web.Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def stats(sim: Simulation) -> dict[str, Any]:
    """Totals since start or the last reset, plus cache sizes (``GET /sim/stats``)."""
    result = sim.recorder.stats.as_dict()
    result["auth"] = dict(sim.auth_seen)
    result["diagnostics_fingerprints"] = sim.anthropic.fingerprints
    result["cache_entries"] = {
        "anthropic": len(sim.anthropic.store),
        "openai": [len(store) for store in sim.openai.machines],
    }
    result["config"] = {
        "seed": sim.config.seed,
        "time_scale": sim.config.time_scale,
        "machines": sim.config.machines,
        "prefill_lanes": sim.config.latency.prefill_lanes,
    }
    return result


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(stats(request.app[SIMULATION]))


async def _reset(request: web.Request) -> web.Response:
    request.app[SIMULATION].reset()
    return web.json_response({"reset": True})


async def _count_tokens(request: web.Request) -> web.Response:
    """``POST /v1/messages/count_tokens``: the request's input tokens, nothing cached."""
    sim = request.app[SIMULATION]
    try:
        sim.authenticate(request.headers, "anthropic")
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            raise ApiError(400, "invalid_request_error", f"invalid JSON: {exc}") from exc
        if isinstance(body, dict):
            body.setdefault("max_tokens", 1)
        version = request.headers.get("anthropic-version", VERSION_2023)
        prompt = parse_request(body, version=version)
    except ApiError as err:
        return error_response(err, dialect="anthropic", request_id="req_count_tokens")
    return web.json_response({"input_tokens": prompt.total_tokens})


async def _healthz(request: web.Request) -> web.Response:
    del request
    return web.Response(text="ok")


async def _not_found(request: web.Request) -> web.Response:
    error = ApiError(404, "not_found_error", f"Not found: {request.method} {request.path}")
    return error_response(error, dialect="anthropic", request_id="req_not_found")


def create_app(config: SimConfig) -> web.Application:
    """The simulator application for ``config`` (one simulation per application)."""
    app = web.Application(client_max_size=32 * 1024 * 1024)
    sim = Simulation(config)
    app[SIMULATION] = sim
    app.router.add_post("/v1/messages", _handler(sim, messages_route(sim)))
    app.router.add_post("/v1/messages/count_tokens", _count_tokens)
    app.router.add_post("/v1/chat/completions", _handler(sim, chat_route(sim)))
    app.router.add_post("/v1/responses", _handler(sim, responses_route(sim)))
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/sim/stats", _stats)
    app.router.add_post("/sim/reset", _reset)
    app.router.add_get("/healthz", _healthz)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


class SimServer:
    """The simulator on a loopback port in the current event loop.

    ``async with SimServer(config) as sim:`` then point SDKs at ``sim.url``
    (Anthropic) or ``sim.url + "/v1"`` (OpenAI).
    """

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0):
        self.app = create_app(config or SimConfig())
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def simulation(self) -> Simulation:
        return self.app[SIMULATION]

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def stats(self) -> dict[str, Any]:
        return stats(self.simulation)

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        for address in runner.addresses:
            if isinstance(address, tuple):
                self.port = int(address[1])
                break

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.stop()
