"""The operator's shared state: options, the API client and the injector, in kopf's memo.

kopf hands every handler a ``memo``; the CLI puts one :class:`Runtime` in it under
``MEMO_KEY`` and the startup handler fills in what needs the running event loop (the
API client, the Event poster) or the cluster (the server's and the kubelets' versions,
which decide native sidecars). The handlers fetch it with :func:`runtime_of`, which
fails loudly if startup did not run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from promptcache_operator.kube import KubeClient, KubeError, core_path
from promptcache_operator.metrics import OperatorMetrics
from promptcache_operator.settings import OperatorOptions
from promptcache_operator.webhook.events import EventPoster
from promptcache_operator.webhook.injection import Injector

logger = logging.getLogger(__name__)

MEMO_KEY = "promptcache"


class NamespaceLabels:
    """Namespace labels for the webhook, looked up on demand and kept a few seconds.

    Why not a kopf index: with peering, the standby replica's watches are paused, so an
    index would go stale there while that replica still answers admission requests.
    A lookup per namespace every ``ttl`` seconds works the same on both replicas.
    """

    def __init__(
        self,
        client: KubeClient,
        *,
        ttl: float,
        timeout: float = 2.0,
        failures: Counter | None = None,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._timeout = timeout
        self._failures = failures
        self._cache: dict[str, tuple[float, dict[str, str] | None]] = {}

    async def get(self, namespace: str) -> dict[str, str] | None:
        """The labels, or ``None`` when they cannot be read within ``timeout`` seconds
        (injection then ignores them: an annotated pod is still injected). The timeout
        keeps the lookup inside the webhook's own budget; the API client's is 30 s."""
        now = time.monotonic()
        hit = self._cache.get(namespace)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        labels: dict[str, str] | None
        try:
            async with asyncio.timeout(self._timeout):
                obj = await self._client.get(core_path("namespaces", name=namespace))
            labels = {str(k): str(v) for k, v in (obj["metadata"].get("labels") or {}).items()}
        except (KubeError, TimeoutError) as exc:
            reason = exc if isinstance(exc, KubeError) else f"no answer in {self._timeout:g}s"
            logger.warning("cannot read namespace %s labels: %s", namespace, reason)
            if self._failures is not None:
                self._failures.inc()
            labels = None
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[namespace] = (now, labels)
        return labels


@dataclass(kw_only=True)
class Runtime:
    """One operator process's state (set up by the startup handler)."""

    options: OperatorOptions
    client: KubeClient | None = None
    injector: Injector | None = None
    namespaces: NamespaceLabels | None = None
    server_version: tuple[int, int] | None = None
    kubelet_minors: list[int] | None = None
    """Minor versions of the nodes' kubelets (``None``: the nodes could not be read)."""
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    events: EventPoster | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def require_client(self) -> KubeClient:
        if self.client is None:
            raise RuntimeError("the operator's startup handler has not run")
        return self.client


def runtime_of(memo: object) -> Runtime:
    """The :class:`Runtime` the CLI put into kopf's memo."""
    value = memo.get(MEMO_KEY) if isinstance(memo, dict) else None
    if not isinstance(value, Runtime):
        raise RuntimeError(
            f"kopf memo has no {MEMO_KEY!r} runtime (start via promptcache operator)"
        )
    return value
