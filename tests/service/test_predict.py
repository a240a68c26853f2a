"""/predict in every input form, checked against a direct ONNX Runtime run and real accuracy."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from tests.conftest import MODELS_DIR
from tests.imaging import mnist_png, paper_photo, transparent_strokes

BATCH = 100  # Requests of 100 digits: five requests cover the 500-digit fixture.


@pytest.fixture(scope="module")
def direct_session() -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS_DIR / "mnist-deep-cnn" / "model.onnx"))


def scaled(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0


def accuracy_of(responses: list[dict[str, object]], labels: np.ndarray) -> float:
    predicted = [item["class_index"] for body in responses for item in body["predictions"]]  # type: ignore[attr-defined]
    return float(np.mean(np.asarray(predicted) == labels))


def test_instances_match_direct_onnxruntime(
    client: TestClient,
    mnist_digits: tuple[np.ndarray, np.ndarray],
    direct_session: ort.InferenceSession,
) -> None:
    images, _ = mnist_digits
    batch = scaled(images[:32])
    response = client.post("/predict", json={"instances": batch.tolist()})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "mnist-deep-cnn" and body["version"]
    (raw,) = direct_session.run(["probabilities"], {"input": batch[..., np.newaxis]})
    # Served probabilities are calibrated: softmax(log p / T), T from the model card.
    card = json.loads((MODELS_DIR / "mnist-deep-cnn" / "model.json").read_text())
    logits = np.log(raw.astype(np.float64)) / card["reliability"]["temperature"]
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    served = np.asarray([item["probabilities"] for item in body["predictions"]])
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-6)
    assert all(item["reliable"] for item in body["predictions"][:32] if item["confidence"] > 0.99)
    assert [item["class_index"] for item in body["predictions"]] == expected.argmax(1).tolist()
    assert all(item["label"] == str(item["class_index"]) for item in body["predictions"])


@pytest.mark.parametrize("layout", ["28x28", "28x28x1", "784"])
def test_instances_accept_three_layouts(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray], layout: str
) -> None:
    images, labels = mnist_digits
    batch = scaled(images[:8])
    shaped = {"28x28": batch, "28x28x1": batch[..., np.newaxis], "784": batch.reshape(8, 784)}
    response = client.post("/predict", json={"instances": shaped[layout].tolist()})
    assert response.status_code == 200
    assert [item["class_index"] for item in response.json()["predictions"]] == labels[:8].tolist()


def post_batch(client: TestClient, form: str, images: np.ndarray) -> dict[str, object]:
    """Post uint8 (N, 28, 28) digits in one of the input forms; returns the JSON answer."""
    if form == "instances":
        response = client.post("/predict", json={"instances": scaled(images).tolist()})
    elif form == "base64-png":
        encoded = [base64.b64encode(mnist_png(image)).decode() for image in images]
        response = client.post("/predict", json={"images": encoded})
    elif form == "multipart-png":
        files = [
            ("files", (f"{index}.png", mnist_png(image), "image/png"))
            for index, image in enumerate(images)
        ]
        response = client.post("/predict", files=files)
    elif form == "binary-uint8":
        response = client.post(
            "/predict",
            content=images.tobytes(),
            headers={"content-type": "application/octet-stream"},
        )
    else:
        buffer = io.BytesIO()
        np.save(buffer, images)
        response = client.post(
            "/predict", content=buffer.getvalue(), headers={"content-type": "application/x-npy"}
        )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "form", ["instances", "base64-png", "multipart-png", "binary-uint8", "npy"]
)
def test_default_model_scores_99_percent_in_every_input_form(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray], form: str
) -> None:
    images, labels = mnist_digits
    answers = [
        post_batch(client, form, images[start : start + BATCH])
        for start in range(0, len(images), BATCH)
    ]
    assert accuracy_of(answers, labels) >= 0.99


def test_top_k_returns_sorted_classes(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_digits
    response = client.post("/predict", json={"instances": scaled(images[:2]).tolist(), "top_k": 3})
    assert response.status_code == 200
    for item, label in zip(response.json()["predictions"], labels[:2], strict=True):
        assert "probabilities" not in item
        probabilities = [entry["probability"] for entry in item["top_k"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert item["top_k"][0]["class_index"] == label == item["class_index"]
        assert item["confidence"] == probabilities[0]


def test_top_k_as_query_parameter_for_files(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = mnist_digits
    response = client.post(
        "/predict?top_k=2", files=[("files", ("a.png", mnist_png(images[0]), "image/png"))]
    )
    assert response.status_code == 200
    assert len(response.json()["predictions"][0]["top_k"]) == 2


def test_named_model_route_serves_fashion(client: TestClient) -> None:
    sandal = np.zeros((28, 28), dtype=np.float32)
    response = client.post(
        "/models/fashion-deep-cnn/predict", json={"instances": [sandal.tolist()]}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "fashion-deep-cnn"
    assert len(body["predictions"][0]["probabilities"]) == 10


def test_photos_of_digits_on_paper_are_recognised(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """Large dark-on-light JPEG photos with noise, uneven light and an off-centre digit."""
    images, labels = mnist_digits
    files = [
        ("files", (f"{index}.jpg", paper_photo(images[index], seed=index), "image/jpeg"))
        for index in range(60)
    ]
    response = client.post("/predict", files=files)
    assert response.status_code == 200
    assert accuracy_of([response.json()], labels[:60]) >= 0.95


@pytest.mark.parametrize("color", [(20, 20, 20), (255, 255, 255), (200, 30, 30)])
def test_transparent_drawings_are_recognised(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray], color: tuple[int, int, int]
) -> None:
    """Strokes on a transparent canvas, whatever their colour, as drawing apps export them."""
    images, labels = mnist_digits
    encoded = [
        base64.b64encode(transparent_strokes(image, color)).decode() for image in images[:40]
    ]
    response = client.post("/predict", json={"images": encoded})
    assert response.status_code == 200
    assert accuracy_of([response.json()], labels[:40]) >= 0.95


def test_exif_rotation_is_applied(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """A phone photo stored sideways with an EXIF orientation tag reads upright."""
    from PIL import Image

    images, labels = mnist_digits
    index = int(np.flatnonzero(labels == 7)[0])
    upright = Image.fromarray(255 - images[index]).resize((280, 280))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # Orientation 6 turns it back.
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.convert("RGB").save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    response = client.post(
        "/predict", content=buffer.getvalue(), headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200
    assert response.json()["predictions"][0]["class_index"] == 7


def test_binary_float32_tensor_matches_json(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = mnist_digits
    batch = scaled(images[:4])
    binary = client.post(
        "/predict",
        content=batch.astype("<f4").tobytes(),
        headers={
            "content-type": "application/octet-stream",
            "x-shape": "4,28,28,1",
            "x-dtype": "float32",
        },
    )
    as_json = client.post("/predict", json={"instances": batch.tolist()})
    assert binary.status_code == as_json.status_code == 200
    assert binary.json() == as_json.json()


def test_preprocess_option_changes_what_the_model_sees(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """A digit in a corner: 'none' passes it as is, 'mnist' re-centres it."""
    images, labels = mnist_digits
    index = int(np.flatnonzero(labels == 3)[0])
    cornered = np.zeros((28, 28), dtype=np.float32)
    cornered[:14, :14] = scaled(images[index])[::2, ::2]
    as_is = client.post("/predict", json={"instances": [cornered.tolist()], "preprocess": "none"})
    centred = client.post(
        "/predict", json={"instances": [cornered.tolist()], "preprocess": "mnist"}
    )
    assert as_is.status_code == centred.status_code == 200
    as_is_probabilities = as_is.json()["predictions"][0]["probabilities"]
    centred_prediction = centred.json()["predictions"][0]
    assert centred_prediction["class_index"] == 3
    assert centred_prediction["probabilities"] != as_is_probabilities
