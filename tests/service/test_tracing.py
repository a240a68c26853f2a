"""W3C trace context and OpenTelemetry spans, with the SDK's in-memory exporter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.app import create_app
from service.tracing import Tracing, wanted
from tests.conftest import ROOT, make_settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}


@pytest.fixture(scope="module")
def traced() -> Iterator[tuple[TestClient, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(make_settings(), tracing=Tracing.for_provider(provider))
    with TestClient(app) as client:
        yield client, exporter


def spans_of(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    finished = exporter.get_finished_spans()
    exporter.clear()
    return {span.name: span for span in finished}


def test_traces_are_wanted_only_when_the_otel_variables_ask() -> None:
    assert not wanted({})
    assert not wanted({"OTEL_SERVICE_NAME": "x"})
    assert wanted({"OTEL_TRACES_EXPORTER": "otlp"})
    assert wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"})
    assert not wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"})


def test_a_request_continues_the_clients_trace_with_a_span_per_stage(
    traced: tuple[TestClient, InMemorySpanExporter], mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    client, exporter = traced
    spans_of(exporter)
    body = {"instances": (mnist_digits[0][:2] / 255.0).tolist()}
    answer = client.post("/predict", json=body, headers=TRACEPARENT)
    assert answer.status_code == 200
    spans = spans_of(exporter)
    assert {"POST /predict", "preprocess", "queue", "batch inference", "serialize"} <= set(spans)
    server = spans["POST /predict"]
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == "/predict"
    assert server.attributes["request.id"] == answer.headers["x-request-id"]
    for name in ("preprocess", "queue", "batch inference", "serialize"):
        child = spans[name]
        assert child.parent is not None and child.parent.span_id == server.context.span_id, name
        assert child.context.trace_id == server.context.trace_id
    run, queue = spans["batch inference"], spans["queue"]
    assert run.attributes["batch.size"] == 2 and run.attributes["model"] == "mnist-deep-cnn"
    assert queue.end_time == run.start_time <= run.end_time


def test_v2_and_refusals_are_traced_too(
    traced: tuple[TestClient, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    spans_of(exporter)
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": [0.0] * 784}
    assert client.post("/v2/models/mnist-deep-cnn/infer", json={"inputs": [tensor]}).is_success
    spans = spans_of(exporter)
    assert {"POST /v2/models/{name}/infer", "queue", "batch inference"} <= set(spans)
    assert client.post("/predict", content=b"{", headers={"content-type": "application/json"})
    (refused,) = spans_of(exporter).values()
    assert refused.attributes["http.response.status_code"] == 400
    # A new trace without a traceparent.
    client.get("/health/live")
    (alone,) = spans_of(exporter).values()
    assert alone.parent is None


def test_without_otel_variables_the_sdk_is_not_even_imported() -> None:
    """Off by default and free when off (FastAPI itself imports the OpenTelemetry API, whose
    default tracer does nothing; the SDK, which records and exports, stays out)."""
    script = (
        "import sys; from service.app import create_app; create_app(); "
        "print(any(name.startswith('opentelemetry.sdk') for name in sys.modules))"
    )
    environment = {"PATH": "/usr/bin:/bin", "CNN_SERVE_MODELS_DIR": str(ROOT / "models")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    assert result.stdout.strip() == "False", result.stderr
