"""Turning the app's request bytes into the bytes that go upstream, failing open at every step.

Parse the JSON body, hand it to the planner, and serialise the planner's body only if
it changed something; otherwise the app's original bytes go upstream untouched (no
re-serialisation on the hot path). A streamed OpenAI chat call without
``stream_options.include_usage`` gets it added so its usage can be measured; the relay
then removes the extra usage chunk the app did not ask for. Any failure here means the
original bytes go upstream and ``promptcache_transform_errors_total{stage}`` counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from promptcache.policy import LoadedPolicy
from promptcache.sidecar import jsoncodec
from promptcache.sidecar.metrics import Metrics, model_label
from promptcache.sidecar.planner import ContextBlock, Plan, Planner, PlanRequest
from promptcache.wire import Provider, Route

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prepared:
    """What goes upstream for one call, and what the planner decided (the plan stage)."""

    body: bytes
    plan: Plan | None
    stream: bool
    inject_usage: bool
    """The sidecar added ``stream_options.include_usage``; its chunk must be removed."""
    original: bytes
    """The app's bytes, for a fail-open resend."""
    planned: bool = False
    """The planner's edits are in ``body`` (besides any added field)."""
    added_diagnostics: bool = False
    """The sidecar added ``diagnostics`` (Anthropic cache diagnostics chaining)."""

    @property
    def changed(self) -> bool:
        """The bytes going upstream are not the app's (planned, or fields added)."""
        return self.body is not self.original

    def unchanged(self) -> Prepared:
        """The same call with the app's own bytes (the fail-open resend)."""
        return Prepared(self.original, self.plan, self.stream, False, self.original)


def parse_body(
    raw: bytes, content_type: str, *, provider: Provider, metrics: Metrics
) -> dict[str, Any] | None:
    """The JSON object in ``raw``, or ``None`` (counted) when it is not one."""
    if not raw:
        return None
    if "json" not in content_type:
        metrics.transform_errors.labels(provider, "content_type").inc()
        return None
    try:
        value = jsoncodec.loads(raw)
    except ValueError:  # malformed JSON and invalid UTF-8 alike
        metrics.transform_errors.labels(provider, "parse").inc()
        return None
    if not isinstance(value, dict):
        metrics.transform_errors.labels(provider, "parse").inc()
        return None
    return value


def request_model(parsed: dict[str, Any] | None) -> str:
    """The bounded ``model`` label of a parsed request."""
    return model_label(parsed.get("model") if parsed is not None else None)


def _wants_usage_injected(route: Route, body: dict[str, Any]) -> bool:
    if route != "chat" or body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if options is None:
        return True
    return isinstance(options, dict) and not options.get("include_usage")


def prepare(
    *,
    route: Route,
    raw: bytes,
    parsed: dict[str, Any] | None,
    provider: Provider,
    policy: LoadedPolicy | None,
    planner: Planner | None,
    context: Sequence[ContextBlock],
    now: float,
    metrics: Metrics,
    add_usage: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> Prepared:
    """Plan the request and produce the bytes to send (the original bytes on any failure).

    ``add_usage``: a streamed chat call may get ``stream_options.include_usage`` (false
    once its upstream refused that field). ``extra``: top-level fields the sidecar adds
    (cache diagnostics), never over the app's.
    """
    if parsed is None:
        return Prepared(raw, None, False, False, raw)
    stream = parsed.get("stream") is True
    plan: Plan | None = None
    body = parsed
    if planner is not None:
        try:
            plan = planner.plan(
                PlanRequest(
                    route=route,
                    body=parsed,
                    policy_name=policy.name if policy else None,
                    policy=policy.spec if policy else None,
                    context=context,
                    now=now,
                ),
                settle=False,  # the outcome's part waits for the record (accounting)
            )
        except Exception as exc:
            metrics.transform_errors.labels(provider, "plan").inc()
            log.warning("planner failed, forwarding unchanged: %s", type(exc).__name__)
            return Prepared(raw, None, stream, False, raw)
        if plan.changed and not plan.observe_only:
            planned: object = plan.body  # typed dict, but a planner bug must not pass
            if not isinstance(planned, dict):
                metrics.transform_errors.labels(provider, "plan").inc()
                log.warning("planner returned no body, forwarding unchanged")
                return Prepared(raw, None, stream, False, raw)
            body = plan.body
    planned = body is not parsed
    added = extra is not None and bool(extra) and not extra.keys() & body.keys()
    if added and extra is not None:
        body = {**body, **extra}
    rewrite = planned or added
    inject = add_usage and _wants_usage_injected(route, body)
    if not rewrite and not inject:
        return Prepared(raw, plan, stream, False, raw)
    if inject:
        options = body.get("stream_options")
        body = {**body, "stream_options": {**(options or {}), "include_usage": True}}
    try:
        return Prepared(jsoncodec.dumps(body), plan, stream, inject, raw, planned, added)
    except (TypeError, ValueError) as exc:
        metrics.transform_errors.labels(provider, "serialize").inc()
        log.warning(
            "serialising the planned body failed, forwarding unchanged: %s", type(exc).__name__
        )
        return Prepared(raw, plan, stream, False, raw)
