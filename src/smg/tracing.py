"""OpenTelemetry tracing (``tracing = true`` in the config, ``smg serve --tracing``; the
``smg-gateway[tracing]`` extra): a span per request, with child spans for its stages, and the
trace passed on to the engines.

* A request's span (kind SERVER) continues the client's trace when it sends a W3C
  ``traceparent``. Its children are the stages the request went through: ``queue`` (waiting for
  an admission slot), ``tokenize``, ``route`` (picking a worker), ``time_to_first_token`` and
  ``stream`` (for each engine stream).
* Each engine request carries the request span's ``traceparent`` (and ``tracestate``) in its gRPC
  metadata, so an engine that traces joins the same trace.
* Spans go to the process's SDK tracer provider when the application installed one; otherwise to
  smg's own, exporting OTLP over HTTP as the standard ``OTEL_*`` variables say
  (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``, ...).

Nothing is timed per token. The stages are stamped on the request's record (smg.access_log) as
they happen, and the child spans are made from the stamps when the request ends.
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from smg.config import ConfigError

if TYPE_CHECKING:
    from smg.access_log import AccessRecord


def _provider():
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        raise ConfigError("tracing needs OpenTelemetry's SDK: pip install 'smg-gateway[tracing]'") from None
    installed = trace.get_tracer_provider()
    if isinstance(installed, TracerProvider):  # the application's own
        return installed
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": "smg"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class Tracer:
    """Begins a request's span when it arrives, and ends it (with its stages) when it is answered."""

    def __init__(self) -> None:
        from opentelemetry import propagate, trace

        self.provider = _provider()
        self._tracer = self.provider.get_tracer("smg")
        self._propagate, self._trace = propagate, trace
        self._server = trace.SpanKind.SERVER

    def begin(self, record: "AccessRecord", headers: Mapping[str, str]) -> None:
        """Start the request's span (under the client's ``traceparent``, when it sent one)."""
        parent = self._propagate.extract(headers)
        span = self._tracer.start_span(f"{record.method} {record.path}", context=parent, kind=self._server)
        record.span = span
        record.stages = []
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier, context=self._trace.set_span_in_context(span))
        record.engine_metadata = tuple(carrier.items())

    def end(self, record: "AccessRecord") -> None:
        span = record.span
        if span is None:
            return
        to_wall = time.time_ns() - time.monotonic_ns()  # (the stages are stamped on the monotonic clock)
        context = self._trace.set_span_in_context(span)
        for name, started, ended in record.stages:
            child = self._tracer.start_span(name, context=context, start_time=to_wall + int(started * 1e9))
            child.end(end_time=to_wall + int(ended * 1e9))
        span.set_attributes({"http.request.method": record.method, "url.path": record.path,
                             "http.response.status_code": record.status, "smg.request_id": record.request_id,
                             "smg.outcome": record.outcome, "gen_ai.usage.input_tokens": record.prompt_tokens,
                             "gen_ai.usage.output_tokens": record.completion_tokens})
        if record.model:
            span.set_attribute("gen_ai.request.model", record.model)
        if record.key:
            span.set_attribute("smg.api_key_name", record.key)
        if record.status >= 500 or record.outcome == "error":
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
        span.end()
        record.span = None
