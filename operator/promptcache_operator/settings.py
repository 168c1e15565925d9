"""Configuration of the operator process and of the sidecar it injects.

Two kinds of settings live here, because both are read once at start and then passed
down explicitly:

* :class:`InjectorConfig` is the chart's ``<fullname>-injector`` ConfigMap (key
  ``config.yaml``): what the injected sidecar looks like. It is validated strictly
  (``extra=forbid``) so that a typo in Helm values stops the operator at start with a
  one-line error instead of silently injecting a default.
* :class:`OperatorOptions` are the command-line options of ``promptcache operator``.

The field names of the injector config are camelCase on the wire (like the chart's
values) and snake_case in Python, as in the policy schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from promptcache import __version__
from promptcache.contract import DEFAULT_ADMIN_PORT, DEFAULT_LISTEN_PORT, DEFAULT_MODE, Mode
from promptcache.policy import describe_validation_error, read_yaml_file

DEFAULT_IMAGE = f"ghcr.io/promptcache/promptcache:{__version__}"
"""The sidecar image when the config names none: the image of this very release."""

QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"
"""A non-negative Kubernetes resource quantity (``50m``, ``0.5``, ``64Mi``, ``1e3``)."""

_QUANTITY = re.compile(QUANTITY_PATTERN)
OTEL_ENV_PATTERN = r"^OTEL_[A-Z0-9_]+$"
_ENV_NAME = re.compile(OTEL_ENV_PATTERN)

MAX_QUANTITY: dict[str, float] = {"cpu": 16.0, "memory": 16.0 * 2**30}
"""The most a pod's ``promptcache.io/sidecar-*`` annotation may ask for (16 cores, 16Gi:
the sidecar needs ~0.1 core and ~70 MB). Beyond this an app team's value is a typo
(``1Ei``, ``5000``), not a sizing choice, and would make the pod unschedulable. The
chart's own defaults are not bounded here: the values schema (generated from this
module) could not say so, and what the schema accepts the operator must accept."""

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
    if suffix in _SUFFIX:  # "E" and "Ei" are suffixes, "E3" / "e3" an exponent
        return float(number) * _SUFFIX[suffix]
    return float(number + suffix)


def check_quantity(resource: str, value: str) -> str:
    """``value`` if it is a quantity within :data:`MAX_QUANTITY`; ValueError says why not."""
    amount = parse_quantity(value)
    limit = MAX_QUANTITY[resource]
    if amount > limit:
        raise ValueError(f"{resource} {value} is above the sidecar's maximum ({limit:g})")
    return value


class ConfigError(ValueError):
    """An injector config that cannot be used, with a one-line reason."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Quantities(_Model):
    """CPU and memory quantities (``50m``, ``64Mi``); ``None`` leaves one unset."""

    cpu: str | None = Field(default=None, pattern=QUANTITY_PATTERN)
    memory: str | None = Field(default=None, pattern=QUANTITY_PATTERN)

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v is not None}


class Resources(_Model):
    """The sidecar's requests and limits (per-pod annotations override each of them)."""

    requests: Quantities = Quantities(cpu="50m", memory="64Mi")
    limits: Quantities = Quantities(cpu="1", memory="256Mi")


class Upstreams(_Model):
    """Where the sidecar forwards each provider's traffic."""

    anthropic: str = Field(default="https://api.anthropic.com", pattern=r"^https?://")
    openai: str = Field(default="https://api.openai.com", pattern=r"^https?://")


class OtelConfig(_Model):
    """OpenTelemetry export of the sidecar (traces and metrics over OTLP)."""

    endpoint: str = ""
    """OTLP endpoint; empty means no ``OTEL_*`` variable is injected at all."""
    protocol: Literal["http/protobuf", "http/json", "grpc"] = "http/protobuf"
    extra_env: dict[str, str] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": OTEL_ENV_PATTERN}}
    )
    """More ``OTEL_*`` variables, set verbatim."""

    @field_validator("extra_env")
    @classmethod
    def _otel_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if not _ENV_NAME.match(k))
        if bad:
            raise ValueError(f"only OTEL_* variables belong here, not {bad[0]}")
        return value


