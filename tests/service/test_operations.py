"""/models, health, metrics, the page, OpenAPI, and start-up failures."""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.errors import ModelLoadError
from tests.conftest import MODELS_DIR, ROOT, make_settings
from tests.servers import running_service


def test_models_lists_metadata(client: TestClient) -> None:
    body = client.get("/models").json()
    assert body["default_model"] == "mnist-deep-cnn"
    by_name = {model["name"]: model for model in body["models"]}
    assert set(by_name) >= {"mnist-deep-cnn", "fashion-deep-cnn"}
    mnist = by_name["mnist-deep-cnn"]
    card = json.loads((MODELS_DIR / "mnist-deep-cnn" / "model.json").read_text())
    assert mnist["default"] is True
    assert mnist["labels"] == card["labels"]
    assert mnist["sha256"] == card["files"]["sha256"]
    assert mnist["test_accuracy"] == card["metrics"]["test_accuracy"]
    assert [layer["layer"] for layer in mnist["feature_maps"]][:2] == ["conv1", "conv2"]
    assert mnist["input"]["shape"] == [None, 28, 28, 1]


def test_model_detail_includes_the_card(client: TestClient) -> None:
    body = client.get("/models/fashion-deep-cnn").json()
    assert body["labels"][9] == "Ankle boot"
    assert body["model_card"]["architecture"] == "deep_cnn"


