"""The tutorial architectures: parameter counts from their model.summary(), stable layer names."""

from __future__ import annotations

import pytest

from training.architectures import ARCHITECTURES, build_model, feature_map_layers

EXPECTED_PARAMETERS = {
    "mlp": 335_114,
    "cnn": 217_194,
    "deep_cnn": 329_962,
    "convnet": 104_202,
    "convnet_no_pool": 712_202,
}
EXPECTED_FEATURE_LAYERS = {
    "mlp": [],
    "cnn": ["conv1", "pool1", "conv2", "pool2"],
    "deep_cnn": ["conv1", "conv2", "pool1", "conv3", "conv4", "pool2"],
    "convnet": ["conv1", "pool1", "conv2", "pool2", "conv3"],
    "convnet_no_pool": ["conv1", "conv2", "conv3"],
}


def test_every_architecture_is_covered() -> None:
    assert set(ARCHITECTURES) == set(EXPECTED_PARAMETERS)


@pytest.mark.parametrize("architecture", sorted(EXPECTED_PARAMETERS))
def test_parameter_count_matches_tutorial(architecture: str) -> None:
    assert build_model(architecture).count_params() == EXPECTED_PARAMETERS[architecture]


@pytest.mark.parametrize("architecture", sorted(EXPECTED_FEATURE_LAYERS))
def test_feature_map_layers_are_named_stably(architecture: str) -> None:
    model = build_model(architecture)
    assert feature_map_layers(model) == EXPECTED_FEATURE_LAYERS[architecture]
    assert model.output_shape == (None, 10)
    assert model.input_shape == (None, 28, 28, 1)


def test_deep_cnn_layer_order_is_the_tutorial_one() -> None:
    kinds = [type(layer).__name__ for layer in build_model("deep_cnn").layers[1:]]
    assert kinds == [
        "Conv2D",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Conv2D",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_model("resnet")
