"""The injection webhook: a kopf mutating handler around ``webhook.injection``.

The chart owns the MutatingWebhookConfiguration (namespace and object selectors,
``failurePolicy: Ignore``, ``timeoutSeconds``), so kopf only *serves*: the handler id is
``inject``, which makes the URL path ``/inject``, and ``settings.admission.managed``
stays ``None`` so kopf never writes a webhook configuration of its own.

The server is ``kopf.WebhookServer`` with the chart's certificate files (``tls.crt``,
``tls.key``, optionally ``ca.crt``); kopf re-reads them when they change, so a
cert-manager renewal needs no restart. kopf serves admission requests whether or not
peering has paused this replica's watches; nothing here depends on a watch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import kopf

from promptcache_operator.runtime import runtime_of
from promptcache_operator.settings import OperatorOptions
from promptcache_operator.webhook.injection import (
    INJECT_ANNOTATION,
    inject,
    patch_fn,
)

HANDLER_ID = "inject"

logger = logging.getLogger(__name__)


def webhook_server(options: OperatorOptions) -> kopf.WebhookServer:
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
    return kopf.WebhookServer(
        addr=options.webhook_addr,
        port=options.webhook_port,
        host=options.webhook_host,
        certfile=certfile,
        pkeyfile=pkeyfile,
        cafile=cafile,
        file_check_interval=30.0,
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
    """Decide on one pod CREATE and hand kopf an idempotent transform for the patch."""
    runtime = runtime_of(memo)
    injector = runtime.injector
    if injector is None:  # startup has not finished: let the pod through untouched
        return
    pod: dict[str, Any] = dict(body)
    opt = str((pod.get("metadata") or {}).get("annotations", {}).get(INJECT_ANNOTATION, ""))
    labels = None
    # The namespace's labels only matter when the pod itself did not say yes or no.
    undecided = opt.strip().lower() not in ("true", "false")
    if namespace and undecided and runtime.namespaces and namespace not in injector.excluded:
        labels = await runtime.namespaces.get(namespace)
    _, decision = inject(pod, namespace=namespace, namespace_labels=labels, injector=injector)
    if not decision.inject:
        logger.debug(f"not injecting: {decision.reason}")
        return
    warnings.extend(decision.warnings)
    patch.fns.append(patch_fn(decision=decision, injector=injector))
    logger.info(
        f"injecting the sidecar ({decision.reason}; policy {decision.policy or '-'}; "
        f"{'native' if injector.native else 'container'}{'; dry run' if dryrun else ''})"
    )


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the ``inject`` mutating handler for pod CREATE."""
    kopf.on.mutate("v1", "pods", id=HANDLER_ID, operations=["CREATE"], registry=registry)(
        inject_pod
    )
