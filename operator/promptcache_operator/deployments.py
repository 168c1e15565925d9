"""Deployment annotations -> pod template annotations, so that a rollout injects.

``kubectl annotate deployment X promptcache.io/inject=true promptcache.io/policy=P`` is
what people type (Vault's docs call annotating the Deployment instead of its template
the most common injection mistake). The webhook only sees pods, whose annotations come
from the template, so the operator copies the two annotations into
``spec.template.metadata.annotations``; the template change makes the Deployment roll
out, and the new pods are injected. Removing them from the Deployment removes them from
the template -- but only the ones the operator put there: the keys it wrote are listed
in the Deployment's own annotation ``promptcache.io/managed-template-annotations``, and
a template annotated directly by the user is left alone.

The handler is a stateless ``on.event``: it recomputes the patch from the object on
every event, so it needs no kopf bookkeeping on the Deployments of the whole cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf

from promptcache.contract import INJECT_ANNOTATION, MANAGED_TEMPLATE_ANNOTATION, POLICY_ANNOTATION
from promptcache_operator.kube import KubeError, NotFoundError, group_path
from promptcache_operator.runtime import runtime_of

COPIED = (INJECT_ANNOTATION, POLICY_ANNOTATION)
MANAGED_ANNOTATION = MANAGED_TEMPLATE_ANNOTATION
PATCH_ATTEMPTS = 3


def _annotations(meta: Any) -> Mapping[str, Any]:
    if not isinstance(meta, Mapping):
        return {}
    value = meta.get("annotations")
    return value if isinstance(value, Mapping) else {}


def template_patch(deployment: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON merge patch that brings the template in line, or ``None`` if it is."""
    meta = _annotations(deployment.get("metadata"))
    template_meta = ((deployment.get("spec") or {}).get("template") or {}).get("metadata")
    template = _annotations(template_meta)
    desired = {k: str(meta[k]) for k in COPIED if k in meta}
    managed = {k for k in str(meta.get(MANAGED_ANNOTATION, "")).split(",") if k in COPIED}

    changes: dict[str, str | None] = {}
    for key, value in desired.items():
        if template.get(key) != value:
            changes[key] = value
    for key in managed - desired.keys():
        if key in template:
            changes[key] = None
    # Ours: what we write now, and what we wrote before that is still wanted.
    now_managed = sorted(k for k in desired if k in changes or k in managed)
    managed_value = ",".join(now_managed) or None

    patch: dict[str, Any] = {}
    if changes:
        patch["spec"] = {"template": {"metadata": {"annotations": changes}}}
    if managed_value != meta.get(MANAGED_ANNOTATION):
        patch["metadata"] = {"annotations": {MANAGED_ANNOTATION: managed_value}}
    return patch or None


def concerns_us(
    annotations: Mapping[str, str], namespace: str | None = None, memo: Any = None, **_: Any
) -> bool:
    """Only Deployments that carry (or carried) our annotations, outside the excluded
    namespaces, reach the handler."""
    if memo is not None and namespace is not None:
        injector = runtime_of(memo).injector
        if injector is not None and namespace in injector.excluded:
            return False
    return any(k in annotations for k in (*COPIED, MANAGED_ANNOTATION))


async def sync_template(
    *,
    body: kopf.Body,
    type: str | None,
    name: str | None,
    namespace: str | None,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Apply :func:`template_patch` with a merge patch of our own.

    Not through kopf's ``patch``: kopf checks a patch's result field by field and warns
    about "inconsistencies" when the API server drops an emptied annotations map.
    """
    if type == "DELETED" or name is None or namespace is None:
        return
    wanted = template_patch(body)
    if wanted is None:
        return
    client = runtime_of(memo).require_client()
    path = group_path("apps/v1", "deployments", namespace=namespace, name=name)
    for attempt in range(1, PATCH_ATTEMPTS + 1):
        try:
            await client.merge_patch(path, wanted)
            break
        except NotFoundError:
            return
        except KubeError as exc:
            if attempt == PATCH_ATTEMPTS:
                logger.error(f"cannot update the pod template: {exc}")
                return
            await asyncio.sleep(attempt)
    changed = wanted.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
    if changed:
        logger.info(f"pod template annotations updated: {sorted(changed)}")


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event(
        "apps",
        "v1",
        "deployments",
        id="deployment-annotations",
        when=concerns_us,
        registry=registry,
    )(sync_template)
