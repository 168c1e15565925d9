"""What the sidecar's handlers share, under one typed application key.

The proxy app and the admin app both read it: the proxy to forward and measure, the
admin app to answer ``/readyz``. Upstreams and the context fetcher are filled in by the
proxy app's ``cleanup_ctx`` (their sessions live exactly as long as the app).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from promptcache.sidecar.backlog import Backlog
from promptcache.sidecar.config import SidecarSettings
from promptcache.sidecar.context import ContextFetcher, ContextMetrics
from promptcache.sidecar.diagnostics import Chain
from promptcache.sidecar.metrics import Metrics
from promptcache.sidecar.planner import Planner
from promptcache.sidecar.policy_watch import PolicyWatch
from promptcache.sidecar.refusal import RefusedAdditions
from promptcache.sidecar.tracing import CallTracer
from promptcache.sidecar.upstream import Upstream
from promptcache.wire import Family


@dataclass(slots=True)
class SidecarState:
    settings: SidecarSettings
    metrics: Metrics
    tracer: CallTracer
    policy: PolicyWatch
    planner: Planner
    backlog: Backlog
    """Answered calls still to be counted (run before every scrape, see ``Metrics``)."""
    context_metrics: ContextMetrics
    """The context fetcher's metrics, registered once per registry."""
    context: ContextFetcher | None = None
    """The context-prefetch hook; set while the app runs (its session is the app's)."""
    upstreams: dict[Family, Upstream] = field(default_factory=dict)
    refused: RefusedAdditions = field(default_factory=RefusedAdditions)
    """What each upstream refused of the fields the sidecar adds (no second request later)."""
    chain: Chain = field(default_factory=Chain)
    """Anthropic response ids by the conversation they answered (diagnostics chaining)."""

    def diagnostics_on(self, spec_value: bool | None) -> bool:
        """Chaining for a call: the sidecar flag, unless the policy opts out."""
        return self.settings.anthropic_diagnostics and spec_value is not False

    @property
    def ready(self) -> bool:
        return len(self.upstreams) == 2 and self.policy.attempted


STATE = web.AppKey("promptcache_state", SidecarState)
