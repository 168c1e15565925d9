"""Per-request context, fetched in parallel before the request goes upstream.

A policy's ``contextSources`` (order history, user metadata, retrieved documents) are
fetched all at once under one ``contextDeadline``; the results come back as
``ContextBlock``s that the planner places after the cached prefix, never inside it.

How the proxy uses it::

    from promptcache.sidecar.context import ContextFetcher, ContextMetrics, RequiredSourceError

    metrics = ContextMetrics(registry)            # a prometheus_client CollectorRegistry
    fetcher = ContextFetcher(session=session, metrics=metrics)   # app-owned ClientSession
    try:
        blocks = await fetcher.fetch(
            policy_name=name,        # the ``policy`` metric label
            policy=spec,             # PolicySpec
            headers=request.headers, # CIMultiDictProxy[str] (any str mapping works)
            body=parsed_json,        # the parsed request body, or None
        )
    except RequiredSourceError as exc:  # exc.source, exc.reason
        ...  # answer with a provider-shaped error naming exc.source

``fetch`` returns ``list[sidecar.planner.ContextBlock]`` in declaration order:
``name`` is the source name, ``text`` the answer or, for an optional source that
failed, its ``placeholder`` (default ``[context unavailable: <reason>]``; an empty
placeholder leaves the block out). No sources: ``[]`` at once. It never waits much
past the deadline; a caller's cancellation cancels every fetch.

Failure reasons: see ``FailureReason``. Metrics: ``promptcache_context_fetch_duration_seconds``
{policy,source}, ``promptcache_context_fetch_failures_total``{policy,source,reason},
``promptcache_context_memo_hits_total``{policy,source}, ``promptcache_context_phase_seconds``
{policy}. Spans: ``context.fetch <source>`` (tracer ``promptcache.sidecar``), children of
the current span, with the source, method, HTTP status, outcome, bytes and attempts;
never a URL, a variable value or fetched text (nor in logs).
"""

from promptcache.sidecar.context.errors import FailureReason, RequiredSourceError, SourceError
from promptcache.sidecar.context.fetcher import ContextFetcher, SourceResult
from promptcache.sidecar.context.memo import Memo, MemoKey
from promptcache.sidecar.context.metrics import ContextMetrics

__all__ = [
    "ContextFetcher",
    "ContextMetrics",
    "FailureReason",
    "Memo",
    "MemoKey",
    "RequiredSourceError",
    "SourceError",
    "SourceResult",
]
