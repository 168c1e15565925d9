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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from promptcache import __version__
from promptcache.policy import describe_validation_error, read_yaml_file

DEFAULT_IMAGE = f"ghcr.io/promptcache/promptcache:{__version__}"
"""The sidecar image when the config names none: the image of this very release."""

QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"
"""A non-negative Kubernetes resource quantity (``50m``, ``0.5``, ``64Mi``, ``1e3``)."""

_ENV_NAME = re.compile(r"^OTEL_[A-Z0-9_]+$")


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
    extra_env: dict[str, str] = Field(default_factory=dict)
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
    API server is 1.29 or newer, where the feature is on by default; else a container."""
    listen_port: int = Field(default=8787, ge=1, le=65535)
    """The sidecar's proxy port on 127.0.0.1, which the apps' base URLs point at."""
    admin_port: int = Field(default=9787, ge=1, le=65535)
    """The sidecar's admin port (metrics, probes) on all interfaces."""
    upstreams: Upstreams = Upstreams()
    resources: Resources = Resources()
    otel: OtelConfig = OtelConfig()
    exclude_namespaces: list[str] = Field(default_factory=lambda: ["kube-system", "kube-public"])
    """Never inject here; the operator's own namespace is always excluded as well."""

    @model_validator(mode="after")
    def _distinct_ports(self) -> InjectorConfig:
        if self.listen_port == self.admin_port:
            raise ValueError("listenPort and adminPort must differ")
        return self


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
