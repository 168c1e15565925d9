"""What sidecar injection does to a pod: pure functions over plain dicts.

The webhook server (``webhook.server``) only gathers the inputs -- the pod from the
AdmissionReview, its namespace's labels, the injector config and whether native
sidecars are safe -- and computes :func:`inject` inside its handler; kopf diffs the
result into a JSONPatch. Keeping the rules here, free of I/O, lets the unit tests pin
every one of them with plain dicts. Every name shared with the sidecar and the chart
(annotations, ports, flags, the ConfigMap name) comes from ``promptcache.contract``.

The rules:

* who: a pod annotated ``promptcache.io/inject: "true"``, or any pod in a namespace
  labelled ``promptcache.io/inject=enabled`` unless the pod says ``"false"``; never in an
  excluded namespace (config, plus the operator's own) or one labelled
  ``promptcache.io/inject=disabled``, never a request without a namespace, a mirror
  pod, a hostNetwork pod (127.0.0.1 is the node's: the port would clash and the app's
  traffic would leave the pod), or a pod that already has the sidecar (a
  ``promptcache`` container in ``containers`` *or* ``initContainers``, or the status
  annotation) -- the last rule makes injection idempotent. In regular-container mode a
  Job's pod is skipped too: a sidecar that never exits would keep the Job from ever
  completing. A pod that asked and was skipped for a reason of its own gets the
  ``promptcache.io/skipped`` annotation, so the skip is visible on the pod;
* what: the ``promptcache`` container, as a native sidecar (in ``initContainers`` with
  ``restartPolicy: Always``) or as a regular container; the policy ConfigMap mounted
  ``optional`` (a missing policy never blocks a pod); ``ANTHROPIC_BASE_URL`` /
  ``OPENAI_BASE_URL`` in every app container that does not bring its own (see below);
  ``OTEL_*`` when the config names an endpoint; scrape annotations; and the
  ``promptcache.io/status`` annotation.

Where the sidecar goes. After the service meshes' init containers and proxies
(``istio-init``, ``istio-validation``, ``istio-proxy``, ``linkerd-init``,
``linkerd-network-validator``, ``linkerd-proxy``): they set up the pod's network, and the
sidecar's upstream calls must go through it, as the meshes' own docs order their
containers; otherwise first, so that an init container that calls an LLM finds the
proxy up (a native sidecar's startup probe gates the next init container). In
regular-container mode the sidecar is the first app container, with a ``postStart``
hook that waits (up to :data:`HOLD_SECONDS`) for its ``/readyz``: the kubelet starts
the next container only when that hook returns, which is how Istio's
``holdApplicationUntilProxyStarts`` works. The hook always exits 0: a slow sidecar
delays the app, it never kills it.

The app's own base URLs win. A variable the app sets in ``env`` is left alone. A
container with ``envFrom`` (a ConfigMap or Secret the webhook cannot see into) may get
the variables from there -- an internal gateway, say -- and an explicit ``env`` entry
would silently override it, so such a container gets no base URL unless the pod says
``promptcache.io/env-from: override``. Every variable left to the app is recorded in the
``promptcache.io/bypass`` annotation (and the server posts an Event and counts it).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from promptcache.contract import (
    ADMIN_HEALTH_PATH,
    ADMIN_LISTEN,
    ADMIN_READY_PATH,
    ALL_INTERFACES,
    ANTHROPIC_DIAGNOSTICS,
    ANTHROPIC_UPSTREAM,
    BASE_URL_VARIABLES,
    BYPASS_ANNOTATION,
    CONTAINER_NAME,
    DEFAULT_MODE,
    ENV_FROM_ANNOTATION,
    INJECT_ANNOTATION,
    LISTEN,
    LOOPBACK,
    MAX_POLICY_NAME,
    MODE,
    MODE_ANNOTATION,
    MODES,
    NAMESPACE_DISABLED,
    NAMESPACE_ENABLED,
    NAMESPACE_LABEL,
    OPENAI_UPSTREAM,
    POLICY,
    POLICY_ANNOTATION,
    POLICY_DIR,
    POLICY_PATH,
    RESOURCE_ANNOTATIONS,
    SIDECAR_UID,
    SKIPPED_ANNOTATION,
    STATUS_ANNOTATION,
    VOLUME_NAME,
    Mode,
    base_urls,
    configmap_name,
    sidecar_flag,
)
from promptcache_operator.settings import InjectorConfig, check_quantity, parse_quantity

__all__ = [
    "CONTAINER_NAME",
    "INJECT_ANNOTATION",
    "POLICY_ANNOTATION",
    "POLICY_PATH",
    "STATUS_ANNOTATION",
    "Decision",
    "Injector",
    "already_injected",
    "decide",
    "inject",
    "native_enabled",
    "parse_quantity",
    "patch_fn",
]

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
SCRAPE_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")

MESH_CONTAINERS = frozenset(
    {
        "istio-init",
        "istio-validation",
        "istio-proxy",
        "linkerd-init",
        "linkerd-network-validator",
        "linkerd-proxy",
    }
)
"""Containers a service mesh puts first; the sidecar goes after them."""

HOLD_SECONDS = 60
"""Regular-container mode: how long the app's start waits for the sidecar's readiness."""

_WAIT_SCRIPT = (
    "import sys,time,urllib.request as u\n"
    "end=time.monotonic()+float(sys.argv[2])\n"
    "while time.monotonic()<end:\n"
    " try:\n"
    "  u.urlopen(sys.argv[1],timeout=1).close();break\n"
    " except Exception:time.sleep(0.2)\n"
)
"""The ``postStart`` hook's program (the image is Python's): poll ``/readyz`` until it
answers 200 or the time is up, then exit 0 either way."""

JOB_KINDS = frozenset({"Job"})

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": SIDECAR_UID,
    "runAsGroup": SIDECAR_UID,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True, kw_only=True)
class Injector:
    """Everything injection needs besides the pod (the server swaps it when ``native``
    changes, e.g. after an old node joined)."""

    config: InjectorConfig
    native: bool
    """Native sidecar (``nativeSidecar: always``, or ``auto`` on a 1.29+ cluster whose
    kubelets are all 1.29+)."""
    version: str
    """The promptcache version written into the status annotation."""
    operator_namespace: str | None = None

    @property
    def excluded(self) -> frozenset[str]:
        names = set(self.config.exclude_namespaces)
        if self.operator_namespace:
            names.add(self.operator_namespace)
        return frozenset(names)


@dataclass(slots=True)
class Decision:
    """Whether to inject, why (for the log), and what the pod's creator should see."""

    inject: bool
    reason: str
    policy: str | None = None
    mode: Mode = DEFAULT_MODE
    warnings: list[str] = field(default_factory=list)
    requested: bool = False
    """The pod (or its namespace) asked for the sidecar."""
    visible: bool = False
    """A skip the pod's owner should see (annotation, Event): the pod asked, and a rule
    of ours, not the pod's own opt-out, kept the sidecar away."""
    bypass: dict[str, dict[str, str]] = field(default_factory=dict)
    """Container -> base-URL variable -> why the app's own value stays (``env`` /
    ``envFrom``): calls through it bypass the sidecar."""


