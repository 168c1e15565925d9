"""The kopf handlers: PromptPolicy -> rendered ConfigMap + status + Events.

* ``render`` (PromptPolicy create/update/resume): validate with the shared schema,
  resolve ``configMapKeyRef`` texts, create or update ``promptcache-policy-<name>``
  (owner reference, so garbage collection deletes it with the policy: no finalizer, and
  no blocked deletions while the operator is down), and write status conditions,
  ``observedGeneration``, ``staticTokens`` and ``staticHash``. A bad policy, or one whose
  referenced ConfigMap or key is missing, becomes Invalid with that reason and a Warning
  Event, and its last good rendering stays in place for the pods that mount it. API
  failures are retried by kopf (``TemporaryError``).
* ``configmap-changes``: a ConfigMap some policy references (kopf index
  ``policy_refs``), or one we rendered, changed or went away -> re-render the policies
  concerned, writing their status directly (this is not their own event).
* ``startup``/``cleanup``: the API client, the injector (native sidecars or not, from the
  server version) and the webhook server.

:func:`register` puts these, the Deployment handler and the webhook into a registry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any, cast

import kopf
from aiohttp import web

from promptcache import __version__
from promptcache_operator import deployments, nodes, rendering
from promptcache_operator.crd import GROUP, PLURAL, VERSION
from promptcache_operator.kube import (
    ConflictError,
    KubeClient,
    KubeError,
    NoCredentialsError,
    NotFoundError,
    core_path,
    group_path,
)
from promptcache_operator.metrics import start_metrics_server
from promptcache_operator.runtime import NamespaceLabels, Runtime, runtime_of
from promptcache_operator.webhook import server as webhook_server
from promptcache_operator.webhook.events import EventPoster
from promptcache_operator.webhook.injection import Injector, native_enabled

RETRY_DELAY = 10.0
"""Seconds before kopf retries a policy whose reconciliation hit an API error."""

CONFLICT_REASON = "ConfigMapConflict"


def _configmap_lookup(client: KubeClient, namespace: str) -> rendering.ConfigMapLookup:
    async def lookup(name: str) -> Mapping[str, str] | None:
        try:
            obj = await client.get(core_path("configmaps", namespace=namespace, name=name))
        except NotFoundError:
            return None
        data = obj.get("data") or {}
        return {str(k): str(v) for k, v in data.items()}

    return lookup


class ForeignConfigMapError(Exception):
    """A ConfigMap with the rendered name exists and is not ours: never overwrite it."""


def _ours(existing: Mapping[str, Any], policy: Mapping[str, Any]) -> bool:
    meta = existing.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(rendering.MANAGED_BY) == rendering.MANAGED_BY_VALUE:
        return True
    uid = policy["metadata"]["uid"]
    return any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or [])


async def apply_configmap(
    client: KubeClient, desired: dict[str, Any], policy: Mapping[str, Any]
) -> str:
    """Create or update the rendered ConfigMap: ``created``/``updated``/``unchanged``.

    Raises ``ForeignConfigMapError`` when a ConfigMap of that name exists and is not ours.
    """
    meta = desired["metadata"]
    path = core_path("configmaps", namespace=meta["namespace"], name=meta["name"])
    for _ in range(3):  # a 409 on PUT means someone wrote in between: read again
        try:
            existing = await client.get(path)
        except NotFoundError:
            try:
                await client.create(core_path("configmaps", namespace=meta["namespace"]), desired)
            except ConflictError:
                continue
            return "created"
        if not _ours(existing, policy):
            raise ForeignConfigMapError(f"ConfigMap {meta['name']} exists and is not managed by us")
        old_meta = existing.get("metadata") or {}
        if (
            existing.get("data") == desired["data"]
            and (old_meta.get("labels") or {}) == meta["labels"]
            and old_meta.get("ownerReferences") == meta["ownerReferences"]
        ):
            return "unchanged"
        body = {**desired, "metadata": {**meta, "resourceVersion": old_meta["resourceVersion"]}}
        try:
            await client.replace(path, body)
        except ConflictError:
            continue
        return "updated"
    raise KubeError(409, f"ConfigMap {meta['name']}: conflicting writes, will retry")


async def reconcile(
    policy: Mapping[str, Any], client: KubeClient, logger: logging.Logger | kopf.Logger
) -> dict[str, Any]:
    """Render one policy; return the status it should have. Posts Events as it goes."""
    meta = policy["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    generation = int(meta.get("generation") or 0)
    current = policy.get("status") or {}
    outcome = await rendering.evaluate(policy, _configmap_lookup(client, namespace))
    body = kopf.Body(cast("kopf.RawBody", dict(policy)))
    if outcome.spec is not None:
        desired = rendering.rendered_configmap(policy, outcome.spec)
        try:
            action = await apply_configmap(client, desired, policy)
        except ForeignConfigMapError as exc:
            outcome = rendering.Outcome(False, CONFLICT_REASON, str(exc))
        else:
            if action != "unchanged":
                cm = desired["metadata"]["name"]
                logger.info(f"policy {namespace}/{name}: ConfigMap {cm} {action}")
                kopf.event(
                    body, type="Normal", reason="Rendered", message=f"ConfigMap {cm} {action}"
                )
    status = rendering.status_for(outcome, generation=generation, current=current, name=name)
    if not outcome.ready:
        old = {c.get("type"): c for c in current.get("conditions") or []}.get("Invalid") or {}
        if old.get("message") != outcome.message or old.get("status") != "True":
            logger.warning(f"policy {namespace}/{name} is invalid: {outcome.message}")
            kopf.event(body, type="Warning", reason=outcome.reason, message=outcome.message)
    return status


def in_scope(memo: Any, namespace: str | None) -> bool:
    """Not an excluded namespace (the injector's list plus the operator's own)."""
    injector = runtime_of(memo).injector
    return namespace is not None and (injector is None or namespace not in injector.excluded)


async def render(
    *, body: kopf.Body, patch: kopf.Patch, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    """PromptPolicy create/update/resume."""
    client = runtime_of(memo).require_client()
    try:
        status = await reconcile(body, client, logger)
    except KubeError as exc:
        raise kopf.TemporaryError(f"API error: {exc}", delay=RETRY_DELAY) from exc
    if rendering.status_differs(body.get("status"), status):
        patch["status"] = status


def policy_refs(
    *, namespace: str | None, name: str | None, spec: Any, **_: Any
) -> dict[tuple[str, str], str]:
    """Index: (namespace, ConfigMap name) -> names of the policies that read it."""
    if namespace is None or name is None:
        return {}
    return {(namespace, cm): name for cm in rendering.raw_references(spec)}


def _policies_for(
    name: str, namespace: str, labels: Mapping[str, str], refs: Mapping[Any, Any]
) -> set[str]:
    found = set(refs.get((namespace, name), ()))
    if labels.get(rendering.MANAGED_BY) == rendering.MANAGED_BY_VALUE:
        owner = labels.get(rendering.POLICY_LABEL)
        if owner:
            found.add(owner)
    return found


def configmap_concerns_us(
    *, name: str, namespace: str | None, labels: Mapping[str, str], memo: Any, **kwargs: Any
) -> bool:
    if namespace is None or not in_scope(memo, namespace):
        return False
    return bool(_policies_for(name, namespace, labels, kwargs.get("policy_refs") or {}))


async def configmap_changed(
    *,
    name: str,
    namespace: str | None,
    labels: Mapping[str, str],
    memo: Any,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Re-render the policies that read (or own) this ConfigMap."""
    if namespace is None:
        return
    client = runtime_of(memo).require_client()
    refs = kwargs.get("policy_refs") or {}
    for policy_name in sorted(_policies_for(name, namespace, labels, refs)):
        path = group_path(f"{GROUP}/{VERSION}", PLURAL, namespace=namespace, name=policy_name)
        try:
            policy = await client.get(path)
            policy.setdefault("apiVersion", f"{GROUP}/{VERSION}")
            status = await reconcile(policy, client, logger)
            if rendering.status_differs(policy.get("status"), status):
                await client.merge_patch(path + "/status", {"status": status})
        except NotFoundError:
            continue  # the policy is gone; its ConfigMap follows by garbage collection
        except KubeError as exc:
            logger.warning(f"re-rendering policy {namespace}/{policy_name} failed: {exc}")


