"""The operator's own Prometheus metrics: what the webhook decided, and every time it
could not do its job.

The webhook fails open (a pod it cannot handle is created without the sidecar), so a
broken injector would otherwise show up only as missing sidecars. These counters make
each such case countable and alertable: fail-open admissions by reason, sidecars
bypassed by an app's own base URL, pods that asked for the sidecar and were skipped,
and namespace lookups that ran out of time. Labels are bounded vocabularies, never pod,
namespace or container names.

The registry is the operator's own (``CollectorRegistry``, injected), served on
``--metrics-port`` by :func:`start_metrics_server`.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.aiohttp import make_aiohttp_handler


class OperatorMetrics:
    """The operator's counters, registered into ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.admissions = Counter(
            "promptcache_webhook_admissions",
            "Pod admission requests by result (injected, skipped, not_requested, failed_open)",
            ["result"],
            registry=self.registry,
        )
        self.failed_open = Counter(
            "promptcache_webhook_failed_open",
            "Admissions the webhook let through unmodified because it failed "
            "(reason: error, timeout)",
            ["reason"],
            registry=self.registry,
        )
        self.bypasses = Counter(
            "promptcache_webhook_bypasses",
            "App containers whose base URL stays the app's own and bypasses the sidecar "
            "(source: env, envFrom)",
            ["source"],
            registry=self.registry,
        )
        self.namespace_lookup_failures = Counter(
            "promptcache_webhook_namespace_lookup_failures",
            "Namespace label lookups that failed or ran out of the admission time budget",
            registry=self.registry,
        )


async def start_metrics_server(metrics: OperatorMetrics, *, host: str, port: int) -> web.AppRunner:
    """Serve ``/metrics`` on ``host:port``; the caller cleans the runner up."""
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