def native_enabled(
    mode: str, server_minor: int | None, kubelet_minors: list[int] | None = None
) -> bool:
    """``nativeSidecar`` + the API server's and the nodes' minor versions -> native or not.

    ``kubelet_minors`` is ``None`` when the nodes could not be read: ``auto`` then picks
    the regular container, which works on every kubelet (a native sidecar on a pre-1.29
    kubelet never exits as an init container, and the pod hangs in ``Init``). An empty
    list (no nodes yet) leaves the API server's version to decide.
    """
    if mode == "always":
        return True
    if mode == "never":
        return False
    if server_minor is None or server_minor < 29 or kubelet_minors is None:
        return False
    return all(minor >= 29 for minor in kubelet_minors)


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = pod.get("metadata") or {}
    value = meta.get("annotations")
    return value if isinstance(value, Mapping) else {}


def _containers(spec: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = spec.get(key)
    return value if isinstance(value, list) else []


def already_injected(pod: Mapping[str, Any]) -> bool:
    """A ``promptcache`` container in ``containers`` or ``initContainers``, or our status."""
    spec = pod.get("spec") or {}
    for key in ("containers", "initContainers"):
        if any(c.get("name") == CONTAINER_NAME for c in _containers(spec, key)):
            return True
    return STATUS_ANNOTATION in _annotations(pod)


def owned_by_job(pod: Mapping[str, Any]) -> bool:
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, Mapping) and r.get("kind") in JOB_KINDS for r in refs)


