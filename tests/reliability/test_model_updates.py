"""A retrained model reaches users without a restart: the real multi-worker service, a client
sending all along, ``python -m training publish`` and the repository API."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import tritonclient.http

from tests.conftest import FIXTURES
from tests.servers import MODELS_DIR, ROOT, free_port, running_service

MODEL = "mnist-deep-cnn"
FASHION = "fashion-deep-cnn"
POLL_S = 1.0
WORKERS = 2

with np.load(FIXTURES / "mnist_test_500.npz") as _archive:
    IMAGES, LABELS = _archive["images"][:4], _archive["labels"][:4]
BODY = {"instances": (IMAGES / 255.0).tolist()}
EXPECTED = [str(label) for label in LABELS]


def other_weights(target: Path) -> None:
    """An exported model of MNIST_MODEL's name with other weights (the int8 model's files)."""
    shutil.copytree(MODELS_DIR / f"{MODEL}-int8", target)
    card = json.loads((target / "model.json").read_text())
    card["name"] = MODEL
    (target / "model.json").write_text(json.dumps(card))


def every_worker(condition: Callable[[httpx.Response], bool], send: Callable[[], httpx.Response],
                 within_s: float) -> float:  # fmt: skip
    """Seconds until 20 answers in a row, each on a new connection (so spread over every
    worker's socket), meet ``condition``."""
    started = time.monotonic()
    in_a_row = 0
    while in_a_row < 20:
        assert time.monotonic() - started < within_s, "not every worker converged in time"
        in_a_row = in_a_row + 1 if condition(send()) else 0
    return time.monotonic() - started


def eventually(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not become true in time"
        time.sleep(0.1)


def test_a_published_version_reaches_every_worker_and_no_request_fails(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR / MODEL, models / MODEL)  # Today's flat layout: version 1.
    shutil.copytree(MODELS_DIR / FASHION, models / FASHION)
    policy = {"version_policy": {"latest": {"num_versions": 2}}}
    (models / MODEL / "config.json").write_text(json.dumps(policy))
    other_weights(tmp_path / "exported")
    operator_port = free_port()
    log = tmp_path / "server.log"
    with running_service(
        output=log, workers=WORKERS, models_dir=models, repository_poll_s=POLL_S,
        operator_port=operator_port, log_level="info",
    ) as service:  # fmt: skip
        url, operator = service.url, f"http://127.0.0.1:{operator_port}"

        def predict(path: str = "/predict") -> httpx.Response:
            return httpx.post(f"{url}{path}", json=BODY, timeout=30)

        answers: list[tuple[int, str | None, bool]] = []
        stop = threading.Event()

        def client() -> None:  # A new connection per request: every worker is asked.
            while not stop.is_set():
                response = predict()
                body = response.json() if response.status_code == 200 else {}
                labels = [p["label"] for p in body.get("predictions", [])]
                answers.append((response.status_code, body.get("version"), labels == EXPECTED))

        sender = threading.Thread(target=client)
        sender.start()
        try:
            time.sleep(1.0)
            subprocess.run(
                [sys.executable, "-m", "training", "publish", "--name", MODEL,
                 "--source", str(tmp_path / "exported"), "--models-dir", str(models)],
                cwd=ROOT, check=True, capture_output=True,
            )  # fmt: skip
            converged_s = every_worker(lambda r: r.json()["version"] == "2", predict, 30)
            time.sleep(0.5)
        finally:
            stop.set()
            sender.join()
        statuses = {status for status, _, _ in answers}
        assert statuses == {200}, f"failed requests during the swap: {statuses}"
        assert all(right for _, _, right in answers), "a wrong answer during the swap"
        assert {version for _, version, _ in answers} == {"1", "2"}
        assert converged_s < POLL_S + 10
        for version in ("1", "2"):
            answer = predict(f"/models/{MODEL}/versions/{version}/predict")
            assert answer.status_code == 200 and answer.json()["version"] == version

        # A corrupt version 3 (bad sha256) is refused by every worker; 2 keeps serving.
        staging = models / MODEL / ".staging-3"
        shutil.copytree(models / MODEL / "2", staging)
        onnx = staging / "model.onnx"
        onnx.write_bytes(onnx.read_bytes()[:-1] + b"\0")
        staging.rename(models / MODEL / "3")
        deadline = time.monotonic() + 20
        while log.read_text().count(f"model {MODEL} version 3 refused") < WORKERS:
            assert time.monotonic() < deadline, "version 3 was not refused by every worker"
            time.sleep(0.2)
        every_worker(lambda r: r.json()["version"] == "2", predict, 10)

        # Unload and load through the repository API (operator port): every worker follows.
        fashion = f"/models/{FASHION}/predict"
        assert httpx.post(f"{operator}/v2/repository/models/{FASHION}/unload").status_code == 200
        every_worker(lambda r: r.status_code == 404, lambda: predict(fashion), 10)
        assert httpx.post(f"{operator}/v2/repository/models/{FASHION}/load").status_code == 200
        every_worker(lambda r: r.status_code == 200, lambda: predict(fashion), 10)
        # The same through tritonclient's repository calls.
        triton = tritonclient.http.InferenceServerClient(f"127.0.0.1:{operator_port}")
        index = triton.get_model_repository_index()
        assert {"name": MODEL, "version": "2", "state": "READY", "reason": ""} in index
        triton.unload_model(FASHION)
        served = tritonclient.http.InferenceServerClient(url.removeprefix("http://"))
        # One client keeps its connection, so on one worker: that one follows within a second.
        eventually(lambda: not served.is_model_ready(FASHION))
        triton.load_model(FASHION)
        eventually(lambda: served.is_model_ready(FASHION))
        assert served.is_model_ready(MODEL, "2")
        assert "model_repository" in served.get_server_metadata()["extensions"]

        # A model removed from disk leaves every worker within the poll interval.
        shutil.rmtree(models / FASHION)
        every_worker(lambda r: r.status_code == 404, lambda: predict(fashion), 10)
        assert httpx.get(f"{url}/health/ready").json()["versions"] == {MODEL: [2]}
