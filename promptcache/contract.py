"""The sidecar <-> operator contract: every name both sides (and the chart) must agree on.

The operator's webhook writes a pod spec that a sidecar of possibly another release
reads: the command line it builds must be one the sidecar parses, the ConfigMap it
mounts must be the one the operator renders, the annotations it reads are the ones the
docs and the chart name. Spelling each of these once, here in the shared core, lets the
webhook build the sidecar's command line from the same constants the sidecar parses,
and lets a test hold the two to it (``tests/unit/test_contract.py``).

Nothing here imports a component: the sidecar, the operator and the tools import this.
"""

from __future__ import annotations

from typing import Final, Literal

# ------------------------------------------------------------------ pod annotations

DOMAIN: Final = "promptcache.io"

INJECT_ANNOTATION: Final = f"{DOMAIN}/inject"
"""``"true"`` asks for the sidecar, ``"false"`` opts a pod out of a labelled namespace."""
POLICY_ANNOTATION: Final = f"{DOMAIN}/policy"
"""Name of the PromptPolicy (in the pod's namespace) whose rendered ConfigMap is mounted."""
MODE_ANNOTATION: Final = f"{DOMAIN}/mode"
"""Per-pod sidecar mode, one of :data:`MODES` (overrides the chart's ``injector.mode``)."""
STATUS_ANNOTATION: Final = f"{DOMAIN}/status"
"""Written by the webhook on every injected pod (JSON: version, policy, sidecar kind)."""
BYPASS_ANNOTATION: Final = f"{DOMAIN}/bypass"
"""Written by the webhook when app containers keep their own base URL (JSON: container ->
variables that bypass the sidecar, and why)."""
SKIPPED_ANNOTATION: Final = f"{DOMAIN}/skipped"
"""Written by the webhook when a pod asked for the sidecar and did not get it (reason)."""
ENV_FROM_ANNOTATION: Final = f"{DOMAIN}/env-from"
"""``"override"``: the app's ``envFrom`` sources do not set the base URLs, so the webhook
may set them (explicit ``env`` wins over ``envFrom`` in Kubernetes)."""
MANAGED_TEMPLATE_ANNOTATION: Final = f"{DOMAIN}/managed-template-annotations"
"""On a Deployment: which pod-template annotations the operator copied (and may remove)."""

RESOURCE_ANNOTATIONS: Final[dict[str, tuple[Literal["requests", "limits"], str]]] = {
    f"{DOMAIN}/sidecar-cpu": ("requests", "cpu"),
    f"{DOMAIN}/sidecar-memory": ("requests", "memory"),
    f"{DOMAIN}/sidecar-cpu-limit": ("limits", "cpu"),
    f"{DOMAIN}/sidecar-memory-limit": ("limits", "memory"),
}
"""Per-pod overrides of the sidecar's resources: annotation -> (tier, resource)."""

# ------------------------------------------------------------------ labels

NAMESPACE_LABEL: Final = f"{DOMAIN}/inject"
NAMESPACE_ENABLED: Final = "enabled"
"""Namespace label value: every pod of the namespace gets the sidecar unless it opts out."""
NAMESPACE_DISABLED: Final = "disabled"
"""Namespace label value: the webhook is never called for the namespace's pods."""
CONTROL_PLANE_LABEL: Final = f"{DOMAIN}/control-plane"
"""On the operator's own pods: the webhook's objectSelector skips them."""
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "promptcache"
POLICY_LABEL: Final = f"{DOMAIN}/policy"
"""On a rendered ConfigMap: the PromptPolicy it was rendered from."""

# ------------------------------------------------------------------ names and limits