def decide(
    pod: Mapping[str, Any],
    *,
    namespace: str | None,
    namespace_labels: Mapping[str, str] | None,
    injector: Injector,
) -> Decision:
    """Apply the skip rules, in order; the first that matches gives the reason."""
    annotations = _annotations(pod)
    opt = str(annotations.get(INJECT_ANNOTATION, "")).strip().lower()
    ns_label = (namespace_labels or {}).get(NAMESPACE_LABEL)
    requested = opt == "true" or (opt != "false" and ns_label == NAMESPACE_ENABLED)
    if namespace is None:  # the exclusion rules cannot be checked: never inject blind
        return Decision(False, "no namespace in the request")
    if namespace in injector.excluded:
        return Decision(False, f"namespace {namespace} is excluded")
    if ns_label == NAMESPACE_DISABLED:
        return Decision(False, f"namespace {namespace} opted out")
    if opt == "false":
        return Decision(False, "pod opted out")
    if not requested:
        return Decision(False, "not requested")
    if MIRROR_ANNOTATION in annotations:
        return Decision(False, "mirror pod")
    if (pod.get("spec") or {}).get("hostNetwork"):
        return Decision(False, "hostNetwork pod", requested=True, visible=True)
    if already_injected(pod):
        return Decision(False, "already injected", requested=True)
    if not injector.native and owned_by_job(pod):
        return Decision(
            False,
            "Job pod without native sidecars (the sidecar would keep the Job from completing)",
            requested=True,
            visible=True,
        )
    decision = Decision(True, "annotation" if opt == "true" else "namespace label", requested=True)
    decision.mode = injector.config.mode
    mode = str(annotations.get(MODE_ANNOTATION, "")).strip()
    if mode in MODES:
        decision.mode = mode
    elif mode:
        decision.warnings.append(
            f"promptcache: ignored {MODE_ANNOTATION}={mode!r}: one of {', '.join(MODES)}"
        )
    policy = str(annotations.get(POLICY_ANNOTATION, "")).strip()
    if policy:
        if len(policy) <= MAX_POLICY_NAME and _DNS_SUBDOMAIN.match(policy):
            decision.policy = policy
        else:
            decision.warnings.append(
                f"promptcache: {POLICY_ANNOTATION}={policy!r} is not a valid policy name; "
                "the sidecar runs without a policy"
            )
    return decision


def sidecar_resources(
    config: InjectorConfig, annotations: Mapping[str, Any], warnings: list[str]
) -> dict[str, dict[str, str]]:
    """The config's resources, each overridable by a ``promptcache.io/sidecar-*`` annotation
    (a malformed or out-of-bounds annotation is ignored with a warning)."""
    out = {
        "requests": config.resources.requests.as_dict(),
        "limits": config.resources.limits.as_dict(),
    }
    for annotation, (tier, resource) in RESOURCE_ANNOTATIONS.items():
        if annotation not in annotations:
            continue
        value = str(annotations[annotation]).strip()
        try:
            out[tier][resource] = check_quantity(resource, value)
        except ValueError as exc:
            warnings.append(f"promptcache: ignored {annotation}={value[:64]!r}: {exc}")
    _fit_limits(out, warnings)
    return {tier: values for tier, values in out.items() if values}


def _fit_limits(resources: dict[str, dict[str, str]], warnings: list[str]) -> None:
    """Raise a limit below its request to the request (else the pod would be rejected)."""
    requests, limits = resources["requests"], resources["limits"]
    for resource, request in requests.items():
        limit = limits.get(resource)
        if limit is not None and parse_quantity(request) > parse_quantity(limit):
            limits[resource] = request
            warnings.append(
                f"promptcache: sidecar {resource} limit {limit} raised to its request {request}"
            )


