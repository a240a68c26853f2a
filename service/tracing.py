"""W3C trace context and OpenTelemetry spans: off unless the standard ``OTEL_*`` variables ask.

On when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, over HTTP/protobuf, to
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; or ``console``), or
when one of those endpoints is set; ``OTEL_SDK_DISABLED=true`` and ``OTEL_TRACES_EXPORTER=none``
keep it off. (The OpenTelemetry default of exporting to localhost when nothing is set would make
every service try to reach a collector that is not there: here, nothing set means off.) Off,
the SDK is not even imported, and every hook below is one attribute test. The service uses a
provider of its own, never the global one, so FastAPI's own instrumentation stays a no-op and
spans are not doubled.

On, each request gets a server span, continuing the client's ``traceparent`` (and
``tracestate``), with children for what the request went through: ``preprocess`` (reading
tensors, decoding and preprocessing images), ``queue`` (the wait for the dynamic batcher's run),
``batch inference`` (the ONNX Runtime run it shared, ``batch.size`` = its images) and
``serialize``. ``OTEL_SERVICE_NAME`` names the service (default ``cnn-serve``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("service.tracing")
DEFAULT_SERVICE_NAME = "cnn-serve"


@dataclass
class BatchTiming:
    """When one request's items waited and ran in the dynamic batcher (``time.time_ns()``),
    and how many images the run held; filled by the batcher."""

    queued_ns: int = 0
    started_ns: int = 0
    ended_ns: int = 0
    batch_items: int = 0


def wanted(environment: Mapping[str, str]) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces (see the module docstring)."""
    if environment.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environment.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        environment.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environment.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


class Tracing:
    """Where the service's spans go, or nowhere (``tracer`` None: every hook does nothing)."""

    def __init__(self, tracer: Any = None, provider: Any = None) -> None:
        self.tracer = tracer
        self.provider = provider

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    @classmethod
    def from_environment(cls, environment: Mapping[str, str] | None = None) -> Tracing:
        environment = os.environ if environment is None else environment
        if not wanted(environment):
            return cls()
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        name = environment.get("OTEL_SERVICE_NAME", DEFAULT_SERVICE_NAME)
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        provider.add_span_processor(BatchSpanProcessor(_exporter(environment)))
        return cls.for_provider(provider)

    @classmethod
    def for_provider(cls, provider: Any) -> Tracing:
        """Tracing into a given ``TracerProvider`` (tests: the SDK's in-memory exporter)."""
        return cls(provider.get_tracer("cnn-serve"), provider)

    @contextmanager
    def request(self, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Iterator[Any]:
        """The server span of one HTTP request, its parent from ``traceparent``; yields the
        span (None when off), current for the request's task while the block runs."""
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in headers
            if name in (b"traceparent", b"tracestate")
        }
        attributes = {"http.request.method": method, "url.path": path}
        with self.server_span(f"{method} {path}", carrier, attributes) as span:
            yield span

    @contextmanager
    def server_span(
        self, name: str, carrier: Mapping[str, str], attributes: dict[str, Any]
    ) -> Iterator[Any]:
        """A server span whose parent is the W3C trace context in ``carrier`` (``traceparent``,
        ``tracestate``: HTTP headers or gRPC metadata); yields it (None when off)."""
        if self.tracer is None:
            yield None
            return
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent = TraceContextTextMapPropagator().extract(dict(carrier))
        with self.tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            yield span

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[None]:
        """A child span of the current one around the block (nothing when off)."""
        if self.tracer is None:
            yield
            return
        with self.tracer.start_as_current_span(name, attributes=attributes):
            yield

    def batch(self, timing: BatchTiming, model: str) -> None:
        """The ``queue`` and ``batch inference`` spans of a request, from the batcher's times."""
        if self.tracer is None or not timing.ended_ns:
            return
        queue = self.tracer.start_span("queue", start_time=timing.queued_ns)
        queue.set_attribute("model", model)
        queue.end(end_time=timing.started_ns)
        run = self.tracer.start_span("batch inference", start_time=timing.started_ns)
        run.set_attribute("model", model)
        run.set_attribute("batch.size", timing.batch_items)
        run.end(end_time=timing.ended_ns)

    def shutdown(self) -> None:
        """Send what is still buffered (the service is stopping)."""
        if self.provider is not None:
            self.provider.shutdown()


def _exporter(environment: Mapping[str, str]) -> Any:
    exporter = environment.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if exporter != "otlp":
        logger.warning("OTEL_TRACES_EXPORTER=%s is not supported here; using otlp", exporter)
    protocol = environment.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol != "http/protobuf":
        logger.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; using http", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()
