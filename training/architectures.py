"""The classic Keras MNIST tutorial models, built with stable layer names.

Every convolution and pooling layer is named (``conv1``, ``pool1``, ...): the exporter turns those
layers into the feature-map outputs of the ONNX model, and the service refers to them by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
from keras import layers

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def _functional(name: str, hidden_layers: Sequence[layers.Layer]) -> keras.Model:
    """Chain layers on a 28x28x1 input and finish with the 10-way softmax."""
    inputs = keras.Input(shape=INPUT_SHAPE, name="image")
    features = inputs
    for layer in hidden_layers:
        features = layer(features)
    probabilities = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(features)
    return keras.Model(inputs, probabilities, name=name)


def _conv(name: str, filters: int) -> layers.Conv2D:
    return layers.Conv2D(filters, kernel_size=3, activation="relu", padding="valid", name=name)


def _pool(name: str) -> layers.MaxPooling2D:
    return layers.MaxPooling2D(pool_size=2, name=name)


def build_mlp() -> keras.Model:
    """Dense 256-256-256 on the flattened pixels (335,114 parameters)."""
    return _functional(
        "mlp",
        [
            layers.Flatten(name="flatten"),
            layers.Dense(256, activation="relu", name="dense1"),
            layers.Dense(256, activation="relu", name="dense2"),
            layers.Dense(256, activation="relu", name="dense3"),
        ],
    )


def build_cnn() -> keras.Model:
    """Two conv/pool blocks and a dense layer (217,194 parameters)."""
    return _functional(
        "cnn",
        [
            _conv("conv1", 32),
            _pool("pool1"),
            _conv("conv2", 32),
            _pool("pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(256, activation="relu", name="dense1"),
        ],
    )


def build_deep_cnn() -> keras.Model:
    """The deep CNN: Conv32-Conv32-Pool-Dropout-Conv64-Conv64-Pool-Dropout-Dense256-Dropout.

    329,962 parameters; the default model of the project.
    """
    return _functional(
        "deep_cnn",
        [
            _conv("conv1", 32),
            _conv("conv2", 32),
            _pool("pool1"),
            layers.Dropout(0.25, name="dropout1"),
            _conv("conv3", 64),
            _conv("conv4", 64),
            _pool("pool2"),
            layers.Dropout(0.25, name="dropout2"),
            layers.Flatten(name="flatten"),
            layers.Dense(256, activation="relu", name="dense1"),
            layers.Dropout(0.5, name="dropout3"),
        ],
    )


def build_convnet() -> keras.Model:
    """The functional 3-conv convnet of the Keras guide (104,202 parameters)."""
    return _functional(
        "convnet",
        [
            _conv("conv1", 32),
            _pool("pool1"),
            _conv("conv2", 64),
            _pool("pool2"),
            _conv("conv3", 128),
            layers.Flatten(name="flatten"),
        ],
    )


def build_convnet_no_pool() -> keras.Model:
    """The 3-conv convnet without its two pools (712,202 parameters)."""
    return _functional(
        "convnet_no_pool",
        [
            _conv("conv1", 32),
            _conv("conv2", 64),
            _conv("conv3", 128),
            layers.Flatten(name="flatten"),
        ],
    )


ARCHITECTURES: dict[str, Callable[[], keras.Model]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "deep_cnn": build_deep_cnn,
    "convnet": build_convnet,
    "convnet_no_pool": build_convnet_no_pool,
}
DEFAULT_ARCHITECTURE = "deep_cnn"


def build_model(architecture: str) -> keras.Model:
    """Build an untrained model by name (see ``ARCHITECTURES``)."""
    try:
        builder = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}"
        ) from None
    return builder()


def feature_map_layers(model: keras.Model) -> list[str]:
    """Names of the conv and pool layers, in forward order: the layers worth looking inside."""
    return [
        layer.name
        for layer in model.layers
        if isinstance(layer, layers.Conv2D | layers.MaxPooling2D)
    ]
