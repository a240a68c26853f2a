"""X-Request-ID: echoed on every response (errors and refusals from the edge included), made
when absent or unusable, and named in the log lines written while the request is served."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api import v2 as v2_routes
from service.app import create_app
from service.request_ids import RequestIdLogFilter
from tests.conftest import make_settings

GENERATED = re.compile(r"[0-9a-f]{32}")
DIGIT = {"instances": [np.zeros((28, 28)).tolist()]}


def test_a_clients_id_is_echoed_on_success_and_on_errors(client: TestClient) -> None:
    for method, path, body in (
        ("POST", "/predict", DIGIT),
        ("GET", "/models/nope", None),
        ("POST", "/v2/models/nope/infer", {"inputs": []}),
        ("GET", "/health/live", None),
    ):
        response = client.request(method, path, json=body, headers={"x-request-id": "abc-123"})
        assert response.headers["x-request-id"] == "abc-123", (path, response.status_code)


def test_refusals_from_the_edge_carry_the_id_too() -> None:
    with TestClient(create_app(make_settings(api_keys="k1", max_body_bytes=1024))) as keyed:
        unauthorised = keyed.post("/predict", json=DIGIT, headers={"x-request-id": "r-1"})
        assert unauthorised.status_code == 401 and unauthorised.headers["x-request-id"] == "r-1"
        too_large = keyed.post(
            "/predict",
            content=b"x" * 2048,
            headers={"x-request-id": "r-2", "authorization": "Bearer k1"},
        )
        assert too_large.status_code == 413 and too_large.headers["x-request-id"] == "r-2"


def test_an_id_is_made_when_none_is_sent(client: TestClient) -> None:
    first = client.get("/health/live").headers["x-request-id"]
    second = client.get("/health/live").headers["x-request-id"]
    assert GENERATED.fullmatch(first) and GENERATED.fullmatch(second) and first != second


@settings(max_examples=60, derandomize=True, deadline=None, database=None)
@given(offered=st.binary(min_size=0, max_size=300).filter(lambda raw: b"\r" not in raw))
def test_an_unusable_id_is_replaced_never_echoed(client: TestClient, offered: bytes) -> None:
    """Anything but 1-128 safe characters (spaces, quotes, newlines, UTF-8, too long) could
    forge or break a log line: it is replaced by a made one."""
    acceptable = re.fullmatch(rb"[A-Za-z0-9._~:/+=@-]{1,128}", offered) is not None
    response = client.get("/health/live", headers=[(b"x-request-id", offered)])
    echoed = response.headers["x-request-id"]
    if acceptable:
        assert echoed == offered.decode()
    else:
        assert GENERATED.fullmatch(echoed)


def test_log_lines_of_a_request_name_its_id(
    client: TestClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*arguments: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(v2_routes.v2, "model_config", broken)
    caplog.handler.addFilter(RequestIdLogFilter())
    with caplog.at_level(logging.ERROR, logger="service"):
        response = client.get(
            "/v2/models/mnist-deep-cnn/config", headers={"x-request-id": "trace-me-7"}
        )
    assert response.status_code == 500 and response.headers["x-request-id"] == "trace-me-7"
    (record,) = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert record.request == " [trace-me-7]"  # type: ignore[attr-defined]
    outside = logging.LogRecord("service", logging.INFO, __file__, 1, "start-up", None, None)
    RequestIdLogFilter().filter(outside)
    assert outside.request == ""  # type: ignore[attr-defined]
