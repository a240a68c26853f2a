"""Traces leave the real multi-worker service over OTLP/HTTP when the OTEL_* variables ask."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.servers import running_service

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


class _Collector(BaseHTTPRequestHandler):
    """A stand-in OpenTelemetry collector: keeps every span it is sent."""

    spans: list[tuple[str, str, dict[str, object]]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["content-length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: a.value for a in span.attributes}
                    self.spans.append((span.trace_id.hex(), span.name, {**service, **attributes}))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_spans_reach_an_otlp_collector_from_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "cnn-serve-under-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    try:
        with running_service(workers=2) as service:
            blank = {"instances": [[[0.0] * 28] * 28]}
            for _ in range(10):  # New connections: both workers answer some.
                answer = httpx.post(
                    f"{service.url}/predict", json=blank, headers={"traceparent": TRACEPARENT}
                )
                assert answer.status_code == 200
            deadline = time.monotonic() + 10
            while sum(1 for span in _Collector.spans if span[1] == "POST /predict") < 10:
                assert time.monotonic() < deadline, f"spans so far: {_Collector.spans}"
                time.sleep(0.1)
    finally:
        collector.shutdown()
        collector.server_close()
    ours = [span for span in _Collector.spans if span[0] == TRACE_ID]
    names = {name for _, name, _ in ours}
    assert {"POST /predict", "preprocess", "queue", "batch inference", "serialize"} <= names
    assert all(attributes["service.name"] == "cnn-serve-under-test" for *_, attributes in ours)