def test_health_endpoints(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    live_schema = client.get("/openapi.json").json()["paths"]["/health/live"]["get"]
    schema_name = live_schema["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema_name == {"$ref": "#/components/schemas/LiveResponse"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and "mnist-deep-cnn" in ready.json()["models"]


def test_not_ready_without_lifespan() -> None:
    unstarted = TestClient(create_app(make_settings()))  # No `with`: models never load.
    assert unstarted.get("/health/ready").status_code == 503
    response = unstarted.post("/predict", json={"instances": [np.zeros((28, 28)).tolist()]})
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"


def test_metrics_count_requests_and_batches(client: TestClient) -> None:
    client.post("/predict", json={"instances": [np.zeros((28, 28)).tolist()] * 3})
    client.post("/models/nope/predict", json={"instances": [np.zeros((28, 28)).tolist()]})
    text = client.get("/metrics").text
    assert 'cnn_serve_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'route="/models/{name}/predict",status="404"' in text
    assert 'cnn_serve_batch_items_count{model="mnist-deep-cnn"}' in text
    assert 'cnn_serve_inference_seconds_bucket{le="0.005",model="mnist-deep-cnn"}' in text
    assert "cnn_serve_request_duration_seconds_bucket" in text


def test_openapi_documents_every_input_form(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(body) >= {
        "application/json",
        "multipart/form-data",
        "application/octet-stream",
        "application/x-npy",
    }
    assert "examples" in body["application/json"]
    assert "/models/{name}/feature-maps" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_operations_are_titled_by_their_docstrings_not_function_names(
    client: TestClient,
) -> None:
    operations = [
        (path, operation)
        for path, methods in client.get("/openapi.json").json()["paths"].items()
        for operation in methods.values()
    ]
    assert len(operations) > 15
    for path, operation in operations:
        summary = operation["summary"]
        assert summary.endswith(".") and summary[0].isupper(), (path, summary)
        assert summary != operation["operationId"].replace("_", " ").title()
    paths = dict(operations)
    assert paths["/predict"]["summary"] == "Classify a batch of digits with the default model."
    assert "one image" in paths["/feature-maps"]["summary"]


def test_index_page_is_served(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and "<canvas" in response.text
    assert '<link rel="icon" href="/favicon.ico">' in response.text


def test_favicon_is_an_icon_served_without_a_key() -> None:
    with TestClient(create_app(make_settings(api_keys="k1"))) as keyed:
        response = keyed.get("/favicon.ico")
    assert response.status_code == 200 and response.headers["content-type"] == "image/x-icon"
    with Image.open(io.BytesIO(response.content)) as icon:
        assert icon.format == "ICO" and icon.size[0] >= 32


def copy_models(destination: Path) -> Path:
    shutil.copytree(MODELS_DIR / "mnist-deep-cnn", destination / "mnist-deep-cnn")
    return destination


def test_corrupt_model_stops_start_up(tmp_path: Path) -> None:
    models = copy_models(tmp_path)
    with (models / "mnist-deep-cnn" / "model.onnx").open("ab") as onnx_file:
        onnx_file.write(b"tampered")
    app = create_app(make_settings(models_dir=models))
    with pytest.raises(ModelLoadError, match="sha256"), TestClient(app):
        pass


def test_missing_default_model_stops_start_up(tmp_path: Path) -> None:
    app = create_app(make_settings(models_dir=tmp_path))
    with (
        pytest.raises(ModelLoadError, match="default model 'mnist-deep-cnn' not found"),
        TestClient(app),
    ):
        pass


@pytest.mark.slow  # A real process.
def test_command_line_exits_non_zero_with_a_clear_message(tmp_path: Path) -> None:
    models = copy_models(tmp_path)
    (models / "mnist-deep-cnn" / "model.onnx").write_bytes(b"not a model")
    result = subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"CNN_SERVE_MODELS_DIR": str(models), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "sha256" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # A real process.
@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_one_worker_cleanly_without_a_traceback(tmp_path: Path, presses: int) -> None:
    """One Ctrl-C shuts down gracefully, a second forces it; neither prints a traceback."""
    log = tmp_path / "server.log"
    with running_service(output=log, workers=1, log_level="info") as service:
        for _ in range(presses):
            service.process.send_signal(signal.SIGINT)
        assert service.process.wait(timeout=30) == 130  # 128 + SIGINT, as a shell reports it
    text = log.read_text()
    assert "Application shutdown complete" in text
    assert "Traceback" not in text and "ERROR" not in text


@pytest.mark.slow  # A real process.
def test_two_workers_share_metrics_and_stop_cleanly() -> None:
    """With several worker processes, any scrape counts the requests every worker served."""
    with running_service(workers=2) as service:
        digit = {"instances": [np.zeros((28, 28)).tolist()]}
        for _ in range(40):  # New connections each time: the kernel spreads them over workers.
            assert httpx.post(f"{service.url}/predict", json=digit).status_code == 200
        text = httpx.get(f"{service.url}/metrics").text
        counted = re.search(
            r'cnn_serve_requests_total\{method="POST",route="/predict",status="200"\} (\S+)', text
        )
        assert counted is not None and float(counted.group(1)) == 40
        service.process.terminate()  # SIGTERM: the supervisor stops both workers gracefully.
        assert service.process.wait(timeout=30) == 0


@pytest.mark.slow  # A real process.
def test_start_up_log_names_the_url_and_a_busy_port_is_one_line(tmp_path: Path) -> None:
    log = tmp_path / "first.log"
    with running_service(output=log, log_level="info", workers=2) as service:
        deadline = time.monotonic() + 10
        while "serving http://127.0.0.1" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"serving http://127.0.0.1:{service.port} with 2 workers" in log.read_text()
        second = subprocess.run(
            [sys.executable, "-m", "service"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **os.environ,
                "CNN_SERVE_PORT": str(service.port),
                "CNN_SERVE_HOST": "127.0.0.1",
                "CNN_SERVE_MODELS_DIR": str(MODELS_DIR),
            },
        )
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"cnn-serve: cannot start: 127.0.0.1:{service.port} is already in use by another "
            "process; stop it or set CNN_SERVE_PORT"
        ]
        assert httpx.get(f"{service.url}/health/ready").status_code == 200


def stranger_requests(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(method, path) pairs a scanner might send: odd and made-up methods, real and bogus paths."""
    chooser = random.Random(seed)
    methods = ["GET", "PUT", "DELETE", "PATCH", "PROPFIND", "MKCOL", "TRACE"]
    paths = ["/predict", "/models", "/v2/models/mnist-deep-cnn", "/metrics", "/health/live"]
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [
        (
            chooser.choice(methods) if chooser.random() < 0.5 else f"X{chooser.randrange(10**6)}",
            chooser.choice(paths)
            if chooser.random() < 0.5
            else "/" + "".join(chooser.choices(letters, k=8)),
        )
        for _ in range(count)
    ]


@pytest.mark.slow  # 3,000 requests.
def test_metrics_stay_small_whatever_strangers_send(client: TestClient) -> None:
    """3,000 requests with bogus methods and paths add at most a few series to /metrics."""
    before = len(client.get("/metrics").content)
    for method, path in stranger_requests(3000):
        client.request(method, path)
    after = client.get("/metrics").text
    labels = set(re.findall(r'cnn_serve_requests_total\{method="([^"]+)",route="([^"]+)"', after))
    methods = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}
    assert {method for method, _ in labels} <= methods
    assert len(after) - before < 16_000, (before, len(after))


def test_metrics_time_each_stage_of_a_request() -> None:
    """Where a request's time goes, per model: preprocess, queue and serialize (the runs are
    cnn_serve_inference_seconds), for /predict, /feature-maps and V2 alike."""
    with TestClient(create_app(make_settings())) as fresh:
        fresh.post("/predict", json={"instances": [np.zeros((28, 28)).tolist()] * 2})
        fresh.post("/feature-maps", json={"instances": [np.zeros((28, 28)).tolist()]})
        fresh.post(
            "/v2/models/mnist-deep-cnn/infer",
            json={"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                              "data": [0.0] * 784}]},
        )  # fmt: skip
        text = fresh.get("/metrics").text
    for stage, count in (("preprocess", 3), ("queue", 3), ("serialize", 3)):
        found = re.search(
            rf'cnn_serve_stage_seconds_count\{{model="mnist-deep-cnn",stage="{stage}"\}} (\S+)',
            text,
        )
        assert found is not None and float(found.group(1)) == count, stage


@pytest.mark.slow  # A real process: its log as an operator reads it.
def test_json_logs_with_an_access_line_per_request(tmp_path: Path) -> None:
    """CNN_SERVE_LOG_FORMAT=json: every line the server writes (uvicorn's, the supervisor's and
    the workers') is one JSON object; CNN_SERVE_ACCESS_LOG adds a line per request, with its ID."""
    log = tmp_path / "server.log"
    with running_service(
        output=log, workers=2, log_level="info", log_format="json", access_log="true"
    ) as service:
        answer = httpx.post(
            f"{service.url}/predict",
            json={"instances": [np.zeros((28, 28)).tolist()]},
            headers={"x-request-id": "find-me-42"},
        )
        assert answer.status_code == 200
        missing = httpx.get(f"{service.url}/models/nope", headers={"x-request-id": "gone-1"})
        assert missing.status_code == 404
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # Every line, or this raises.
    assert {"time", "level", "logger", "message"} <= set(records[0])
    access = {record.get("request_id"): record for record in records if "route" in record}
    assert access["find-me-42"]["route"] == "/predict" and access["find-me-42"]["status"] == 200
    assert access["find-me-42"]["duration_ms"] > 0 and access["find-me-42"]["method"] == "POST"
    assert access["gone-1"]["status"] == 404 and access["gone-1"]["route"] == "/models/{name}"
    assert any("Application startup complete" in record["message"] for record in records)