class InjectorConfig(_Model):
    """What the webhook injects: the chart writes it, the operator validates it at start."""

    image: str = Field(default=DEFAULT_IMAGE, min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    native_sidecar: Literal["auto", "always", "never"] = "auto"
    """``auto``: a native sidecar (``initContainers``, ``restartPolicy: Always``) when the
    API server *and every node's kubelet* are 1.29 or newer (native sidecars are on by
    default there; an older kubelet would run the sidecar as a plain init container that
    never exits, and the pod would hang in ``Init``); else a regular container."""
    listen_port: int = Field(default=DEFAULT_LISTEN_PORT, ge=1024, le=65535)
    """The sidecar's proxy port on 127.0.0.1, which the apps' base URLs point at (the
    sidecar runs without capabilities, so not a privileged port)."""
    admin_port: int = Field(default=DEFAULT_ADMIN_PORT, ge=1024, le=65535)
    """The sidecar's admin port (metrics, probes) on all interfaces."""
    mode: Mode = DEFAULT_MODE
    """The sidecar's ``--mode``: ``apply`` plans requests, ``observe`` only measures and
    explains; a pod's ``promptcache.io/mode`` annotation overrides it."""
    anthropic_diagnostics: bool = False
    """Pass ``--anthropic-diagnostics`` to every sidecar."""
    upstreams: Upstreams = Upstreams()
    resources: Resources = Resources()
    otel: OtelConfig = OtelConfig()
    exclude_namespaces: list[str] = Field(
        default_factory=lambda: ["kube-system", "kube-public", "cert-manager"],
        json_schema_extra={"uniqueItems": True},
    )
    """Never inject here; the operator's own namespace is always excluded as well.
    cert-manager's namespace is in the default list: with ``failurePolicy: Fail`` and the
    operator down, a cert-manager restart could otherwise wait on the webhook whose
    certificate it is meant to issue."""

    @model_validator(mode="after")
    def _distinct_ports(self) -> InjectorConfig:
        if self.listen_port == self.admin_port:
            raise ValueError("listenPort and adminPort must differ")
        return self


CHART_ONLY_INJECTOR_KEYS = frozenset({"image"})
"""Chart values under ``injector`` that the chart turns into a config field of another
shape (``image.repository``/``tag``/``digest`` -> one image reference)."""

_SCHEMA_DROPPED = {"title", "default"}


def injector_json_schema() -> dict[str, Any]:
    """The JSON schema of the injector config, camelCase, every ``$ref`` inlined.

    ``hack/chart-readme.py`` puts it into the chart's ``values.schema.json`` under
    ``injector``, so Helm refuses exactly the values the operator would refuse at start.
    """
    raw = InjectorConfig.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                return inline(defs[ref.rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in node.items() if k not in _SCHEMA_DROPPED}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    schema: dict[str, Any] = inline(raw)
    return schema


def parse_injector_config(data: object) -> InjectorConfig:
    """Validate a parsed config document; ``ConfigError`` says ``field: reason``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"injector config: expected a mapping, got {type(data).__name__}")
    try:
        return InjectorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"injector config: {describe_validation_error(exc)}") from exc


def load_injector_config(path: str | Path | None) -> InjectorConfig:
    """Read the injector config file; ``None`` gives the defaults (local runs, tests)."""
    if path is None:
        return InjectorConfig()
    p = Path(path)
    data = read_yaml_file(p, error=ConfigError)
    try:
        return parse_injector_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class OperatorOptions:
    """Options of one operator process (from ``promptcache operator``'s flags)."""

    injector: InjectorConfig = field(default_factory=InjectorConfig)
    own_namespace: str | None = None
    """The operator's namespace: never injected, and named in logs."""
    webhook: bool = True
    """Serve the injection webhook (off: reconcile only, e.g. for tests)."""
    webhook_addr: str = "0.0.0.0"
    webhook_port: int = 9443
    webhook_cert_dir: Path | None = None
    """Holds ``tls.crt``, ``tls.key`` (and optionally ``ca.crt``); ``None``: kopf makes a
    self-signed certificate (local development only)."""
    webhook_host: str | None = None
    """Host in the URL kopf reports for the webhook (only used in its log line)."""
    standalone: bool = False
    peering_name: str | None = None
    priority: int | None = None
    """Peering priority; ``None`` draws a random one (see ``promptcache_operator.cli``)."""
    liveness_endpoint: str | None = None
    namespace_cache_seconds: float = 10.0
    """How long the webhook trusts a namespace's labels before looking them up again."""
    admission_budget: float = 4.0
    """Seconds the webhook may take for one admission before it lets the pod through
    unmodified; below the webhook's ``timeoutSeconds`` (the chart passes it minus 1)."""
    metrics_addr: str = "0.0.0.0"
    metrics_port: int | None = None
    """Serve the operator's Prometheus metrics here (``None``: not at all)."""
    deployment_annotations: bool = True
    """Copy promptcache annotations from Deployments into their pod templates (needs
    ``patch`` on Deployments; the chart grants it only with this on)."""
    node_refresh_seconds: float = 300.0
    """How often the kubelet versions are read again (native sidecars or not)."""

    @property
    def namespace_lookup_seconds(self) -> float:
        """A namespace lookup may use half the admission budget, at most 2 s."""
        return min(2.0, self.admission_budget / 2)
