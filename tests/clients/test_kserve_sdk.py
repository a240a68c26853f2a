"""KServe's own Python SDK (``kserve.InferenceRESTClient`` and ``InferenceGRPCClient`` with
``InferRequest``) against the real service: health, model readiness, JSON and binary inference
equal to onnxruntime, a feature map from the ``-features`` model, and an unknown model's error
text; over gRPC: health, readiness, inference equal to onnxruntime, the request id and the
unknown model's NOT_FOUND.

The SDK runs in a virtual environment of its own, made once from ``kserve-constraints.txt``
(pinned; its protobuf<7 conflicts with TensorFlow's in the project's environment) and cached
under ``~/.cache/cnn-serve``; ``kserve_calls.py`` makes the calls there.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import MODELS_DIR
from tests.servers import free_port, running_service

HERE = Path(__file__).resolve().parent
CONSTRAINTS = HERE / "kserve-constraints.txt"


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    """The interpreter of a virtual environment with the pinned kserve SDK."""
    digest = hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()[:12]
    venv = Path.home() / ".cache" / "cnn-serve" / f"kserve-sdk-{digest}"
    python = venv / "bin" / "python"
    if not (venv / "installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            + ["-c", str(CONSTRAINTS), "kserve"],
            check=True,
            timeout=900,
        )
        (venv / "installed").touch()
    return python


def test_kserve_rest_client_runs_inference(
    kserve_python: Path, tmp_path: Path, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images = (mnist_digits[0][:3].astype(np.float32) / 255.0)[..., np.newaxis]
    np.save(tmp_path / "images.npy", images)
    grpc_port = free_port()
    with running_service(workers=1, grpc_port=grpc_port) as service:
        result = subprocess.run(
            [str(kserve_python), str(HERE / "kserve_calls.py"), service.url]
            + [f"127.0.0.1:{grpc_port}", str(tmp_path / "images.npy")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout)
    assert found["live"] and found["ready"] and found["model_ready"]
    assert found["json_id"] == "kserve-1"
    session = ort.InferenceSession(str(MODELS_DIR / "mnist-deep-cnn" / "model.onnx"))
    (expected,) = session.run(["probabilities"], {"input": images})
    np.testing.assert_allclose(found["json_probabilities"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(found["binary_probabilities"], expected, rtol=1e-5, atol=1e-6)
    assert found["conv1_shape"] == [3, 26, 26, 32]
    assert "Request for unknown model: 'resnet'" in found["unknown_model"]
    assert found["grpc_live"] and found["grpc_ready"] and found["grpc_model_ready"]
    assert found["grpc_id"] == "kserve-grpc-1"
    np.testing.assert_allclose(found["grpc_probabilities"], expected, rtol=1e-5, atol=1e-6)
    assert "NOT_FOUND" in found["grpc_unknown_model"]
    assert "Request for unknown model: 'resnet'" in found["grpc_unknown_model"]
