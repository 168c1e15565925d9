"""OpenTelemetry tracing set up from the standard ``OTEL_*`` environment, shared by components.

The sidecar and the operator both export traces over OTLP/HTTP to whatever collector the
chart configures. Tracing is off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (or ``OTEL_SDK_DISABLED=true`` turns it off
anyway), so a laptop run pays nothing for it. The exporter reads its endpoint, headers,
timeout and compression from the same variables; the resource from ``OTEL_SERVICE_NAME``
and ``OTEL_RESOURCE_ATTRIBUTES``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

log = logging.getLogger(__name__)

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for trace export."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in _ENDPOINT_VARS)


def setup_tracing(
    service_name: str, *, environ: Mapping[str, str] | None = None
) -> TracerProvider | None:
    """A tracer provider exporting over OTLP/HTTP, or ``None`` when tracing is off.

    The provider is returned, not installed globally, so a component passes it where it
    is used and tests inject their own; call ``shutdown()`` on it to flush at exit.
    """
    if not tracing_enabled(environ):
        return None
    # Imported here: the exporter pulls in protobuf, which an untraced process never needs.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    env = os.environ if environ is None else environ
    name = env.get("OTEL_SERVICE_NAME", "").strip() or service_name
    resource = Resource.create({"service.name": name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("tracing: exporting spans over OTLP/HTTP")
    return provider


def get_tracer(provider: trace.TracerProvider | None, name: str) -> trace.Tracer | None:
    """A tracer from ``provider``, or ``None`` (callers skip span work entirely)."""
    return None if provider is None else provider.get_tracer(name)
