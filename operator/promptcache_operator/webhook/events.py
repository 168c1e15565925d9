"""Events about pods the webhook did not (fully) inject, posted without delaying admission.

A pod under admission has no uid yet, and a controller's pods often no name either, so
the Event goes to what the pod's owner will look at: the pod's controller (a ReplicaSet,
a Job...) when it has one, else the pod by name. Posting runs as a background task with
its own short timeout, so the admission response never waits for it; a failed post is
logged at debug level and forgotten (the log line and the metric already record the
case). Dry-run admissions post nothing.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any

from promptcache_operator.kube import KubeClient, KubeError, core_path

logger = logging.getLogger(__name__)

COMPONENT = "promptcache-webhook"
POST_TIMEOUT = 5.0
MAX_MESSAGE = 1024
MAX_PENDING = 64
"""Events in flight at most; beyond that new ones are dropped (a flood of failing pods
must not pile up tasks)."""


def involved_object(
    pod: Mapping[str, Any], namespace: str, *, api_version: str = "v1", kind: str = "Pod"
) -> dict[str, str] | None:
    """The pod's controller, else the pod (or whatever object the request was for) itself
    when it has a name; ``None`` otherwise."""
    meta = pod.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller") and ref.get("name"):
            return {
                "apiVersion": str(ref.get("apiVersion", "")),
                "kind": str(ref.get("kind", "")),
                "name": str(ref["name"]),
                "namespace": namespace,
                "uid": str(ref.get("uid", "")),
            }
    if meta.get("name"):
        return {
            "apiVersion": api_version,
            "kind": kind,
            "name": str(meta["name"]),
            "namespace": namespace,
        }
    return None


def event_body(
    target: Mapping[str, str], *, reason: str, message: str, kind: str, instance: str
) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{target['name']}.", "namespace": target["namespace"]},
        "involvedObject": dict(target),
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": kind,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class EventPoster:
    """Posts Events in the background through the operator's API client."""

    def __init__(self, client: KubeClient, *, instance: str) -> None:
        self._client = client
        self._instance = instance[:128]
        self._tasks: set[asyncio.Task[None]] = set()

    def post(
        self,
        pod: Mapping[str, Any],
        *,
        namespace: str | None,
        reason: str,
        message: str,
        kind: str = "Warning",
        object_kind: tuple[str, str] = ("v1", "Pod"),
    ) -> None:
        """Post in the background; ``object_kind`` is (apiVersion, kind) of ``pod``."""
        if not namespace or len(self._tasks) >= MAX_PENDING:
            return
        target = involved_object(pod, namespace, api_version=object_kind[0], kind=object_kind[1])
        if target is None:
            return
        body = event_body(
            target, reason=reason, message=message, kind=kind, instance=self._instance
        )
        task = asyncio.get_running_loop().create_task(self._send(body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, body: dict[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        try:
            async with asyncio.timeout(POST_TIMEOUT):
                await self._client.create(core_path("events", namespace=namespace), body)
        except (KubeError, TimeoutError) as exc:
            logger.debug("event %s not posted: %s", body["reason"], exc)

    async def drain(self) -> None:
        """Wait for the Events in flight (on shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=POST_TIMEOUT)
