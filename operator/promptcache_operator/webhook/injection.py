"""What sidecar injection does to a pod: pure functions over plain dicts.

The webhook server (``webhook.server``) only gathers the inputs -- the pod from the
AdmissionReview, its namespace's labels, the injector config and whether the cluster
has native sidecars -- and hands :func:`inject` to kopf as a ``patch.fns`` transform;
kopf diffs the result into a JSONPatch. Keeping the rules here, free of I/O, lets the
unit tests pin every one of them with plain dicts.

The rules (the chart's values and ``docs/operator.md`` follow them):

* who: a pod annotated ``promptcache.io/inject: "true"``, or any pod in a namespace
  labelled ``promptcache.io/inject=enabled`` unless the pod says ``"false"``; never in an
  excluded namespace (config, plus the operator's own), never a mirror pod, a
  hostNetwork pod (127.0.0.1 is the node's: the port would clash and the app's traffic
  would leave the pod), or a pod that already has the sidecar (a ``promptcache``
  container in ``containers`` *or* ``initContainers``, or the status annotation) --
  the last rule makes injection idempotent, as kopf may call a transform twice;
* what: the ``promptcache`` container, as a native sidecar (first in
  ``initContainers`` with ``restartPolicy: Always``) or as the last regular container;
  the policy ConfigMap mounted ``optional`` (a missing policy never blocks a pod);
  ``ANTHROPIC_BASE_URL``/``OPENAI_BASE_URL`` in every app container that does not set
  them; ``OTEL_*`` when the config names an endpoint; scrape annotations; and the
  ``promptcache.io/status`` annotation.

Why first among the init containers: a native sidecar starts in order, and once its
startup probe passes the next init container starts. Being first means an init
container that warms a cache or runs a migration through an LLM finds the proxy up,
and nothing we need is prepared by another init container (the policy is a volume).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from promptcache_operator.settings import QUANTITY_PATTERN, InjectorConfig

INJECT_ANNOTATION = "promptcache.io/inject"
POLICY_ANNOTATION = "promptcache.io/policy"
STATUS_ANNOTATION = "promptcache.io/status"
NAMESPACE_LABEL = "promptcache.io/inject"
NAMESPACE_LABEL_VALUE = "enabled"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

CONTAINER_NAME = "promptcache"
VOLUME_NAME = "promptcache-policy"
POLICY_DIR = "/etc/promptcache/policy"
POLICY_PATH = f"{POLICY_DIR}/policy.yaml"
CONFIGMAP_PREFIX = "promptcache-policy-"

SCRAPE_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")

# annotation -> (requests|limits, resource)
RESOURCE_ANNOTATIONS = {
    "promptcache.io/sidecar-cpu": ("requests", "cpu"),
    "promptcache.io/sidecar-memory": ("requests", "memory"),
    "promptcache.io/sidecar-cpu-limit": ("limits", "cpu"),
    "promptcache.io/sidecar-memory-limit": ("limits", "memory"),
}

_QUANTITY = re.compile(QUANTITY_PATTERN)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_POLICY_NAME = 63

SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True, kw_only=True)
class Injector:
    """Everything injection needs besides the pod: fixed for the operator's lifetime."""

    config: InjectorConfig
    native: bool
    """Native sidecar (1.29+ clusters, or ``nativeSidecar: always``)."""
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
    """Whether to inject, why (for the log), and warnings for the pod's creator."""

    inject: bool
    reason: str
    policy: str | None = None
    warnings: list[str] = field(default_factory=list)


def native_enabled(mode: str, server_minor: int | None) -> bool:
    """``nativeSidecar`` setting + the API server's minor version -> native or not."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return server_minor is not None and server_minor >= 29


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = pod.get("metadata") or {}
    return meta.get("annotations") or {}


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
    ns_enabled = (namespace_labels or {}).get(NAMESPACE_LABEL) == NAMESPACE_LABEL_VALUE
    if namespace is not None and namespace in injector.excluded:
        return Decision(False, f"namespace {namespace} is excluded")
    if opt == "false":
        return Decision(False, "pod opted out")
    if opt != "true" and not ns_enabled:
        return Decision(False, "not requested")
    if MIRROR_ANNOTATION in annotations:
        return Decision(False, "mirror pod")
    if (pod.get("spec") or {}).get("hostNetwork"):
        return Decision(False, "hostNetwork pod")
    if already_injected(pod):
        return Decision(False, "already injected")
    decision = Decision(True, "annotation" if opt == "true" else "namespace label")
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
    """The config's resources, each overridable by a ``promptcache.io/sidecar-*`` annotation."""
    out = {
        "requests": config.resources.requests.as_dict(),
        "limits": config.resources.limits.as_dict(),
    }
    for annotation, (tier, resource) in RESOURCE_ANNOTATIONS.items():
        if annotation not in annotations:
            continue
        value = str(annotations[annotation]).strip()
        if _QUANTITY.match(value):
            out[tier][resource] = value
        else:
            warnings.append(f"promptcache: ignored {annotation}={value!r}: not a quantity")
    _fit_limits(out, warnings)
    return {tier: values for tier, values in out.items() if values}