async def _read_kubelets(runtime: Runtime, logger: logging.Logger | kopf.Logger) -> None:
    """Read the nodes' kubelet versions and set the injector's sidecar kind from them."""
    client = runtime.require_client()
    options = runtime.options
    try:
        runtime.kubelet_minors = await nodes.kubelet_minors(client)
    except KubeError as exc:
        if runtime.kubelet_minors is not None or runtime.injector is None:
            logger.warning(
                f"cannot read the nodes' kubelet versions ({exc}); nativeSidecar: auto "
                "injects the sidecar as a regular container, which works on every kubelet"
            )
        runtime.kubelet_minors = None
    server = runtime.server_version or (0, 0)
    minor = server[1] if server[0] == 1 else 99
    native = native_enabled(options.injector.native_sidecar, minor, runtime.kubelet_minors)
    old = runtime.injector
    if old is None:
        runtime.injector = Injector(
            config=options.injector,
            native=native,
            version=__version__,
            operator_namespace=options.own_namespace,
        )
    elif old.native != native:
        runtime.injector = dataclasses.replace(old, native=native)
    if old is None or old.native != native:
        kubelets = runtime.kubelet_minors
        seen = (
            "nodes unreadable"
            if kubelets is None
            else f"{len(kubelets)} nodes, oldest kubelet 1.{min(kubelets)}"
            if kubelets
            else "no nodes yet"
        )
        logger.info(
            f"API server {server[0]}.{server[1]}, {seen}: "
            f"{'native' if native else 'regular-container'} sidecars "
            f"(nativeSidecar: {options.injector.native_sidecar})"
        )


