"""What the sidecar's handlers share, under one typed application key.

The proxy app and the admin app both read it: the proxy to forward and measure, the
admin app to answer ``/readyz``. Upstreams are filled in by the proxy app's
``cleanup_ctx`` (their sessions live exactly as long as the app).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from promptcache.policy import PolicySpec
from promptcache.sidecar.config import SidecarSettings
from promptcache.sidecar.metrics import Metrics
from promptcache.sidecar.planner import ContextBlock, Planner
from promptcache.sidecar.policy_watch import PolicyWatch
from promptcache.sidecar.tracing import CallTracer
from promptcache.sidecar.upstream import Upstream
from promptcache.wire import Family


class ContextFetcher(Protocol):
    """Fetches a request's context blocks (``sidecar.context.ContextFetcher``)."""

    async def fetch(
        self, *, policy_name: str, policy: PolicySpec, headers: Mapping[str, str], body: object
    ) -> list[ContextBlock]: ...


@dataclass(slots=True)
class SidecarState:
    settings: SidecarSettings
    metrics: Metrics
    tracer: CallTracer
    policy: PolicyWatch
    planner: Planner
    context: ContextFetcher | None = None
    """The context-prefetch hook; set by the app's lifecycle when ``sidecar.context`` exists."""
    context_metrics: Any = None
    """``sidecar.context.ContextMetrics``, registered once per registry."""
    upstreams: dict[Family, Upstream] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return len(self.upstreams) == 2 and self.policy.attempted


STATE = web.AppKey("promptcache_state", SidecarState)
