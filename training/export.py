"""Export to ONNX with feature-map outputs, verify against Keras, and write ``model.json``."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from model_card import ModelCard, sha256_of
from training.architectures import INPUT_SHAPE, feature_map_layers
from training.train import TrainConfig

OPSET = 17
INPUT_NAME = "input"
PROBABILITIES_OUTPUT = "probabilities"
# Tolerances of the Keras-vs-ONNX Runtime check (issue #2).
PROBABILITY_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
FEATURE_MAP_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}
MIN_VERIFY_IMAGES = 1_000

PREPROCESSING = {
    # How MNIST was made: invert to light-on-dark, fit the ink into 20x20 keeping the aspect ratio,
    # then place it in 28x28 so that its centre of mass is in the middle.
    "mnist": {"default": "mnist", "invert": "auto", "digit_box": 20},
    # Fashion-MNIST products fill the frame: invert a light background and resize to 28x28.
    "fashion_mnist": {"default": "resize", "invert": "auto", "digit_box": 28},
}


class ExportCheckError(RuntimeError):
    """The exported ONNX model does not reproduce the Keras model."""


def feature_model(model: keras.Model, layer_names: list[str]) -> keras.Model:
    """A model that returns the probabilities followed by each named layer's activations."""
    outputs = [model.output] + [model.get_layer(name).output for name in layer_names]
    return keras.Model(model.inputs, outputs, name=f"{model.name}_with_feature_maps")


def export_onnx(model: keras.Model, onnx_path: Path) -> list[str]:
    """Convert ``model`` to ONNX (opset 17, dynamic batch) with feature maps as extra outputs.

    Returns:
        The names of the conv/pool layers exported as outputs, in forward order.
    """
    layer_names = feature_map_layers(model)
    multi_output = feature_model(model, layer_names)
    output_names = [PROBABILITIES_OUTPUT, *layer_names]
    signature = [tf.TensorSpec([None, *INPUT_SHAPE], tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=signature)
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = multi_output(images, training=False)
        return dict(zip(output_names, outputs, strict=True))

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx_model, _ = tf2onnx.convert.from_function(
        serve, input_signature=signature, opset=OPSET, output_path=str(onnx_path)
    )
    onnx.checker.check_model(onnx_model, full_check=True)
    exported = [output.name for output in onnx_model.graph.output]
    if sorted(exported) != sorted(output_names):
        raise ExportCheckError(f"ONNX outputs {exported} differ from the expected {output_names}")
    return layer_names


def verify_onnx(model: keras.Model, onnx_path: Path, images: np.ndarray) -> dict[str, float]:
    """Run Keras and ONNX Runtime on the same images and fail loudly on any difference.

    Args:
        images: float32 (N, 28, 28, 1), N >= 1,000 for a real export.

    Returns:
        The largest absolute difference seen per output, for the record.
    """
    layer_names = feature_map_layers(model)
    keras_outputs = feature_model(model, layer_names).predict(images, batch_size=256, verbose=0)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    output_names = [PROBABILITIES_OUTPUT, *layer_names]
    onnx_outputs = session.run(output_names, {INPUT_NAME: images.astype(np.float32)})
    differences: dict[str, float] = {}
    for name, expected, actual in zip(output_names, keras_outputs, onnx_outputs, strict=True):
        tolerance = PROBABILITY_TOLERANCE if name == PROBABILITIES_OUTPUT else FEATURE_MAP_TOLERANCE
        if expected.shape != actual.shape:
            raise ExportCheckError(f"{name}: Keras shape {expected.shape}, ONNX {actual.shape}")
        if not np.allclose(actual, expected, **tolerance):
            worst = float(np.max(np.abs(actual - expected)))
            raise ExportCheckError(f"{name}: ONNX differs from Keras by up to {worst:g}")
        differences[name] = float(np.max(np.abs(actual - expected)))
    if not np.array_equal(keras_outputs[0].argmax(axis=1), onnx_outputs[0].argmax(axis=1)):
        raise ExportCheckError("ONNX and Keras disagree on a predicted class")
    return differences


def build_model_card(
    *,
    name: str,
    version: str,
    model: keras.Model,
    onnx_path: Path,
    labels: list[str],
    config: TrainConfig,
    metrics: dict[str, Any],
    verification: dict[str, float],
    verified_images: int,
    training_seconds: float | None,
) -> dict[str, Any]:
    """Everything the service needs to know about an exported model (``model.json``)."""
    layer_names = feature_map_layers(model)
    return {
        "schema_version": 1,
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "architecture": config.architecture,
        "dataset": config.dataset,
        "parameters": int(model.count_params()),
        "framework": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tf2onnx": tf2onnx.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "opset": OPSET,
        },
        "input": {
            "name": INPUT_NAME,
            "shape": [None, *INPUT_SHAPE],
            "dtype": "float32",
            "layout": "NHWC",
            "value_range": [0.0, 1.0],
            "foreground": "light ink on a dark background, like MNIST",
        },
        "preprocessing": PREPROCESSING[config.dataset],
        "labels": labels,
        "outputs": {"probabilities": PROBABILITIES_OUTPUT},
        "feature_maps": [
            {
                "layer": layer_name,
                "output": layer_name,
                "kind": "pool" if layer_name.startswith("pool") else "conv",
                "shape": list(model.get_layer(layer_name).output.shape[1:]),
            }
            for layer_name in layer_names
        ],
        "metrics": {key: value for key, value in metrics.items() if key != "confusion_matrix"},
        "verification": {"images": verified_images, "max_abs_difference": verification},
        "training": {**asdict(config), "seconds": training_seconds},
        "files": {"onnx": onnx_path.name, "sha256": sha256_of(onnx_path)},
    }


def write_model_card(card: dict[str, Any], path: Path) -> None:
    """Check ``card`` against the schema the service reads, then write it (stable formatting).

    Raises:
        pydantic.ValidationError: the card lacks or mistypes something the service needs.
    """
    ModelCard.from_json(card)
    path.write_text(json.dumps(card, indent=2) + "\n")
