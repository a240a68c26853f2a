"""/explain: the API, and tests from the literature that its saliency maps mean something."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.explain import (
    patch_origins,
)

ROOT = Path(__file__).resolve().parents[2]
MODEL = "mnist-deep-cnn"
Digits = tuple[np.ndarray, np.ndarray]


def test_patches_cover_every_pixel() -> None:
    assert patch_origins(28, 5, 2) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 23]
    assert patch_origins(28, 28, 2) == [0]


def test_explain_answers_each_image_with_a_map_and_its_prediction(
    client: TestClient, mnist_digits: Digits
) -> None:
    images, labels = mnist_digits
    answer = client.post("/explain", json={"instances": (images[:3] / 255.0).tolist()})
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["model"] == MODEL and document["version"] == "1"
    for explanation, label in zip(document["explanations"], labels[:3], strict=True):
        assert explanation["method"] == "integrated_gradients"  # The model's first method.
        assert explanation["details"]["completeness_error"] <= 0.02
        assert explanation["target"] == label and explanation["label"] == str(label)
        assert explanation["prediction"]["label"] == str(label)
        assert explanation["prediction"]["reliable"] is True
        saliency = np.array(explanation["saliency"])
        assert saliency.shape == (28, 28) and saliency.max() > 0
    why_not = client.post(
        f"/models/{MODEL}/explain", json={"instances": (images[:1] / 255.0).tolist(), "target": 1}
    ).json()["explanations"][0]
    assert why_not["target"] == 1 and why_not["prediction"]["label"] == str(labels[0])


def test_explain_takes_image_files_and_draws_the_map(client: TestClient) -> None:
    with (ROOT / "examples" / "digit-7.png").open("rb") as file:
        answer = client.post("/explain?format=png&target=1", files={"files": file})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.headers["x-explained-label"] == "1"
    picture = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"), dtype=np.int32)
    assert picture.shape == (280, 280, 3)
    blue = (picture[..., 2] > picture[..., 0] + 40).mean()
    assert blue > 0.01  # "Why not 1?": ink that speaks against it is drawn blue.


def test_explain_refuses_what_it_cannot_do(client: TestClient, mnist_digits: Digits) -> None:
    one = (mnist_digits[0][:1] / 255.0).tolist()
    out_of_range = client.post("/explain", json={"instances": one, "target": 10})
    assert out_of_range.status_code == 422 and "0 to 9" in out_of_range.json()["error"]["message"]
    assert client.post("/explain", json={"instances": one, "method": "lime"}).status_code == 422
    two_pictures = client.post("/explain?format=png", json={"instances": one * 2})
    assert two_pictures.status_code == 422
    too_many = client.post("/explain", json={"instances": one * 17})
    assert too_many.status_code == 413
    methods = ["integrated_gradients", "gradcam", "occlusion"]
    assert client.get(f"/models/{MODEL}").json()["explanations"] == methods
    assert client.get(f"/models/{MODEL}-int8").json()["explanations"] == ["occlusion"]
    int8 = client.post(
        f"/models/{MODEL}-int8/explain", json={"instances": one, "method": "gradcam"}
    )
    assert int8.status_code == 422 and "no gradient graph" in int8.json()["error"]["message"]


@pytest.mark.parametrize("method", ["integrated_gradients", "gradcam", "occlusion"])
def test_every_method_every_model_and_version(
    client: TestClient, mnist_digits: Digits, method: str
) -> None:
    body = {"instances": (mnist_digits[0][:2] / 255.0).tolist(), "method": method}
    paths = [f"/models/{MODEL}/versions/1/explain", "/models/fashion-deep-cnn/explain"]
    if method == "occlusion":
        paths.append(f"/models/{MODEL}-int8/explain")
    for path in paths:
        answer = client.post(path, json=body)
        assert answer.status_code == 200, (path, answer.text)
        for explanation in answer.json()["explanations"]:
            assert explanation["method"] == method
            assert np.abs(np.array(explanation["saliency"])).max() > 0


def test_v2_returns_the_saliency_when_named_with_its_target(
    client: TestClient, mnist_digits: Digits
) -> None:
    images = mnist_digits[0][:1] / 255.0
    data = images.astype(np.float32).ravel().tolist()
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": data}
    wanted = [{"name": "saliency", "parameters": {"target": 1}}, {"name": "conv1"}]
    answer = client.post(
        f"/v2/models/{MODEL}-features/infer", json={"inputs": [tensor], "outputs": wanted}
    )
    assert answer.status_code == 200, answer.text
    outputs = {output["name"]: output for output in answer.json()["outputs"]}
    assert outputs["saliency"]["shape"] == [1, 28, 28] and outputs["conv1"]["shape"][0] == 1
    explained = client.post(
        "/explain", json={"instances": images.tolist(), "target": 1, "method": "occlusion"}
    ).json()["explanations"][0]["saliency"]
    v2_map = np.array(outputs["saliency"]["data"]).reshape(28, 28)
    assert np.allclose(v2_map, np.array(explained), atol=1e-5)
    wrong = [{"name": "probabilities", "parameters": {"target": 1}}]
    refused = client.post(f"/v2/models/{MODEL}/infer", json={"inputs": [tensor], "outputs": wrong})
    assert refused.status_code == 400 and "saliency" in refused.json()["error"]
    out_of_range = [{"name": "saliency", "parameters": {"target": 12}}]
    refused = client.post(
        f"/v2/models/{MODEL}/infer", json={"inputs": [tensor], "outputs": out_of_range}
    )
    assert refused.status_code == 400
    many = {**tensor, "shape": [17, 28, 28, 1], "data": data * 17}
    refused = client.post(
        f"/v2/models/{MODEL}/infer", json={"inputs": [many], "outputs": [{"name": "saliency"}]}
    )
    assert refused.status_code == 400 and "at most 16" in refused.json()["error"]


def test_v2_saliency_takes_a_method(client: TestClient, mnist_digits: Digits) -> None:
    data = (mnist_digits[0][:1] / 255.0).astype(np.float32).ravel().tolist()
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": data}
    wanted = [{"name": "saliency", "parameters": {"method": "integrated_gradients"}}]
    answer = client.post(f"/v2/models/{MODEL}/infer", json={"inputs": [tensor], "outputs": wanted})
    assert answer.status_code == 200, answer.text
    explained = client.post(
        "/explain",
        json={
            "instances": (mnist_digits[0][:1] / 255.0).tolist(),
            "method": "integrated_gradients",
        },
    ).json()["explanations"][0]["saliency"]
    v2_map = np.array(answer.json()["outputs"][0]["data"]).reshape(28, 28)
    assert np.allclose(v2_map, np.array(explained), atol=1e-4)
    gradcam_body = {
        "inputs": [tensor],
        "outputs": [{"name": "saliency", "parameters": {"method": "gradcam"}}],
    }
    refused = client.post(f"/v2/models/{MODEL}-int8/infer", json=gradcam_body)
    assert refused.status_code == 400 and "occlusion" in refused.json()["error"]
    unknown = [{"name": "saliency", "parameters": {"method": "lime"}}]
    answer = client.post(f"/v2/models/{MODEL}/infer", json={"inputs": [tensor], "outputs": unknown})
    assert answer.status_code == 400