_SUFFIX = {
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "P": 1e15, "E": 1e18, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40,
    "Pi": 2.0**50, "Ei": 2.0**60,
}  # fmt: skip


def parse_quantity(value: str) -> float:
    """A quantity's value (``"250m"`` -> 0.25, ``"1Ki"`` -> 1024.0); ValueError if bad."""
    m = _QUANTITY.match(value)
    if m is None:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = m.group(1), m.group(3) or ""
    if suffix[:1] in ("e", "E"):
        return float(number + suffix)
    return float(number) * _SUFFIX[suffix]


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


def sidecar_container(
    pod: Mapping[str, Any], *, injector: Injector, policy: str | None, warnings: list[str]
) -> dict[str, Any]:
    config = injector.config
    args = [
        "sidecar",
        "--listen",
        f"127.0.0.1:{config.listen_port}",
        "--admin-listen",
        f"0.0.0.0:{config.admin_port}",
    ]
    if policy:
        args += ["--policy", POLICY_PATH]
    args += [
        "--anthropic-upstream",
        config.upstreams.anthropic,
        "--openai-upstream",
        config.upstreams.openai,
    ]

    def probe(path: str, **extra: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": config.admin_port}, **extra}

    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": args,
        "ports": [{"name": "admin", "containerPort": config.admin_port, "protocol": "TCP"}],
        "readinessProbe": probe("/readyz", periodSeconds=5, failureThreshold=3),
        "livenessProbe": probe("/healthz", periodSeconds=10, failureThreshold=3),
        "resources": sidecar_resources(config, _annotations(pod), warnings),
        "securityContext": copy.deepcopy(SECURITY_CONTEXT),
    }
    env = sidecar_env(pod, config)
    if env:
        container["env"] = env
    if policy:
        container["volumeMounts"] = [
            {"name": VOLUME_NAME, "mountPath": POLICY_DIR, "readOnly": True}
        ]
    if injector.native:
        container["restartPolicy"] = "Always"
        # Gates the next init container / the app until the proxy answers.
        container["startupProbe"] = probe("/healthz", periodSeconds=1, failureThreshold=30)
    return container


def app_env(config: InjectorConfig) -> list[dict[str, str]]:
    base = f"http://127.0.0.1:{config.listen_port}"
    return [
        {"name": "ANTHROPIC_BASE_URL", "value": base},
        {"name": "OPENAI_BASE_URL", "value": f"{base}/v1"},
    ]


def status_annotation(*, version: str, policy: str | None, native: bool) -> str:
    value = {
        "version": version,
        "policy": policy or "",
        "sidecar": "native" if native else "container",
    }
    return json.dumps(value, separators=(",", ":"))


def inject_in_place(pod: dict[str, Any], *, decision: Decision, injector: Injector) -> None:
    """Add the sidecar and its wiring to ``pod`` (a no-op on an already injected pod)."""
    if not decision.inject or already_injected(pod):
        return
    spec = pod.setdefault("spec", {})
    meta = pod.setdefault("metadata", {})
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict):
        annotations = meta["annotations"] = {}

    for container in _containers(spec, "containers"):
        env = container.get("env")
        if not isinstance(env, list):
            env = container["env"] = []
        have = {e.get("name") for e in env if isinstance(e, dict)}
        env.extend(e for e in app_env(injector.config) if e["name"] not in have)

    sidecar = sidecar_container(
        pod, injector=injector, policy=decision.policy, warnings=decision.warnings
    )
    if injector.native:
        spec["initContainers"] = [sidecar, *_containers(spec, "initContainers")]
    else:
        spec["containers"] = [*_containers(spec, "containers"), sidecar]

    if decision.policy:
        volumes = spec.get("volumes")
        if not isinstance(volumes, list):
            volumes = spec["volumes"] = []
        volumes.append(
            {
                "name": VOLUME_NAME,
                "configMap": {"name": CONFIGMAP_PREFIX + decision.policy, "optional": True},
            }
        )

    if not any(key in annotations for key in SCRAPE_ANNOTATIONS):
        annotations["prometheus.io/scrape"] = "true"
        annotations["prometheus.io/port"] = str(injector.config.admin_port)
        annotations["prometheus.io/path"] = "/metrics"
    annotations[STATUS_ANNOTATION] = status_annotation(
        version=injector.version, policy=decision.policy, native=injector.native
    )


def patch_fn(*, decision: Decision, injector: Injector) -> Callable[[Any], None]:
    """:func:`inject_in_place` as a kopf ``patch.fns`` transform (may run more than once)."""
    quiet = dataclasses.replace(decision, warnings=[])  # warnings were reported already

    def transform(body: Any) -> None:
        inject_in_place(body, decision=quiet, injector=injector)

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
