"""/explain: the API, and tests from the literature that its saliency maps mean something."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from onnx import numpy_helper
from PIL import Image

from service.explain import deletion_curve, occlusion, patch_origins
from service.runtime import ModelRuntime
from tests.conftest import MODELS_DIR

ROOT = Path(__file__).resolve().parents[2]
MODEL = "mnist-deep-cnn"
Digits = tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    return ModelRuntime(MODELS_DIR / MODEL, 2)


def as_inputs(images: np.ndarray) -> np.ndarray:
    return (images / 255.0).astype(np.float32)[..., np.newaxis]


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
        assert explanation["method"] == "occlusion"
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
    assert client.get(f"/models/{MODEL}").json()["explanations"] == ["occlusion"]


def test_every_model_and_version_can_be_explained(client: TestClient, mnist_digits: Digits) -> None:
    body = {"instances": (mnist_digits[0][:1] / 255.0).tolist()}
    for path in (f"/models/{MODEL}-int8/explain", f"/models/{MODEL}/versions/1/explain"):
        answer = client.post(path, json=body)
        assert answer.status_code == 200, (path, answer.text)


def test_deleting_pixels_in_saliency_order_lowers_the_target_faster_than_at_random(
    runtime: ModelRuntime, mnist_digits: Digits
) -> None:
    """Petsiuk et al. (2018): the area under the deletion curve, saliency order against a
    random order, on 100 test digits (500 in docs/explanations.md)."""
    images = as_inputs(mnist_digits[0][:100])
    _, explanations = occlusion(runtime.predict, images, [None] * len(images))
    generator = np.random.default_rng(0)
    by_saliency, at_random = [], []
    for image, explanation in zip(images, explanations, strict=True):
        order = np.argsort(-explanation.saliency.ravel())
        by_saliency.append(deletion_curve(runtime.predict, image, explanation.target, order).mean())
        random_order = generator.permutation(image.size)
        at_random.append(
            deletion_curve(runtime.predict, image, explanation.target, random_order).mean()
        )
    assert np.mean(by_saliency) < 0.7 * np.mean(at_random)


def randomised_session(tmp_path: Path) -> ort.InferenceSession:
    """The same network with every weight re-drawn at its layer's scale (Adebayo et al.'s
    cascading randomisation, all layers at once)."""
    graph = onnx.load(str(MODELS_DIR / MODEL / "model.onnx"))
    generator = np.random.default_rng(1)
    for initializer in graph.graph.initializer:
        values = numpy_helper.to_array(initializer)
        if values.dtype == np.float32 and values.ndim >= 2:
            redrawn = generator.normal(0.0, float(values.std()), values.shape).astype(np.float32)
            initializer.CopyFrom(numpy_helper.from_array(redrawn, initializer.name))
    path = tmp_path / "randomised.onnx"
    onnx.save(graph, str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    ranks = [
        np.argsort(np.argsort(values.ravel())).astype(np.float64) for values in (first, second)
    ]
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def test_maps_of_a_randomised_network_are_unrelated_to_the_trained_ones(
    runtime: ModelRuntime, mnist_digits: Digits, tmp_path: Path
) -> None:
    """Adebayo et al. (2018): a map that survives re-initialising the weights shows the
    input, not what the network learned. Compared on each map's inked pixels, where the
    digit's shape alone would make any two maps agree."""
    session = randomised_session(tmp_path)
    output = runtime.card.probabilities_output

    def randomised(images: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([output], {runtime.card.input.name: images})[0])

    images = as_inputs(mnist_digits[0][:30])
    _, trained = occlusion(runtime.predict, images, [None] * len(images))
    targets: list[int | None] = [explanation.target for explanation in trained]
    _, redrawn = occlusion(randomised, images, targets)
    _, finer = occlusion(runtime.predict, images, targets, patch=4)
    correlations, stable = [], []
    for image, first, second, third in zip(images, trained, redrawn, finer, strict=True):
        inked = image[..., 0] > 0.3
        correlations.append(rank_correlation(first.saliency[inked], second.saliency[inked]))
        stable.append(rank_correlation(first.saliency[inked], third.saliency[inked]))
    assert abs(float(np.median(correlations))) < 0.3
    # The measure can tell: the trained network's maps with a 4x4 patch agree with its own.
    assert float(np.median(stable)) > 0.7


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
    explained = client.post("/explain", json={"instances": images.tolist(), "target": 1}).json()[
        "explanations"
    ][0]["saliency"]
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
