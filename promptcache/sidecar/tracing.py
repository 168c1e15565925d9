"""One OpenTelemetry span per proxied LLM call, named and attributed per GenAI conventions.

The span is a child of the app's own trace when the app sent ``traceparent``, and its
context goes upstream in ``traceparent``, so the provider call shows up inside the app's
trace. Attributes are counts, model names and statuses only: no prompt, no response
text, no header values. With tracing off every method is a cheap no-op.

Cache writes go out under the current GenAI name ``gen_ai.usage.cache_write.input_tokens``
(renamed from ``gen_ai.usage.cache_creation.input_tokens`` in August 2026,
open-telemetry/semantic-conventions-genai#440) and, while backends and dashboards move
over, under the old name too (``LEGACY_CACHE_WRITE``); the conventions are still in
Development status. ``gen_ai.usage.input_tokens`` counts cached tokens too.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from promptcache.telemetry import get_tracer
from promptcache.usage import Usage

TRACER_NAME = "promptcache.sidecar"
CACHE_WRITE = "gen_ai.usage.cache_write.input_tokens"
LEGACY_CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"
"""The pre-rename attribute, emitted beside ``CACHE_WRITE`` during the transition."""


class CallTracer:
    """Starts, propagates and finishes the span of one proxied call."""

    def __init__(self, provider: trace.TracerProvider | None) -> None:
        self._tracer = get_tracer(provider, TRACER_NAME)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def start(
        self,
        *,
        incoming: Mapping[str, str],
        operation: str,
        provider: str,
        model: str,
        server_address: str | None,
        server_port: int | None,
    ) -> Span | None:
        """A started CLIENT span (``None`` when tracing is off)."""
        if self._tracer is None:
            return None
        parent = propagate.extract(incoming)
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
        }
        if server_address:
            attributes["server.address"] = server_address
        if server_port:
            attributes["server.port"] = server_port
        return self._tracer.start_span(
            f"{operation} {model}", context=parent, kind=SpanKind.CLIENT, attributes=attributes
        )

    @staticmethod
    def inject(span: Span | None, headers: MutableMapping[str, str]) -> None:
        """Put the span's context into the upstream request's headers."""
        if span is not None:
            propagate.inject(headers, context=trace.set_span_in_context(span))

    @staticmethod
    def finish(
        span: Span | None,
        *,
        status: int | None,
        outcome: str,
        response_model: str | None,
        usage: Usage | None,
        retries: int,
        policy: str,
    ) -> None:
        """Set the result attributes and end the span."""
        if span is None:
            return
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if response_model:
            span.set_attribute("gen_ai.response.model", response_model)
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.total_input)
            span.set_attribute("gen_ai.usage.output_tokens", usage.output)
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cache_read)
            span.set_attribute(CACHE_WRITE, usage.cache_write)
            span.set_attribute(LEGACY_CACHE_WRITE, usage.cache_write)
        span.set_attribute("promptcache.policy", policy)
        span.set_attribute("promptcache.outcome", outcome)
        if retries:
            span.set_attribute("promptcache.upstream.retries", retries)
        if outcome != "ok":
            span.set_attribute("error.type", outcome if status is None else str(status))
            span.set_status(Status(StatusCode.ERROR))
        span.end()
