"""The webhook fails open: whatever goes wrong, the pod is created, unmodified.

kopf answers ``allowed: false`` when a mutating handler raises, and the API server then
rejects the pod *whatever the webhook's failurePolicy says* -- ``Ignore`` only covers a
webhook that cannot be reached or answers garbage. A bug in the injector (or a value it
cannot handle, such as a ``1Ei`` memory annotation) would block pod creation in every
opted-in namespace. So the kopf webhook function is wrapped here, at the one boundary
between the API server and our code:

* an exception anywhere (our handler, kopf's patch building, kopf's request parsing),
* a handler outcome kopf turned into ``allowed: false``,
* no answer within the admission budget (shorter than the webhook's ``timeoutSeconds``),

all become ``allowed: true`` without a patch, with a warning for the pod's creator and a
record for the operator's: one log line, the ``promptcache_webhook_failed_open_total``
counter, and a Warning Event on the pod's owner (see ``webhook.events``).

The wrapper also fills ``metadata.namespace`` from the request when the object has none
(pods created by controllers often arrive without it), so the namespace exclusion rules
are always checked against the namespace the pod is created in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import kopf

logger = logging.getLogger(__name__)

MAX_ERROR_TEXT = 256
FAIL_OPEN_WARNING = (
    "promptcache: the sidecar was not injected because the injector failed; "
    "the pod is created unchanged (see the operator's log)"
)

FailureHook = Callable[[dict[str, Any], str, str], None]
"""Called with (the admission request, reason ``error``/``timeout``, detail)."""


def _fill_namespace(review: dict[str, Any]) -> None:
    request = review.get("request")
    if not isinstance(request, dict):
        return
    namespace = request.get("namespace")
    obj = request.get("object")
    if isinstance(namespace, str) and namespace and isinstance(obj, dict):
        meta = obj.setdefault("metadata", {})
        if isinstance(meta, dict) and not meta.get("namespace"):
            meta["namespace"] = namespace


def allowed_unmodified(review: dict[str, Any], *, warning: str) -> dict[str, Any]:
    """The AdmissionReview response that lets the object through as it is."""
    request = review.get("request") if isinstance(review.get("request"), dict) else {}
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": review.get("kind", "AdmissionReview"),
        "response": {
            "uid": (request or {}).get("uid", ""),
            "allowed": True,
            "warnings": [warning],
        },
    }


def guard(fn: Any, *, budget: float, on_failure: FailureHook) -> Any:
    """``fn`` (kopf's webhook function), failing open within ``budget`` seconds."""

    async def guarded(
        request: dict[str, Any],
        *,
        webhook: str | None = None,
        headers: Any = None,
        sslpeer: Any = None,
    ) -> dict[str, Any]:
        try:
            _fill_namespace(request)
            async with asyncio.timeout(budget):
                response: dict[str, Any] = await fn(
                    request, webhook=webhook, headers=headers, sslpeer=sslpeer
                )
        except TimeoutError:
            return _failed(request, "timeout", f"no decision within {budget:g}s")
        except Exception as exc:
            return _failed(request, "error", f"{type(exc).__name__}: {exc}")
        payload = response.get("response") if isinstance(response, dict) else None
        if not isinstance(payload, dict) or payload.get("allowed") is not True:
            status = (payload or {}).get("status") or {}
            return _failed(request, "error", str(status.get("message") or "not allowed"))
        return response

    def _failed(request: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
        detail = " ".join(detail.split())[:MAX_ERROR_TEXT]
        try:
            on_failure(request, reason, detail)
        except Exception:  # recording must never turn a fail-open into a failure
            logger.exception("recording a failed admission failed")
        return allowed_unmodified(request, warning=FAIL_OPEN_WARNING)

    return guarded


class FailOpenWebhookServer(kopf.WebhookServer):
    """``kopf.WebhookServer`` whose webhook function is :func:`guard`-ed."""

    def __init__(self, *, budget: float, on_failure: FailureHook, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget = budget
        self.on_failure = on_failure

    async def __call__(self, fn: Any) -> Any:
        async for config in super().__call__(
            guard(fn, budget=self.budget, on_failure=self.on_failure)
        ):
            yield config