def service_name(pod: Mapping[str, Any]) -> str:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return str(labels.get("app.kubernetes.io/name") or labels.get("app") or "promptcache-sidecar")


def sidecar_env(pod: Mapping[str, Any], config: InjectorConfig) -> list[dict[str, str]]:
    """``OTEL_*`` for the sidecar; none at all when the config names no endpoint."""
    otel = config.otel
    if not otel.endpoint:
        return []
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otel.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": otel.protocol,
        "OTEL_SERVICE_NAME": service_name(pod),
    }
    env.update(otel.extra_env)
    return [{"name": k, "value": v} for k, v in env.items()]


def sidecar_args(config: InjectorConfig, *, policy: bool, mode: Mode) -> list[str]:
    """The sidecar's command line, spelled with the contract's flags.

    ``--mode`` only when it is not the sidecar's default, and ``--anthropic-diagnostics``
    only when on: a sidecar image pinned to an older release (``injector.image``) that
    knows neither flag keeps starting in the default setup.
    """
    args = [
        "sidecar",
        sidecar_flag(LISTEN),
        f"{LOOPBACK}:{config.listen_port}",
        sidecar_flag(ADMIN_LISTEN),
        f"{ALL_INTERFACES}:{config.admin_port}",
    ]
    if policy:
        args += [sidecar_flag(POLICY), POLICY_PATH]
    args += [
        sidecar_flag(ANTHROPIC_UPSTREAM),
        config.upstreams.anthropic,
        sidecar_flag(OPENAI_UPSTREAM),
        config.upstreams.openai,
    ]
    if mode != DEFAULT_MODE:
        args += [sidecar_flag(MODE), mode]
    if config.anthropic_diagnostics:
        args.append(sidecar_flag(ANTHROPIC_DIAGNOSTICS))
    return args


def sidecar_container(
    pod: Mapping[str, Any],
    *,
    injector: Injector,
    decision: Decision,
    volume: str | None,
    warnings: list[str],
) -> dict[str, Any]:
    config = injector.config

    def probe(path: str, **extra: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": config.admin_port}, **extra}

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": sidecar_args(config, policy=volume is not None, mode=decision.mode),
        "ports": [{"name": "admin", "containerPort": config.admin_port, "protocol": "TCP"}],
        "readinessProbe": probe(ADMIN_READY_PATH, periodSeconds=5, failureThreshold=3),
        "livenessProbe": probe(ADMIN_HEALTH_PATH, periodSeconds=10, failureThreshold=3),
        "resources": sidecar_resources(config, _annotations(pod), warnings),
        "securityContext": copy.deepcopy(SECURITY_CONTEXT),
    }
    env = sidecar_env(pod, config)
    if env:
        container["env"] = env
    if volume is not None:
        container["volumeMounts"] = [{"name": volume, "mountPath": POLICY_DIR, "readOnly": True}]
    if injector.native:
        container["restartPolicy"] = "Always"
        # Gates the next init container / the app until the proxy answers.
        container["startupProbe"] = probe(ADMIN_HEALTH_PATH, periodSeconds=1, failureThreshold=30)
    else:
        ready = f"http://{LOOPBACK}:{config.admin_port}{ADMIN_READY_PATH}"
        container["lifecycle"] = {
            "postStart": {
                "exec": {"command": ["python3", "-c", _WAIT_SCRIPT, ready, str(HOLD_SECONDS)]}
            }
        }
    return container


def app_env(config: InjectorConfig) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in base_urls(config.listen_port).items()]


def status_annotation(*, version: str, policy: str | None, native: bool) -> str:
    value = {
        "version": version,
        "policy": policy or "",
        "sidecar": "native" if native else "container",
    }
    return json.dumps(value, separators=(",", ":"))


def _after_mesh(containers: list[dict[str, Any]]) -> int:
    """The index just past the last service-mesh container (0 when there is none)."""
    index = 0
    for i, container in enumerate(containers):
        if container.get("name") in MESH_CONTAINERS:
            index = i + 1
    return index


