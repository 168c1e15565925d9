"""The send stage: the planned bytes upstream, and the app's own bytes if they are refused.

The sidecar must never fail a call that succeeds without it. When the upstream refuses
(400/422) a body the sidecar changed in any way, planned or with a field added, the app's
own bytes go instead, unless the refusal is clearly about something the app sent
unchanged (``refusal.app_is_at_fault``): a genuine app error is relayed once, not
doubled. A refused addition is remembered per upstream (``refusal.RefusedAdditions``),
so the next calls go without it and pay no second request.

``Sent`` says which bytes the answer is for, so that the relay strips only what the
sidecar added to those bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from multidict import CIMultiDict

from promptcache.sidecar.backlog import Backlog
from promptcache.sidecar.metrics import Metrics
from promptcache.sidecar.prepare import Prepared
from promptcache.sidecar.refusal import (
    REFUSALS,
    RefusedAdditions,
    app_is_at_fault,
    names_include_usage,
)
from promptcache.sidecar.upstream import Answer, Upstream
from promptcache.wire import Provider

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sent:
    """The send stage's result: the upstream's answer (headers in) and what it answers."""

    answer: Answer
    prepared: Prepared
    """The bytes the answer is for: the planned ones, or the app's after a refusal."""


async def send(
    upstream: Upstream,
    path: str,
    headers: CIMultiDict[str],
    prepared: Prepared,
    *,
    provider: Provider,
    metrics: Metrics,
    backlog: Backlog,
    refused: RefusedAdditions,
    client_retries: bool,
    on_retry: Callable[[str], None],
) -> Sent:
    """Send ``prepared``; resend the app's bytes when the upstream refuses our change."""
    backlog.run_soon()  # earlier calls' counting, while the upstream works
    answer = await upstream.send(
        "POST", path, headers, prepared.body, on_retry=on_retry, client_retries=client_retries
    )
    if answer.response.status not in REFUSALS or not prepared.changed:
        return Sent(answer, prepared)
    error = answer.read
    if error is None:
        error = await upstream.read_small(answer.response)
        answer = Answer(answer.response, error, answer.retries_spent)
    if app_is_at_fault(error, prepared.original, prepared.body):
        return Sent(answer, prepared)  # the app's own bytes would be refused alike
    log.warning(
        "upstream %s refused the changed request (%d); resending the app's own bytes",
        upstream.label,
        answer.response.status,
    )
    unchanged = prepared.unchanged()
    again = await upstream.send(
        "POST", path, headers, unchanged.body, on_retry=on_retry, client_retries=client_retries
    )
    if again.response.status not in REFUSALS:  # so it was our change that was refused
        metrics.transform_errors.labels(provider, "upstream_rejected").inc()
        if prepared.inject_usage and (names_include_usage(error) or not prepared.planned):
            refused.remember(upstream.label, "include_usage")
        if prepared.added_diagnostics and (b"diagnostics" in error or not prepared.planned):
            refused.remember(upstream.label, "diagnostics")
    return Sent(again, unchanged)
