"""The committed models: intact files, honest cards, and the accuracy they promise."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from model_card import sha256_of
from service.repository import read_model_card
from tests.conftest import MODELS_DIR

SHIPPED = ["mnist-deep-cnn", "fashion-deep-cnn", "mnist-deep-cnn-int8"]


@pytest.mark.parametrize("name", SHIPPED)
def test_model_card_sha256_matches_the_file(name: str) -> None:
    card = json.loads((MODELS_DIR / name / "model.json").read_text())
    assert card["files"]["sha256"] == sha256_of(MODELS_DIR / name / "model.onnx")
    assert read_model_card(MODELS_DIR / name).name == name


def test_mnist_model_card_reports_at_least_99_6_percent() -> None:
    card = json.loads((MODELS_DIR / "mnist-deep-cnn" / "model.json").read_text())
    assert card["metrics"]["test_samples"] == 10_000
    assert card["metrics"]["test_accuracy"] >= 0.996
    assert card["training"]["augment"] == "drawings"
    assert card["architecture"] == "deep_cnn" and card["parameters"] == 329_962


def test_fashion_model_card_reports_at_least_93_percent() -> None:
    card = json.loads((MODELS_DIR / "fashion-deep-cnn" / "model.json").read_text())
    assert card["metrics"]["test_samples"] == 10_000
    assert card["metrics"]["test_accuracy"] >= 0.93
    assert card["labels"][0] == "T-shirt/top"


def test_int8_model_is_within_0_1_points_of_fp32() -> None:
    card = json.loads((MODELS_DIR / "mnist-deep-cnn-int8" / "model.json").read_text())
    fp32 = json.loads((MODELS_DIR / "mnist-deep-cnn" / "model.json").read_text())
    quantization = card["quantization"]
    assert quantization["fp32_test_accuracy"] == fp32["metrics"]["test_accuracy"]
    assert quantization["fp32_test_accuracy"] - quantization["int8_test_accuracy"] <= 0.001
    assert card["metrics"]["test_accuracy"] == quantization["int8_test_accuracy"]
    assert card["feature_maps"] == fp32["feature_maps"]


@pytest.mark.parametrize("name", ["mnist-deep-cnn", "mnist-deep-cnn-int8"])
def test_mnist_models_score_99_percent_on_the_fixture(
    mnist_digits: tuple[np.ndarray, np.ndarray], name: str
) -> None:
    images, labels = mnist_digits
    session = ort.InferenceSession(str(MODELS_DIR / name / "model.onnx"))
    batch = (images.astype(np.float32) / 255.0)[..., np.newaxis]
    (probabilities,) = session.run(["probabilities"], {"input": batch})
    assert np.mean(probabilities.argmax(axis=1) == labels) >= 0.99
