"""Triton's system shared-memory extension, as tritonclient's ``simple_http_shm_client``
example uses it: regions registered, tensors read from and written to /dev/shm, every worker
agreeing on the regions; and off by default."""

from __future__ import annotations

import uuid

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
import tritonclient.utils.shared_memory as shm
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from service.app import create_app
from tests.conftest import MODELS_DIR, make_settings
from tests.servers import running_service

MODEL = "mnist-deep-cnn"


@pytest.fixture()
def regions() -> tuple[str, str]:
    """Unique /dev/shm keys for an input and an output region (each test removes its own)."""
    tag = uuid.uuid4().hex[:8]
    return f"/cnn_serve_test_in_{tag}", f"/cnn_serve_test_out_{tag}"


def digits(mnist_digits: tuple[np.ndarray, np.ndarray], count: int) -> np.ndarray:
    return (mnist_digits[0][:count].astype(np.float32) / 255.0)[..., np.newaxis]


@pytest.mark.slow  # Real processes: two workers must agree on the regions.
def test_tensors_pass_through_shared_memory_on_every_worker(
    regions: tuple[str, str], mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images = digits(mnist_digits, 4)
    expected_probabilities, expected_pool2 = ort.InferenceSession(
        str(MODELS_DIR / MODEL / "model.onnx")
    ).run(["probabilities", "pool2"], {"input": images})
    input_key, output_key = regions
    input_handle = shm.create_shared_memory_region("input_data", input_key, images.nbytes)
    out_size = expected_probabilities.nbytes + expected_pool2.nbytes
    output_handle = shm.create_shared_memory_region("output_data", output_key, out_size)
    try:
        shm.set_shared_memory_region(input_handle, [images])
        with running_service(workers=2, shared_memory="true") as service:
            client = triton.InferenceServerClient(service.url.removeprefix("http://"))
            assert "system_shared_memory" in client.get_server_metadata()["extensions"]
            client.unregister_system_shared_memory()
            client.register_system_shared_memory("input_data", input_key, images.nbytes)
            client.register_system_shared_memory("output_data", output_key, out_size)
            status = client.get_system_shared_memory_status()
            assert sorted(region["name"] for region in status) == ["input_data", "output_data"]
            for _ in range(8):  # New connections, which the kernel spreads over both workers.
                client = triton.InferenceServerClient(service.url.removeprefix("http://"))
                tensor = triton.InferInput("input", list(images.shape), "FP32")
                tensor.set_shared_memory("input_data", images.nbytes)
                probabilities = triton.InferRequestedOutput("probabilities", binary_data=True)
                probabilities.set_shared_memory("output_data", expected_probabilities.nbytes)
                pool2 = triton.InferRequestedOutput("pool2", binary_data=True)
                pool2.set_shared_memory(
                    "output_data", expected_pool2.nbytes, offset=expected_probabilities.nbytes
                )
                result = client.infer(f"{MODEL}-features", [tensor], outputs=[probabilities, pool2])
                output = result.get_output("probabilities")
                assert output["parameters"]["shared_memory_region"] == "output_data"
                assert "data" not in output  # the tensor is in the region, not the body
                got = shm.get_contents_as_numpy(output_handle, np.float32, [4, 10])
                np.testing.assert_allclose(got, expected_probabilities, rtol=1e-5, atol=1e-6)
                maps = shm.get_contents_as_numpy(
                    output_handle, np.float32, list(expected_pool2.shape),
                    offset=expected_probabilities.nbytes,
                )  # fmt: skip
                np.testing.assert_allclose(maps, expected_pool2, rtol=1e-5, atol=1e-5)
            client.unregister_system_shared_memory("input_data")
            with pytest.raises(InferenceServerException, match="unable to find shared memory"):
                client.infer(MODEL, [tensor])
            client.unregister_system_shared_memory()
            assert client.get_system_shared_memory_status() == []
    finally:
        shm.destroy_shared_memory_region(input_handle)
        shm.destroy_shared_memory_region(output_handle)


def test_regions_are_checked_when_registered_and_used(regions: tuple[str, str]) -> None:
    input_key, _ = regions
    handle = shm.create_shared_memory_region("small", input_key, 64)
    try:
        with TestClient(create_app(make_settings(shared_memory=True))) as client:
            url = "/v2/systemsharedmemory/region"
            beyond = client.post(f"{url}/small/register", json={"key": input_key, "byte_size": 65})
            assert beyond.status_code == 400 and "exceeds the 64 bytes" in beyond.json()["error"]
            missing = client.post(f"{url}/x/register", json={"key": "/nope-zz", "byte_size": 8})
            assert missing.status_code == 400 and "unable to open" in missing.json()["error"]
            path_like = client.post(f"{url}/x/register", json={"key": "/../etc", "byte_size": 8})
            assert path_like.status_code == 400
            ok = client.post(f"{url}/small/register", json={"key": input_key, "byte_size": 64})
            assert ok.status_code == 200
            again = client.post(f"{url}/small/register", json={"key": input_key, "byte_size": 64})
            assert "already registered" in again.json()["error"]
            request = {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, 784],
                        "datatype": "FP32",
                        "parameters": {
                            "shared_memory_region": "small",
                            "shared_memory_byte_size": 3136,
                        },
                    }
                ]
            }
            too_big = client.post(f"/v2/models/{MODEL}/infer", json=request)
            assert too_big.status_code == 400 and "lies outside" in too_big.json()["error"]
    finally:
        shm.destroy_shared_memory_region(handle)


def test_shared_memory_is_off_by_default(client: TestClient) -> None:
    assert "system_shared_memory" not in client.get("/v2").json()["extensions"]
    refused = client.post(
        "/v2/systemsharedmemory/region/a/register", json={"key": "/a", "byte_size": 8}
    )
    assert refused.status_code == 404 and isinstance(refused.json()["error"], str)
    assert client.get("/v2/systemsharedmemory/status").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert not any("systemsharedmemory" in path for path in paths)
