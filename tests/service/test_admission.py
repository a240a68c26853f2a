"""service/admission.py: overload is refused before bodies are read, with an honest Retry-After."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.admission import Admission, Throughput
from service.api import explain, feature_maps, health, models, predict, v2
from service.api.lean import inference_requests
from service.app import create_app
from tests.conftest import make_settings, slow_model

DIGIT = {"instances": [np.zeros((28, 28)).tolist()]}


def test_throughput_estimate_and_retry_after() -> None:
    throughput = Throughput()
    assert throughput.drain_seconds(100) == 1.0  # Nothing measured yet: assume a second.
    for _ in range(50):
        throughput.observe(items=64, seconds=0.01)  # 6,400 items/s.
    assert throughput.items_per_s == pytest.approx(6400)
    admission = Admission(
        max_requests=1, max_body_bytes=10, max_pause_s=0.25, throughput=throughput
    )
    assert admission.retry_after_s(0) == 1
    assert admission.retry_after_s(64_000) == 10
    assert admission.pause_s() == 0.25


def test_requests_and_body_bytes_are_counted_and_released() -> None:
    admission = Admission(max_requests=2, max_body_bytes=100, max_pause_s=0.1)
    assert admission.try_admit(60) and not admission.try_admit(60)  # Bytes full.
    assert admission.try_admit(40) and not admission.try_admit(0)  # Requests full.
    admission.release(60)
    admission.release(40)
    assert (admission.in_flight, admission.body_bytes) == (0, 0)


def test_overload_is_refused_early_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    slow_model(monkeypatch, 0.3)
    settings = make_settings(max_inflight_requests=2, overload_pause_ms=50)
    with TestClient(create_app(settings)) as client:
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: client.post("/predict", json=DIGIT), range(8)))
        assert time.perf_counter() - started < 5
        assert client.get("/health/ready").status_code == 200
        exposition = client.get("/metrics").text
    refused = [response for response in responses if response.status_code == 503]
    assert f"cnn_serve_overload_refusals_total {float(len(refused))}" in exposition
    assert len(refused) >= 4 and sum(r.status_code == 200 for r in responses) >= 2
    for response in refused:
        body = response.json()["error"]
        assert body["code"] == "overloaded" and body["details"]["in_flight"] == 2
        assert int(response.headers["retry-after"]) >= 1


def until_in_flight(client: TestClient, requests: int, timeout_s: float = 5.0) -> None:
    """Wait until /metrics says ``requests`` inference requests are admitted (no fixed sleep)."""
    line = f"cnn_serve_inflight_requests {float(requests)}"
    deadline = time.monotonic() + timeout_s
    while line not in client.get("/metrics").text:
        assert time.monotonic() < deadline, f"never {requests} in flight"
        time.sleep(0.01)


def test_health_and_models_are_never_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    slow_model(monkeypatch, 0.5)
    with TestClient(create_app(make_settings(max_inflight_requests=1))) as client:
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(client.post, "/predict", json=DIGIT)
            until_in_flight(client, 1)  # The only slot is taken now.
            assert client.post("/predict", json=DIGIT).status_code == 503
            assert client.get("/health/ready").status_code == 200
            assert client.get("/models").status_code == 200
            assert busy.result().status_code == 200


def test_inflight_body_budget_must_hold_one_full_body() -> None:
    with pytest.raises(ValueError, match="INFLIGHT_BODY_MB"):
        make_settings(inflight_body_mb=1, max_body_bytes=2 * 2**20)


def _scope(method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


@pytest.mark.parametrize(
    ("method", "path", "inference"),
    [
        ("POST", "/predict", True),
        ("POST", "/models/mnist-deep-cnn/predict", True),
        ("POST", "/models/mnist-deep-cnn/versions/2/predict", True),
        ("POST", "/feature-maps", True),
        ("POST", "/models/fashion-deep-cnn/explain", True),
        ("POST", "/v2/models/mnist-deep-cnn/infer", True),
        ("POST", "/v2/models/mnist-deep-cnn/versions/1/infer", True),
        ("GET", "/predict", False),
        ("POST", "/v2/repository/index", False),
        ("POST", "/v2/repository/models/mnist-deep-cnn/load", False),
        # No route: a suffix alone (the old rule) no longer makes a request inference.
        ("POST", "/anything/predict", False),
        ("POST", "/predict/", False),
        ("POST", "/v2/models/mnist-deep-cnn/infer/more", False),
    ],
)
def test_admission_decides_on_exactly_the_inference_routes(
    method: str, path: str, inference: bool
) -> None:
    routers = [predict.router, feature_maps.router, explain.router, models.router, v2.router]
    routers += [v2.infer_router, v2.repository_router, health.router]
    assert inference_requests(routers)(_scope(method, path)) is inference
