"""service/reliability.py: an honest "cannot tell" on inputs that are not one digit.

Measured on ``tests/fixtures/not_digits.npz`` (``scripts/make_not_digits.py``) against the 500
committed MNIST test digits, through the same functions the service uses.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.reliability import DistanceModel
from service.runtime import ModelRuntime
from tests.conftest import FIXTURES, MODELS_DIR
from tests.imaging import encode
from training.reliability import auroc, doubts


@pytest.fixture(scope="module")
def model() -> Iterator[ModelRuntime]:
    yield ModelRuntime(MODELS_DIR / "mnist-deep-cnn", 1)


@pytest.fixture(scope="module")
def not_digits() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "not_digits.npz") as archive:
        return {name: archive[name] for name in archive.files}


def test_a_blank_tensor_is_not_a_confident_digit(client: TestClient) -> None:
    response = client.post("/predict", json={"instances": [np.zeros((28, 28)).tolist()] * 2})
    for prediction in response.json()["predictions"]:
        assert prediction["reliable"] is False and prediction["reason"] == "blank"


def test_almost_every_mnist_digit_is_reliable(
    model: ModelRuntime, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = mnist_digits
    assert (doubts(model, images / 255.0) <= 1).mean() >= 0.98


# Measured with the committed model: blank 0.996, noise 0.984, letters 0.972, fashion 0.960.
MIN_AUROC = {"blank": 0.99, "noise": 0.97, "letters": 0.95, "fashion": 0.95}


@pytest.mark.parametrize("kind", sorted(MIN_AUROC))
def test_inputs_that_are_not_one_digit_rank_as_doubtful(
    model: ModelRuntime,
    mnist_digits: tuple[np.ndarray, np.ndarray],
    not_digits: dict[str, np.ndarray],
    kind: str,
) -> None:
    images, _ = mnist_digits
    digits = doubts(model, images / 255.0)
    others = doubts(model, not_digits[kind])
    score = auroc(others, digits)
    print(f"{kind}: AUROC {score:.3f}, flagged {(others > 1).mean():.2f}")
    assert score >= MIN_AUROC[kind]


def test_several_digits_in_one_picture_are_said_to_be_several(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """'42' written side by side: the label is one of them, and the answer says it is not one
    digit; the same digits alone are not flagged so."""
    images, _ = mnist_digits
    pairs = [
        encode(
            Image.fromarray(255 - np.concatenate([images[i], images[i + 1]], axis=1)).resize(
                (224, 112)
            )
        )
        for i in range(0, 60, 2)
    ]
    singles = [encode(Image.fromarray(255 - images[i]).resize((112, 112))) for i in range(30)]
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(pairs)]
    several = client.post("/predict", files=files).json()["predictions"]
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(singles)]
    alone = client.post("/predict", files=files).json()["predictions"]
    assert np.mean([p.get("reason") == "several digits" for p in several]) >= 0.8
    assert np.mean([p.get("reason") == "several digits" for p in alone]) <= 0.05


def test_a_model_without_a_reliability_model_flags_only_blank_input(client: TestClient) -> None:
    """The fashion model (no reliability.npz): a wide shoe is not 'not one digit'."""
    shoe = np.zeros((28, 28))
    shoe[14:22, 2:26] = 0.8  # Wider than tall.
    response = client.post(
        "/models/fashion-deep-cnn/predict",
        json={"instances": [shoe.tolist(), np.zeros((28, 28)).tolist()]},
    )
    wide, blank = response.json()["predictions"]
    assert wide["reliable"] is True and "reason" not in wide
    assert blank["reliable"] is False and blank["reason"] == "blank"


@pytest.mark.parametrize("components", [12, 5])
def test_distance_equals_the_mahalanobis_distance_written_out(components: int) -> None:
    """The expanded, whitened form the service computes is the textbook one: for each class
    centre c, (x - c)' V diag(1 / s) V' (x - c) over the kept components V, plus the rest of
    |x - c|^2 over the residual scale; the nearest centre's."""
    rng = np.random.default_rng(3)
    basis, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    basis = basis[:, :components].astype(np.float32)
    scales = rng.uniform(0.5, 3.0, components).astype(np.float32)
    centres = rng.normal(0, 4, (4, 12)).astype(np.float32)
    model = DistanceModel(basis=basis, scales=scales, residual_scale=1.5, centres=centres)
    features = rng.normal(0, 4, (30, 12)).astype(np.float32)
    written_out = []
    for x in features.astype(np.float64):
        per_centre = []
        for centre in centres.astype(np.float64):
            offset = x - centre
            inside = offset @ basis.astype(np.float64)
            rest = offset @ offset - inside @ inside
            per_centre.append((inside**2 / scales).sum() + rest / 1.5)
        written_out.append(min(per_centre))
    np.testing.assert_allclose(model.distances(features), written_out, rtol=1e-4, atol=1e-3)