def _free_volume_name(spec: Mapping[str, Any]) -> str:
    """``promptcache-policy``, or ``-2``, ``-3``... if the pod already has that volume."""
    taken = {v.get("name") for v in _containers(spec, "volumes") if isinstance(v, dict)}
    name, n = VOLUME_NAME, 1
    while name in taken:
        n += 1
        name = f"{VOLUME_NAME}-{n}"
    return name


def _wire_apps(
    spec: dict[str, Any], pod_annotations: Mapping[str, Any], injector: Injector
) -> dict[str, dict[str, str]]:
    """Set the base URLs in the app containers; return what stays the app's own."""
    override_env_from = (
        str(pod_annotations.get(ENV_FROM_ANNOTATION, "")).strip().lower() == "override"
    )
    bypass: dict[str, dict[str, str]] = {}
    for container in _containers(spec, "containers"):
        if container.get("name") == CONTAINER_NAME or container.get("name") in MESH_CONTAINERS:
            continue
        env = container.get("env")
        if not isinstance(env, list):
            env = []
        have = {e.get("name") for e in env if isinstance(e, dict)}
        own = {name: "env" for name in BASE_URL_VARIABLES if name in have}
        if container.get("envFrom") and not override_env_from:
            own.update({name: "envFrom" for name in BASE_URL_VARIABLES if name not in own})
        if own:
            bypass[str(container.get("name", ""))] = own
        added = [e for e in app_env(injector.config) if e["name"] not in own]
        if added:
            container["env"] = [*env, *added]
    return bypass


def inject_in_place(pod: dict[str, Any], *, decision: Decision, injector: Injector) -> None:
    """Add the sidecar and its wiring to ``pod`` (a no-op on an already injected pod).

    A visible skip only gets the ``promptcache.io/skipped`` annotation.
    """
    if not (decision.inject or decision.visible) or already_injected(pod):
        return
    meta = pod.setdefault("metadata", {})
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict):
        annotations = meta["annotations"] = {}
    if not decision.inject:
        annotations[SKIPPED_ANNOTATION] = decision.reason
        return
    spec = pod.setdefault("spec", {})

    decision.bypass = _wire_apps(spec, annotations, injector)
    if decision.bypass:
        annotations[BYPASS_ANNOTATION] = json.dumps(
            decision.bypass, separators=(",", ":"), sort_keys=True
        )

    volume = _free_volume_name(spec) if decision.policy else None
    sidecar = sidecar_container(
        pod, injector=injector, decision=decision, volume=volume, warnings=decision.warnings
    )
    key = "initContainers" if injector.native else "containers"
    containers = _containers(spec, key)
    at = _after_mesh(containers)
    spec[key] = [*containers[:at], sidecar, *containers[at:]]

    if decision.policy and volume is not None:
        volumes = spec.get("volumes")
        if not isinstance(volumes, list):
            volumes = spec["volumes"] = []
        volumes.append(
            {
                "name": volume,
                "configMap": {"name": configmap_name(decision.policy), "optional": True},
            }
        )

    if not any(key in annotations for key in SCRAPE_ANNOTATIONS):
        annotations["prometheus.io/scrape"] = "true"
        annotations["prometheus.io/port"] = str(injector.config.admin_port)
        annotations["prometheus.io/path"] = "/metrics"
    annotations[STATUS_ANNOTATION] = status_annotation(
        version=injector.version, policy=decision.policy, native=injector.native
    )


def patch_fn(result: Mapping[str, Any]) -> Any:
    """A kopf ``patch.fns`` transform that makes the body ``result`` (computed in the
    handler, so an error surfaces there, not while kopf builds the patch). Idempotent."""
    frozen = copy.deepcopy(dict(result))

    def transform(body: Any) -> None:
        body.clear()
        body.update(copy.deepcopy(frozen))

    return transform


def inject(
    pod: Mapping[str, Any],
    *,
    namespace: str | None,
    namespace_labels: Mapping[str, str] | None,
    injector: Injector,
) -> tuple[dict[str, Any], Decision]:
    """The pod as it should be created, and the decision that led there (pod not mutated)."""
    out = copy.deepcopy(dict(pod))
    decision = decide(
        out, namespace=namespace, namespace_labels=namespace_labels, injector=injector
    )
    inject_in_place(out, decision=decision, injector=injector)
    return out, decision