MAX_LABEL_VALUE: Final = 63
"""Kubernetes label values (and DNS labels) are at most 63 characters."""
MAX_POLICY_NAME: Final = MAX_LABEL_VALUE
"""A policy's name becomes a label value and the ``policy`` metric label: at most 63."""
CONFIGMAP_PREFIX: Final = "promptcache-policy-"
"""The rendered ConfigMap of policy ``p`` is ``promptcache-policy-p`` (at most 82 chars,
well inside the 253 of a ConfigMap name)."""
POLICY_KEY: Final = "policy.yaml"
"""The one key of a rendered ConfigMap."""


def configmap_name(policy: str) -> str:
    """The ConfigMap the operator renders for ``policy`` and the webhook mounts."""
    return CONFIGMAP_PREFIX + policy


# ------------------------------------------------------------------ the injected container

CONTAINER_NAME: Final = "promptcache"
VOLUME_NAME: Final = "promptcache-policy"
POLICY_DIR: Final = "/etc/promptcache/policy"
POLICY_PATH: Final = f"{POLICY_DIR}/{POLICY_KEY}"
SIDECAR_UID: Final = 65532
"""The image's non-root user and group (the Dockerfile's ``USER 65532:65532``)."""

DEFAULT_LISTEN_PORT: Final = 8787
"""The proxy's port on 127.0.0.1, which the apps' base URLs point at."""
DEFAULT_ADMIN_PORT: Final = 9787
"""The admin port (``/metrics``, ``/healthz``, ``/readyz``), on all interfaces: Prometheus
and the kubelet's probes reach it on the pod IP."""
LOOPBACK: Final = "127.0.0.1"
ALL_INTERFACES: Final = "0.0.0.0"
DEFAULT_LISTEN: Final = f"{LOOPBACK}:{DEFAULT_LISTEN_PORT}"
DEFAULT_ADMIN_LISTEN: Final = f"{ALL_INTERFACES}:{DEFAULT_ADMIN_PORT}"

ENV_PREFIX: Final = "PROMPTCACHE_"
"""Every sidecar setting is also ``PROMPTCACHE_<NAME>``."""


def sidecar_flag(setting: str) -> str:
    """The command-line flag of a sidecar setting (``admin_listen`` -> ``--admin-listen``)."""
    return "--" + setting.replace("_", "-")


LISTEN: Final = "listen"
ADMIN_LISTEN: Final = "admin_listen"
POLICY: Final = "policy"
ANTHROPIC_UPSTREAM: Final = "anthropic_upstream"
OPENAI_UPSTREAM: Final = "openai_upstream"
MODE: Final = "mode"
ANTHROPIC_DIAGNOSTICS: Final = "anthropic_diagnostics"
"""Setting names the webhook passes as flags (:func:`sidecar_flag` spells them)."""
SIDECAR_SETTINGS: Final = frozenset(
    {LISTEN, ADMIN_LISTEN, POLICY, ANTHROPIC_UPSTREAM, OPENAI_UPSTREAM, MODE, ANTHROPIC_DIAGNOSTICS}
)

Mode = Literal["observe", "apply"]
MODES: Final[tuple[Mode, ...]] = ("observe", "apply")
"""``observe``: measure and explain, forward requests unchanged; ``apply``: plan them."""
DEFAULT_MODE: Final[Mode] = "apply"

ADMIN_METRICS_PATH: Final = "/metrics"
ADMIN_HEALTH_PATH: Final = "/healthz"
ADMIN_READY_PATH: Final = "/readyz"

ANTHROPIC_BASE_URL: Final = "ANTHROPIC_BASE_URL"
OPENAI_BASE_URL: Final = "OPENAI_BASE_URL"
BASE_URL_VARIABLES: Final = (ANTHROPIC_BASE_URL, OPENAI_BASE_URL)
"""What the official SDKs read; the webhook points them at the sidecar."""


def base_urls(listen_port: int = DEFAULT_LISTEN_PORT) -> dict[str, str]:
    """The app containers' base URLs for a sidecar on ``listen_port``."""
    base = f"http://{LOOPBACK}:{listen_port}"
    return {ANTHROPIC_BASE_URL: base, OPENAI_BASE_URL: f"{base}/v1"}