async def _refresh_kubelets(runtime: Runtime, logger: logging.Logger) -> None:
    while True:
        await asyncio.sleep(runtime.options.node_refresh_seconds)
        await _read_kubelets(runtime, logger)


async def startup(
    *, settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    runtime: Runtime = runtime_of(memo)
    options = runtime.options
    settings.admission.managed = None  # the chart owns the MutatingWebhookConfiguration
    settings.admission.server = (
        webhook_server.webhook_server(options, runtime) if options.webhook else None
    )
    settings.posting.enabled = True
    client = runtime.client or KubeClient(user_agent=f"promptcache-operator/{__version__}")
    runtime.client = client
    try:
        runtime.server_version = await client.server_version()
    except NoCredentialsError as exc:
        raise kopf.PermanentError(str(exc)) from exc
    except KubeError as exc:
        raise kopf.TemporaryError(f"cannot read the server version: {exc}", delay=5) from exc
    await _read_kubelets(runtime, logger)
    runtime.namespaces = NamespaceLabels(
        client,
        ttl=options.namespace_cache_seconds,
        timeout=options.namespace_lookup_seconds,
        failures=runtime.metrics.namespace_lookup_failures,
    )
    runtime.events = EventPoster(client, instance=os.environ.get("POD_NAME", "promptcache"))
    if options.metrics_port is not None and "metrics" not in runtime.extras:
        runtime.extras["metrics"] = await start_metrics_server(
            runtime.metrics, host=options.metrics_addr, port=options.metrics_port
        )
    if "kubelets" not in runtime.extras:
        runtime.extras["kubelets"] = asyncio.get_running_loop().create_task(
            _refresh_kubelets(runtime, logging.getLogger(__name__))
        )
    logger.info(
        f"webhook {'on port ' + str(options.webhook_port) if options.webhook else 'off'}; "
        f"Deployment annotations {'on' if options.deployment_annotations else 'off'}"
    )


def login(*, settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own logins, the same ones our API client uses: in-pod, else kubeconfig."""
    return kopf.login_with_service_account(
        settings=settings, **kwargs
    ) or kopf.login_with_kubeconfig(settings=settings, **kwargs)


async def cleanup(*, memo: Any, **_: Any) -> None:
    runtime = runtime_of(memo)
    task = runtime.extras.pop("kubelets", None)
    if isinstance(task, asyncio.Task):
        task.cancel()
    server = runtime.extras.pop("metrics", None)
    if isinstance(server, web.AppRunner):
        await server.cleanup()
    if runtime.events is not None:
        await runtime.events.drain()
    if runtime.client is not None:
        await runtime.client.close()


def register(
    registry: kopf.OperatorRegistry, *, webhook: bool, deployment_annotations: bool = True
) -> None:
    """Register every handler of the operator into ``registry``."""
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    resource = (GROUP, VERSION, PLURAL)
    kopf.index(*resource, id="policy_refs", registry=registry)(policy_refs)
    for decorator in (kopf.on.resume, kopf.on.create, kopf.on.update):
        decorator(*resource, id="render", registry=registry)(render)
    kopf.on.event(
        "v1", "configmaps", id="configmap-changes", when=configmap_concerns_us, registry=registry
    )(configmap_changed)
    if deployment_annotations:
        deployments.register(registry)
    if webhook:
        webhook_server.register(registry)
