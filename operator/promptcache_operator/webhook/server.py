"""The injection webhook: a kopf mutating handler around ``webhook.injection``.

The chart owns the MutatingWebhookConfiguration (namespace and object selectors,
``failurePolicy``, ``timeoutSeconds``), so kopf only *serves*: the handler id is
``inject``, which makes the URL path ``/inject``, and ``settings.admission.managed``
stays ``None`` so kopf never writes a webhook configuration of its own.

The server is kopf's ``WebhookServer`` with the chart's certificate files (``tls.crt``,
``tls.key``, optionally ``ca.crt``), re-read when they change (a certificate renewal
needs no restart), and wrapped by ``webhook.guard`` so that every failure lets the pod
through unmodified and is recorded (log line, metric, Event). kopf serves admission
requests whether or not peering has paused this replica's watches; nothing here depends
on a watch.

The handler computes the whole injected pod itself (so an error surfaces inside it, not
while kopf builds the patch) and hands kopf a transform that yields that pod. Every
outcome is counted; bypasses and visible skips also post an Event on the pod's owner.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import kopf

from promptcache_operator.runtime import Runtime, runtime_of
from promptcache_operator.settings import OperatorOptions
from promptcache_operator.webhook.guard import FailOpenWebhookServer
from promptcache_operator.webhook.injection import inject, patch_fn

HANDLER_ID = "inject"

logger = logging.getLogger(__name__)


def webhook_server(options: OperatorOptions, runtime: Runtime) -> kopf.WebhookServer:
    """The HTTPS server for admission requests, from the operator's options."""
    cert_dir = options.webhook_cert_dir
    certfile = pkeyfile = cafile = None
    if cert_dir is not None:
        certfile, pkeyfile = cert_dir / "tls.crt", cert_dir / "tls.key"
        ca = cert_dir / "ca.crt"
        cafile = ca if ca.exists() else None
        for path in (certfile, pkeyfile):
            if not Path(path).is_file():
                raise kopf.PermanentError(f"webhook certificate file missing: {path}")

    def on_failure(review: dict[str, Any], reason: str, detail: str) -> None:
        request = review.get("request") or {}
        pod = request.get("object") or {}
        namespace = request.get("namespace") or None
        meta = pod.get("metadata") or {}
        who = meta.get("name") or meta.get("generateName") or "?"
        logger.error(
            "admission of pod %s/%s failed open (%s): %s", namespace or "-", who, reason, detail
        )
        runtime.metrics.failed_open.labels(reason).inc()
        runtime.metrics.admissions.labels("failed_open").inc()
        gvk = request.get("kind") or {}
        group, version = gvk.get("group") or "", gvk.get("version") or "v1"
        api_version = f"{group}/{version}" if group else version
        if runtime.events is not None and not request.get("dryRun"):
            runtime.events.post(
                pod,
                namespace=namespace,
                reason="InjectionFailed",
                message=f"promptcache sidecar not injected, pod created unchanged: {detail}",
                object_kind=(api_version, str(gvk.get("kind") or "Pod")),
            )

    return FailOpenWebhookServer(
        budget=options.admission_budget,
        on_failure=on_failure,
        addr=options.webhook_addr,
        port=options.webhook_port,
        host=options.webhook_host,
        certfile=certfile,
        pkeyfile=pkeyfile,
        cafile=cafile,
        file_check_interval=30.0,
    )


def _bypass_message(bypass: dict[str, dict[str, str]]) -> str:
    parts = [
        f"{container}: {', '.join(f'{var} ({src})' for var, src in sorted(found.items()))}"
        for container, found in sorted(bypass.items())
    ]
    return (
        "calls through these base URLs bypass the promptcache sidecar (the app's own value "
        "is kept): " + "; ".join(parts)
    )


async def inject_pod(
    *,
    body: kopf.Body,
    patch: kopf.Patch,
    warnings: list[str],
    namespace: str | None,
    memo: Any,
    logger: kopf.Logger,
    dryrun: bool,
    **_: Any,
) -> None:
    """Decide on one pod CREATE and hand kopf a transform to the injected pod."""
    runtime = runtime_of(memo)
    metrics = runtime.metrics
    injector = runtime.injector
    if injector is None:  # startup has not finished: let the pod through untouched
        metrics.admissions.labels("not_ready").inc()
        return
    pod: dict[str, Any] = dict(body)
    labels = None
    if namespace and runtime.namespaces and namespace not in injector.excluded:
        labels = await runtime.namespaces.get(namespace)
    result, decision = inject(pod, namespace=namespace, namespace_labels=labels, injector=injector)
    warnings.extend(decision.warnings)
    events = None if dryrun else runtime.events
    if decision.inject:
        patch.fns.append(patch_fn(result))
        metrics.admissions.labels("injected").inc()
        for found in decision.bypass.values():
            for source in found.values():
                metrics.bypasses.labels(source).inc()
        if decision.bypass:
            message = _bypass_message(decision.bypass)
            warnings.append(f"promptcache: {message}")
            if events is not None:
                events.post(pod, namespace=namespace, reason="SidecarBypassed", message=message)
        logger.info(
            f"injecting the sidecar ({decision.reason}; policy {decision.policy or '-'}; "
            f"{'native' if injector.native else 'container'}; mode {decision.mode}"
            f"{'; bypass ' + str(sorted(decision.bypass)) if decision.bypass else ''}"
            f"{'; dry run' if dryrun else ''})"
        )
        return
    if decision.visible:
        patch.fns.append(patch_fn(result))  # the promptcache.io/skipped annotation
        message = f"promptcache sidecar not injected: {decision.reason}"
        warnings.append(f"promptcache: {message}")
        if events is not None:
            events.post(pod, namespace=namespace, reason="InjectionSkipped", message=message)
        logger.info(f"not injecting: {decision.reason}")
    else:
        logger.debug(f"not injecting: {decision.reason}")
    metrics.admissions.labels("skipped" if decision.requested else "not_requested").inc()


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the ``inject`` mutating handler for pod CREATE."""
    kopf.on.mutate("v1", "pods", id=HANDLER_ID, operations=["CREATE"], registry=registry)(
        inject_pod
    )
