"""A tiny train -> evaluate -> export -> verify -> serve round trip on real MNIST digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from model_card import sha256_of
from service.repository import read_model_card
from service.runtime import ModelRuntime
from training.data import MNIST_LABELS, Splits, scale_images
from training.export import ExportCheckError, verify_onnx
from training.pipeline import REPORT_FILES, run_evaluate, run_export, run_train
from training.train import TrainConfig


@pytest.fixture(scope="module")
def tiny_splits(mnist_digits: tuple[np.ndarray, np.ndarray]) -> Splits:
    images, labels = mnist_digits
    scaled = scale_images(images)
    return Splits(
        x_train=scaled[:300],
        y_train=labels[:300],
        x_val=scaled[300:400],
        y_val=labels[300:400],
        x_test=scaled[400:],
        y_test=labels[400:],
        labels=MNIST_LABELS,
        source="fixture",
    )


@pytest.fixture(scope="module")
def exported(tiny_splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("roundtrip")
    run_dir, model_dir = root / "runs" / "tiny", root / "models" / "tiny-deep-cnn"
    config = TrainConfig(
        architecture="deep_cnn",
        epochs=2,
        batch_size=32,
        seed=3,
        early_stopping_patience=0,
        reduce_lr_patience=0,
        augment="drawings",
    )
    model = run_train(config, tiny_splits, run_dir)
    run_evaluate(model, tiny_splits, run_dir)
    run_export(model, tiny_splits, run_dir, model_dir, version="7", verify_images=100)
    return {"run_dir": run_dir, "model_dir": model_dir}


def test_training_writes_model_history_and_curves(exported: dict[str, Path]) -> None:
    run_dir = exported["run_dir"]
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["loss"]) == 2 and len(history["val_accuracy"]) == 2
    for name in ("model.keras", "train_config.json", "learning_curves.png"):
        assert (run_dir / name).stat().st_size > 0


def test_evaluation_writes_metrics_and_plots(exported: dict[str, Path]) -> None:
    metrics = json.loads((exported["run_dir"] / "metrics.json").read_text())
    assert metrics["test_samples"] == 100
    assert np.asarray(metrics["confusion_matrix"]).sum() == 100
    assert set(metrics["per_class_accuracy"]) == set(MNIST_LABELS)
    for report in REPORT_FILES:
        assert (exported["model_dir"] / report).stat().st_size > 0


def test_model_card_describes_the_onnx_file(exported: dict[str, Path]) -> None:
    model_dir = exported["model_dir"]
    card = json.loads((model_dir / "model.json").read_text())
    assert card["name"] == "tiny-deep-cnn" and card["version"] == "7"
    assert card["files"]["sha256"] == sha256_of(model_dir / "model.onnx")
    assert card["framework"]["opset"] == 17
    assert card["labels"] == MNIST_LABELS
    assert card["preprocessing"]["default"] == "mnist"
    # Its gradient graph, exported from the trained Keras model and checked against the tape.
    assert card["explainers"]["methods"] == ["integrated_gradients", "gradcam"]
    assert card["explainers"]["sha256"] == sha256_of(model_dir / "explain.onnx")
    assert [layer["layer"] for layer in card["feature_maps"]] == [
        "conv1",
        "conv2",
        "pool1",
        "conv3",
        "conv4",
        "pool2",
    ]
    assert card["feature_maps"][0]["shape"] == [26, 26, 32]
    assert card["feature_maps"][-1]["shape"] == [4, 4, 64]
    assert card["verification"]["images"] == 100
    assert card["training"]["architecture"] == "deep_cnn"


def test_onnx_has_dynamic_batch_and_named_outputs(exported: dict[str, Path]) -> None:
    session = ort.InferenceSession(str(exported["model_dir"] / "model.onnx"))
    (model_input,) = session.get_inputs()
    assert model_input.name == "input" and model_input.shape[1:] == [28, 28, 1]
    assert not isinstance(model_input.shape[0], int)
    names = [output.name for output in session.get_outputs()]
    assert set(names) == {"probabilities", "conv1", "conv2", "pool1", "conv3", "conv4", "pool2"}
    batch = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    probabilities, pool2 = session.run(["probabilities", "pool2"], {"input": batch})
    assert probabilities.shape == (5, 10) and pool2.shape == (5, 4, 4, 64)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_service_runtime_loads_the_export(exported: dict[str, Path], tiny_splits: Splits) -> None:
    runtime = ModelRuntime(exported["model_dir"], intra_op_threads=1)
    assert runtime.predict(tiny_splits.x_test[:3]).shape == (3, 10)
    assert read_model_card(exported["model_dir"]).name == "tiny-deep-cnn"


def test_verification_fails_loudly_on_a_different_model(
    exported: dict[str, Path], tiny_splits: Splits
) -> None:
    from training.architectures import build_model

    untrained = build_model("deep_cnn")
    with pytest.raises(ExportCheckError, match="differs from Keras"):
        verify_onnx(untrained, exported["model_dir"] / "model.onnx", tiny_splits.x_test[:50])
