"""The send stage: the planned bytes upstream, and the app's own bytes if they are refused.

The sidecar must never fail a call that succeeds without it. When the upstream refuses
a body the sidecar changed, the refusal may be the change's fault (a field an
OpenAI-compatible server does not know, a marker too many), so the app's own bytes go
instead. ``Sent`` says which bytes the answer is for, so that the relay strips only what
the sidecar added to those bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from promptcache.sidecar.backlog import Backlog
from promptcache.sidecar.metrics import Metrics
from promptcache.sidecar.prepare import Prepared
from promptcache.sidecar.upstream import Upstream
from promptcache.wire import Provider

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sent:
    """The send stage's result: the upstream's answer (headers in) and what it answers."""

    response: aiohttp.ClientResponse
    read: bytes | None
    """The answer's body when the send stage had to read it already (else ``None``)."""
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
    on_retry: Callable[[str], None],
) -> Sent:
    """Send ``prepared``; resend the app's bytes when the upstream refuses our change."""
    backlog.run_soon()  # earlier calls' counting, while the upstream works
    response, read = await upstream.send("POST", path, headers, prepared.body, on_retry=on_retry)
    if response.status == 400 and prepared.changed:
        if read is None:
            read = await upstream.read_small(response)
        if b"stream_options" in read or (prepared.plan is not None and prepared.plan.changed):
            metrics.transform_errors.labels(provider, "upstream_rejected").inc()
            log.warning(
                "upstream %s refused the planned request; resending it unchanged", upstream.label
            )
            prepared = prepared.unchanged()
            response, read = await upstream.send(
                "POST", path, headers, prepared.body, on_retry=on_retry
            )
    return Sent(response, read, prepared)
