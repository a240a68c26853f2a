"""The gradients that explanations need, as an extra ONNX graph beside the model.

ONNX Runtime computes no gradients at serving time, and tf2onnx cannot convert TensorFlow's own
gradient ops (``ReluGrad``, ``MaxPoolGrad``, ``ShapeN`` are unsupported). So the backward pass
of the tutorial architectures (valid 3x3 convolutions and dense layers with ReLU, 2x2 max
pooling, dropout, a softmax output) is written out here with forward ops only, exported with
``tf2onnx.convert.from_function`` like the model, and checked against ``tf.GradientTape`` on
test images before it is written.

The graph ``explain.onnx`` takes ``images`` float32 (N, 28, 28, 1) and ``targets`` int64 (N,)
and returns:

- ``target_logit`` (N,): the target class's score before the softmax;
- ``input_gradient`` (N, 28, 28, 1): its gradient with respect to the input (what integrated
  gradients integrates);
- ``gradcam`` (N, h, w): Grad-CAM over the last convolution (Selvaraju et al., 2017): its
  channels weighted by the spatial mean of the score's gradient, summed, ReLU.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx
from keras import layers
from onnx import numpy_helper

from model_card import sha256_of
from training.architectures import build_model

OPSET = 17
EXPLAIN_FILE = "explain.onnx"
METHODS = ["integrated_gradients", "gradcam"]
TOLERANCE = 1e-4  # Largest gradient difference from GradientTape, relative to its largest value.


class UnsupportedArchitectureError(ValueError):
    """A layer the written-out backward pass does not cover."""


def _check_layers(model: keras.Model) -> None:
    for layer in model.layers[1:]:
        if isinstance(layer, layers.Conv2D):
            ok = layer.padding == "valid" and layer.strides == (1, 1)
        elif isinstance(layer, layers.MaxPooling2D):
            ok = layer.pool_size == (2, 2) and layer.strides == (2, 2)
        else:
            ok = isinstance(layer, layers.Dense | layers.Dropout | layers.Flatten)
        if not ok:
            raise UnsupportedArchitectureError(f"no explanation graph for layer {layer.name}")


def _pool_backward(before: tf.Tensor, gradient: tf.Tensor) -> tf.Tensor:
    """A 2x2 max pool's input gradient: the output's gradient at the window's maximum, the
    first one in row-major order when several are equal, as ``MaxPoolGrad`` does (constant
    regions, a flat background's activations, tie everywhere). An odd last row or column,
    which the pool leaves out, gets none.

    Args:
        before: (N, H, W, C); gradient: (N, H // 2, W // 2, C).
    """
    count = tf.shape(before)[0]
    height, width, channels = before.shape[1], before.shape[2], before.shape[3]
    rows, columns = height // 2, width // 2
    kept = before[:, : 2 * rows, : 2 * columns, :]
    blocks = tf.reshape(kept, [count, rows, 2, columns, 2, channels])
    windows = tf.reshape(
        tf.transpose(blocks, [0, 1, 3, 5, 2, 4]), [count, rows, columns, channels, 4]
    )
    first_max = tf.one_hot(tf.argmax(windows, axis=-1), 4, dtype=tf.float32)
    spread = first_max * gradient[..., tf.newaxis]
    spread = tf.reshape(spread, [count, rows, columns, channels, 2, 2])
    spread = tf.reshape(
        tf.transpose(spread, [0, 1, 4, 2, 5, 3]), [count, 2 * rows, 2 * columns, channels]
    )
    return tf.pad(spread, [[0, 0], [0, height - 2 * rows], [0, width - 2 * columns], [0, 0]])


def _conv_backward(gradient: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """A valid 3x3 convolution's input gradient, as a forward convolution: the output's
    gradient padded by 2, against the kernel flipped and with its channels swapped."""
    padded = tf.pad(gradient, [[0, 0], [2, 2], [2, 2], [0, 0]])
    flipped = tf.transpose(tf.reverse(kernel, axis=[0, 1]), [0, 1, 3, 2])
    return tf.nn.conv2d(padded, flipped, strides=1, padding="VALID")


def explanation_function(model: keras.Model) -> tf.types.experimental.GenericFunction:
    """The tf.function behind ``explain.onnx`` (see the module docstring)."""
    _check_layers(model)
    chain = [layer for layer in model.layers[1:] if not isinstance(layer, layers.Dropout)]
    convolutions = [i for i, layer in enumerate(chain) if isinstance(layer, layers.Conv2D)]
    last_conv = convolutions[-1] if convolutions else None  # An MLP has no Grad-CAM.
    signature = [
        tf.TensorSpec([None, 28, 28, 1], tf.float32, name="images"),
        tf.TensorSpec([None], tf.int64, name="targets"),
    ]

    @tf.function(input_signature=signature)
    def explain(images: tf.Tensor, targets: tf.Tensor) -> dict[str, tf.Tensor]:
        values, saved = images, []
        activations = None
        for index, layer in enumerate(chain):  # Forward, keeping what the backward pass needs.
            saved.append(values)
            if isinstance(layer, layers.Conv2D):
                values = tf.nn.conv2d(values, layer.kernel, 1, "VALID") + layer.bias
            elif isinstance(layer, layers.Dense):
                values = tf.matmul(values, layer.kernel) + layer.bias
            elif isinstance(layer, layers.MaxPooling2D):
                values = tf.nn.max_pool2d(values, 2, 2, "VALID")
            else:
                values = tf.reshape(values, [tf.shape(values)[0], -1])
            saved.append(values)  # Pre-activation.
            if index < len(chain) - 1 and isinstance(layer, layers.Conv2D | layers.Dense):
                values = tf.nn.relu(values)
            if index == last_conv:
                activations = values
        logits = values
        target_logit = tf.gather(logits, targets, batch_dims=1)
        gradient = tf.one_hot(targets, logits.shape[-1], dtype=tf.float32)
        for index in range(len(chain) - 1, -1, -1):
            layer, before, pre = chain[index], saved[2 * index], saved[2 * index + 1]
            if index == last_conv:  # The gradient with respect to its (ReLU'd) activations.
                weights = tf.reduce_mean(gradient, axis=[1, 2], keepdims=True)
                gradcam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))
            if index < len(chain) - 1 and isinstance(layer, layers.Conv2D | layers.Dense):
                gradient = gradient * tf.cast(pre > 0, tf.float32)
            if isinstance(layer, layers.Conv2D):
                gradient = _conv_backward(gradient, layer.kernel)
            elif isinstance(layer, layers.Dense):
                gradient = tf.matmul(gradient, layer.kernel, transpose_b=True)
            elif isinstance(layer, layers.MaxPooling2D):
                gradient = _pool_backward(before, gradient)
            else:
                gradient = tf.reshape(gradient, tf.shape(before))
        if last_conv is None:
            gradcam = tf.zeros([tf.shape(images)[0], 1, 1])
        return {
            "target_logit": tf.identity(target_logit, name="target_logit"),
            "input_gradient": tf.identity(gradient, name="input_gradient"),
            "gradcam": tf.identity(gradcam, name="gradcam"),
        }

    return explain


def tape_reference(model: keras.Model, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The target logit's input gradient by ``tf.GradientTape`` on the Keras model itself."""
    head = model.layers[-1]
    body = keras.Model(model.inputs, model.layers[-2].output)
    tensor = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        logits = tf.matmul(body(tensor, training=False), head.kernel) + head.bias
        score = tf.gather(logits, tf.constant(targets), batch_dims=1)
    return np.asarray(tape.gradient(score, tensor))


class ExplanationCheckError(ValueError):
    """The exported graph does not match ``tf.GradientTape``."""


def export_explainers(model: keras.Model, model_dir: Path, check_images: np.ndarray) -> dict:
    """Write ``explain.onnx`` beside the model, checked, and record it in ``model.json``.

    Args:
        check_images: float32 (N, 28, 28, 1) test images to check it on.

    Raises:
        UnsupportedArchitectureError: a layer the backward pass does not cover.
        ExplanationCheckError: the ONNX graph's gradients differ from GradientTape's.
    """
    function = explanation_function(model)
    path = model_dir / EXPLAIN_FILE
    tf2onnx.convert.from_function(
        function, input_signature=function.input_signature, opset=OPSET, output_path=str(path)
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probabilities = np.asarray(model(check_images, training=False))
    targets = probabilities.argmax(axis=1).astype(np.int64)
    exported = session.run(["input_gradient"], {"images": check_images, "targets": targets})[0]
    reference = tape_reference(model, check_images, targets)
    difference = float(np.abs(exported - reference).max() / np.abs(reference).max())
    if difference > TOLERANCE:
        path.unlink()
        raise ExplanationCheckError(
            f"explain.onnx's gradients differ from GradientTape's by {difference:.2g} (relative)"
        )
    convolutions = [layer.name for layer in model.layers if isinstance(layer, layers.Conv2D)]
    entry = {
        "file": EXPLAIN_FILE,
        "sha256": sha256_of(path),
        "methods": METHODS if convolutions else ["integrated_gradients"],
        "gradcam_layer": convolutions[-1] if convolutions else None,
        "verification": {
            "images": int(check_images.shape[0]),
            "max_relative_gradient_difference_vs_gradient_tape": difference,
        },
    }
    card_path = model_dir / "model.json"
    card = json.loads(card_path.read_text())
    card["explainers"] = entry
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return entry


def keras_model_from_onnx(model_dir: Path, architecture: str) -> keras.Model:
    """The Keras model of an exported ``model.onnx`` (for models whose training run is gone):
    the architecture rebuilt, each layer's weights read from the ONNX initializers tf2onnx wrote
    for it (convolution kernels back from OIHW to HWIO).

    Raises:
        ValueError: a layer's weights are not found in the ONNX file.
    """
    model = build_model(architecture)
    graph = onnx.load(str(model_dir / "model.onnx")).graph
    weights = {item.name: numpy_helper.to_array(item) for item in graph.initializer}

    def find(layer: str, part: str) -> np.ndarray:
        found = [value for name, value in weights.items() if f"/{layer}_1/{part}" in name]
        if len(found) != 1:
            raise ValueError(f"{layer}: {len(found)} ONNX initializers for {part}")
        return found[0]

    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kernel = find(layer.name, "convolution/ReadVariableOp").transpose(2, 3, 1, 0)
            layer.set_weights([kernel, find(layer.name, "Squeeze")])
        elif isinstance(layer, layers.Dense):
            layer.set_weights(
                [
                    find(layer.name, "Cast/ReadVariableOp"),
                    find(layer.name, "BiasAdd/ReadVariableOp"),
                ]
            )
    return model
