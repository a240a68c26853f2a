"""The exported gradient graph (explain.onnx) against tf.GradientTape on the Keras model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf

from model_card import sha256_of
from tests.conftest import MODELS_DIR
from training.architectures import ARCHITECTURES, build_model
from training.explainers import export_explainers, keras_model_from_onnx, tape_reference

Digits = tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def rebuilt() -> keras.Model:
    return keras_model_from_onnx(MODELS_DIR / "mnist-deep-cnn", "deep_cnn")


def inputs(digits: Digits, count: int) -> np.ndarray:
    return (digits[0][:count] / 255.0).astype(np.float32)[..., np.newaxis]


def test_the_keras_model_rebuilt_from_onnx_answers_as_the_onnx_model(
    rebuilt: keras.Model, mnist_digits: Digits
) -> None:
    images = inputs(mnist_digits, 200)
    session = ort.InferenceSession(str(MODELS_DIR / "mnist-deep-cnn" / "model.onnx"))
    expected = session.run(["probabilities"], {"input": images})[0]
    np.testing.assert_allclose(np.asarray(rebuilt(images, training=False)), expected, atol=1e-5)


def test_the_exported_gradients_equal_gradient_tape(
    rebuilt: keras.Model, mnist_digits: Digits, tmp_path: Path
) -> None:
    model_dir = tmp_path / "mnist-deep-cnn"
    shutil.copytree(MODELS_DIR / "mnist-deep-cnn", model_dir)
    entry = export_explainers(rebuilt, model_dir, inputs(mnist_digits, 50))
    card = json.loads((model_dir / "model.json").read_text())
    assert card["explainers"] == entry and entry["gradcam_layer"] == "conv4"
    assert sha256_of(model_dir / "explain.onnx") == entry["sha256"]
    session = ort.InferenceSession(str(model_dir / "explain.onnx"))
    images = inputs(mnist_digits, 100)[50:]  # Not the images it was checked on.
    targets = (np.arange(50) % 10).astype(np.int64)  # Predicted or not.
    logit, gradient, gradcam = session.run(
        ["target_logit", "input_gradient", "gradcam"], {"images": images, "targets": targets}
    )
    reference = tape_reference(rebuilt, images, targets)
    np.testing.assert_allclose(gradient, reference, atol=1e-5 * float(np.abs(reference).max()))
    # Grad-CAM by the book: conv4's activations and the tape's gradient of the logit there.
    conv4 = keras.Model(rebuilt.inputs, rebuilt.get_layer("conv4").output)
    rest = rebuilt.layers[rebuilt.layers.index(rebuilt.get_layer("conv4")) + 1 :]
    tensor = tf.constant(images)
    with tf.GradientTape() as tape:
        activations = conv4(tensor, training=False)
        tape.watch(activations)
        values = activations
        for layer in rest[:-1]:
            values = layer(values, training=False)
        head = rest[-1]
        logits = tf.matmul(values, head.kernel) + head.bias
        score = tf.gather(logits, targets, batch_dims=1)
    weights = tf.reduce_mean(tape.gradient(score, activations), axis=[1, 2], keepdims=True)
    expected = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1)).numpy()
    np.testing.assert_allclose(gradcam, expected, atol=1e-4 * float(np.abs(expected).max()))
    np.testing.assert_allclose(logit, score.numpy(), atol=1e-4)


def test_the_shipped_gradient_graphs_match_their_cards() -> None:
    for name in ("mnist-deep-cnn", "fashion-deep-cnn"):
        card = json.loads((MODELS_DIR / name / "model.json").read_text())
        explainers = card["explainers"]
        assert sha256_of(MODELS_DIR / name / explainers["file"]) == explainers["sha256"]
        check = explainers["verification"]["max_relative_gradient_difference_vs_gradient_tape"]
        assert check < 1e-4


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_has_a_correct_gradient_graph(
    architecture: str, mnist_digits: Digits, tmp_path: Path
) -> None:
    """Odd pooled sizes (the small CNN pools 11x11 to 5x5, leaving a row and a column out)
    and no convolution at all (the MLP: integrated gradients only) included."""
    model = build_model(architecture)
    (tmp_path / "model.json").write_text("{}")
    entry = export_explainers(model, tmp_path, inputs(mnist_digits, 20))
    session = ort.InferenceSession(str(tmp_path / "explain.onnx"))
    images, targets = inputs(mnist_digits, 40)[20:], (np.arange(20) % 10).astype(np.int64)
    gradient = session.run(["input_gradient"], {"images": images, "targets": targets})[0]
    reference = tape_reference(model, images, targets)
    np.testing.assert_allclose(gradient, reference, atol=1e-5 * float(np.abs(reference).max()))
    has_convolution = architecture != "mlp"
    assert ("gradcam" in entry["methods"]) == has_convolution
    assert (entry["gradcam_layer"] is not None) == has_convolution
