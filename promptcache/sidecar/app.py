"""The sidecar's aiohttp applications: the proxy app and its lifecycle.

``create_app`` builds the proxy application from settings and injected collaborators
(metrics registry, tracer provider, planner), so tests build the same thing the CLI
runs. Its ``cleanup_ctx`` owns one pooled ``ClientSession`` per upstream (and one for
context sources), the first policy load and the policy watcher; all of it is closed when
the app stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from promptcache.sidecar.backlog import Backlog
from promptcache.sidecar.config import SidecarSettings
from promptcache.sidecar.context import ContextFetcher, ContextMetrics
from promptcache.sidecar.learning_metrics import LearningCollector
from promptcache.sidecar.metrics import Metrics
from promptcache.sidecar.planner import Planner
from promptcache.sidecar.policy_watch import PolicyWatch
from promptcache.sidecar.proxy import llm_call, passthrough
from promptcache.sidecar.state import STATE, SidecarState
from promptcache.sidecar.tracing import CallTracer
from promptcache.sidecar.upstream import Upstream, make_session
from promptcache.wire import ROUTES, Family

log = logging.getLogger(__name__)


def build_state(
    settings: SidecarSettings,
    *,
    registry: CollectorRegistry,
    tracer_provider: trace.TracerProvider | None = None,
    planner: Planner | None = None,
) -> SidecarState:
    """The shared state, before any session exists (the app's lifecycle adds them)."""
    backlog = Backlog()
    metrics = Metrics(registry, before_collect=backlog.run)
    if planner is None:
        planner = Planner(learning=settings.learning, observe=settings.mode == "observe")
    registry.register(LearningCollector(planner))
    return SidecarState(
        settings=settings,
        metrics=metrics,
        backlog=backlog,
        context_metrics=ContextMetrics(registry),
        tracer=CallTracer(tracer_provider),
        policy=PolicyWatch(
            settings.policy, metrics=metrics, interval=settings.policy_poll_interval
        ),
        planner=planner,
    )


def create_app(
    state: SidecarState, *, tracer_provider: trace.TracerProvider | None = None
) -> web.Application:
    """The proxy application serving the app's LLM calls."""
    app = web.Application(client_max_size=state.settings.max_body_bytes)
    app[STATE] = state
    for path in ROUTES:
        app.router.add_post(path, llm_call)
    app.router.add_route("*", "/{tail:.*}", passthrough)
    app.cleanup_ctx.append(_lifecycle(tracer_provider))
    return app


def _lifecycle(
    tracer_provider: trace.TracerProvider | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        state = app[STATE]
        settings = state.settings
        bases: dict[Family, str] = {
            "anthropic": settings.anthropic_upstream,
            "openai": settings.openai_upstream,
        }
        sessions = [make_session(settings) for _ in bases]
        context_session = _attach_context(state, tracer_provider)
        state.policy.check()
        watcher = asyncio.create_task(state.policy.run(), name="promptcache-policy-watch")
        lag = asyncio.create_task(state.metrics.loop_lag.run(), name="promptcache-loop-lag")
        state.upstreams = {
            family: Upstream(name=family, base_url=base, session=session, settings=settings)
            for (family, base), session in zip(bases.items(), sessions, strict=True)
        }
        log.info(
            "upstreams: anthropic %s, openai %s",
            state.upstreams["anthropic"].label,
            state.upstreams["openai"].label,
        )
        try:
            yield
        finally:
            state.upstreams = {}
            state.backlog.close()  # in-flight calls are over: count them all
            for task in (watcher, lag):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for session in sessions:
                await session.close()
            state.context = None
            await context_session.close()

    return lifecycle


def _attach_context(
    state: SidecarState, tracer_provider: trace.TracerProvider | None
) -> aiohttp.ClientSession:
    """Plug the context fetcher into the request path, on a session of its own."""
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )
    state.context = ContextFetcher(
        session=session,
        metrics=state.context_metrics,
        tracer_provider=tracer_provider or trace.NoOpTracerProvider(),
    )
    return session
