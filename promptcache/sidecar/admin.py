"""The admin listener: metrics for Prometheus, liveness and readiness for the kubelet.

It runs on its own port (``--admin-listen``) so that scraping and probes never queue
behind LLM calls and are never exposed on the app's loopback port by accident. Nothing
here is traced or counted as a proxied call.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from promptcache.sidecar.state import STATE, SidecarState
from promptcache.sidecar.templates_view import templates_report


def _metrics_handler(registry: CollectorRegistry) -> Handler:
    """prometheus-client's own aiohttp handler (>= 0.21), else ``generate_latest``."""
    try:
        from prometheus_client.aiohttp import make_aiohttp_handler
    except ImportError:  # pragma: no cover - older client

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        return metrics
    return make_aiohttp_handler(registry)


async def healthz(request: web.Request) -> web.Response:
    """Alive: the event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready once the upstream sessions exist and the policy file was loaded (or tried).

    A policy file that never validated leaves the sidecar ready in pass-through mode:
    holding the app's pod back would fail requests that work without the sidecar.
    The admin port is reachable from the pod network (Prometheus, the kubelet), so the
    answer carries no detail an attacker could use: no upstream list and no error text
    (the policy's error is in the sidecar's log), only whether the last file was rejected.
    """
    state = request.app[STATE]
    policy = state.policy
    body = {
        "ready": state.ready,
        "policy": policy.current.name if policy.current else None,
        "policyRejected": policy.last_error is not None,
    }
    return web.json_response(body, status=200 if state.ready else 503)


async def templates(request: web.Request) -> web.Response:
    """Learned prompt templates and the never-worse guard's tracks, by shape only."""
    return web.json_response(templates_report(request.app[STATE].planner))


def create_admin_app(state: SidecarState) -> web.Application:
    """The admin application sharing ``state`` with the proxy application."""
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/metrics", _metrics_handler(state.metrics.registry))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/templates", templates)
    return app
