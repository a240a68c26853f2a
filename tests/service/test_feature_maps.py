"""/feature-maps: shapes from model.json, values equal to ONNX Runtime, and the PNG grid."""

from __future__ import annotations

import io
import json

import numpy as np
import onnxruntime as ort
from fastapi.testclient import TestClient
from PIL import Image

from service.visualize import sheet_size
from tests.conftest import MODELS_DIR
from tests.imaging import mnist_png

CARD = json.loads((MODELS_DIR / "mnist-deep-cnn" / "model.json").read_text())
SHAPES = {layer["layer"]: layer["shape"] for layer in CARD["feature_maps"]}


def test_json_feature_maps_match_direct_onnxruntime(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_digits
    digit = images[0].astype(np.float32) / 255.0
    response = client.post("/feature-maps", json={"instances": [digit.tolist()]})
    assert response.status_code == 200
    body = response.json()
    assert [layer["name"] for layer in body["layers"]] == list(SHAPES)
    session = ort.InferenceSession(str(MODELS_DIR / "mnist-deep-cnn" / "model.onnx"))
    expected = session.run(list(SHAPES), {"input": digit[np.newaxis, ..., np.newaxis]})
    for layer, values in zip(body["layers"], expected, strict=True):
        assert layer["shape"] == SHAPES[layer["name"]]
        np.testing.assert_allclose(np.asarray(layer["values"]), values[0], rtol=1e-5, atol=1e-5)
    assert body["prediction"]["class_index"] == labels[0]
    np.testing.assert_allclose(np.asarray(body["input"]), digit, atol=1e-7)


def test_layers_can_be_chosen(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = mnist_digits
    response = client.post(
        "/feature-maps",
        files={"files": ("d.png", mnist_png(images[1]))},
        data={"layers": "pool2,conv1"},
    )
    assert response.status_code == 200
    assert [layer["name"] for layer in response.json()["layers"]] == ["pool2", "conv1"]


def test_input_shows_the_preprocessed_digit(client: TestClient) -> None:
    """A big dark-on-light drawing comes back as a centred light-on-dark 28x28 digit."""
    drawing = Image.new("L", (400, 300), 255)
    drawing.paste(0, (180, 40, 220, 260))  # A thick vertical bar: a "1".
    response = client.post(
        "/feature-maps?layers=conv1",
        content=mnist_png(np.asarray(drawing)),
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 200
    seen = np.asarray(response.json()["input"])
    assert seen.shape == (28, 28)
    assert seen[14, 14] > 0.9 and seen[0, 0] == 0.0
    rows = np.flatnonzero(seen.max(axis=1) > 0.5)
    assert 18 <= rows[-1] - rows[0] + 1 <= 21  # The longest side is scaled to 20 px.
    assert response.json()["prediction"]["label"] == "1"


def test_png_format_returns_the_grid_picture(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = mnist_digits
    digit = (images[2].astype(np.float32) / 255.0).tolist()
    response = client.post("/feature-maps", json={"instances": [digit], "format": "png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.format == "PNG"
    assert picture.size == sheet_size([tuple(shape) for shape in SHAPES.values()])  # type: ignore[misc]
    assert np.asarray(picture).std() > 10  # Not a blank sheet.


def test_accept_header_selects_png_for_one_layer(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = mnist_digits
    response = client.post(
        "/feature-maps?layers=pool1",
        files={"files": ("d.png", mnist_png(images[3]), "image/png")},
        headers={"accept": "image/png"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == sheet_size([tuple(SHAPES["pool1"])])  # type: ignore[list-item]


def test_named_model_feature_maps(client: TestClient) -> None:
    response = client.post(
        "/models/fashion-deep-cnn/feature-maps?layers=conv1",
        json={"instances": [np.zeros((28, 28)).tolist()]},
    )
    assert response.status_code == 200
    assert response.json()["model"] == "fashion-deep-cnn"
    assert response.json()["layers"][0]["shape"] == [26, 26, 32]
