"""The steps behind ``python -m training``: train, evaluate, export, and all three in a row.

A run directory (``runs/<name>/``) holds what training produces; export copies the parts the service
and the reader need into ``models/<name>/``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training.data import VALIDATION_SIZE, Splits, load_dataset
from training.evaluate import evaluate_probabilities
from training.explainers import UnsupportedArchitectureError, export_explainers
from training.export import (
    MIN_VERIFY_IMAGES,
    build_model_card,
    export_onnx,
    verify_onnx,
    write_model_card,
)
from training.plots import (
    plot_confusion_matrix,
    plot_filters,
    plot_learning_curves,
    plot_misclassified,
)
from training.train import TrainConfig, save_training_outputs, train_model

REPORT_FILES = (
    "learning_curves.png",
    "misclassified.png",
    "confusion_matrix.png",
    "filters.png",
    "metrics.json",
    "history.json",
)


def load_splits(
    config: TrainConfig, data_source: Path | None, validation_size: int = VALIDATION_SIZE
) -> Splits:
    """The dataset named by ``config.dataset``, from ``data_source`` if given."""
    return load_dataset(config.dataset, data_source, validation_size)


def run_train(config: TrainConfig, splits: Splits, run_dir: Path) -> keras.Model:
    """Train, then save the model, history, config and learning curves into ``run_dir``."""
    started = time.perf_counter()
    model, history = train_model(splits, config)
    config.extra["training_seconds"] = round(time.perf_counter() - started, 1)
    save_training_outputs(model, history, config, run_dir)
    plot_learning_curves(history, run_dir / "learning_curves.png")
    return model


def run_evaluate(model: keras.Model, splits: Splits, run_dir: Path) -> dict[str, Any]:
    """Evaluate on the test split; write ``metrics.json`` and the report plots."""
    probabilities = model.predict(splits.x_test, batch_size=512, verbose=0)
    metrics = evaluate_probabilities(probabilities, splits.y_test, splits.labels)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    predicted = probabilities.argmax(axis=1)
    plot_misclassified(
        splits.x_test, splits.y_test, predicted, splits.labels, run_dir / "misclassified.png"
    )
    plot_confusion_matrix(
        np.asarray(metrics["confusion_matrix"]), splits.labels, run_dir / "confusion_matrix.png"
    )
    first_conv = next((layer for layer in model.layers if layer.name == "conv1"), None)
    if first_conv is not None:
        plot_filters(np.asarray(first_conv.get_weights()[0]), run_dir / "filters.png")
    print(f"test accuracy {metrics['test_accuracy']:.4%}, loss {metrics['test_loss']:.4f}")
    return metrics


EXPLAINER_CHECK_IMAGES = 200


def run_export(
    model: keras.Model,
    splits: Splits,
    run_dir: Path,
    model_dir: Path,
    version: str,
    verify_images: int = MIN_VERIFY_IMAGES,
) -> dict[str, Any]:
    """Export to ``model_dir/model.onnx``, verify against Keras, write ``model.json``."""
    config = TrainConfig(**json.loads((run_dir / "train_config.json").read_text()))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    onnx_path = model_dir / "model.onnx"
    export_onnx(model, onnx_path)
    check_images = splits.x_test[:verify_images]
    differences = verify_onnx(model, onnx_path, check_images)
    card = build_model_card(
        name=model_dir.name,
        version=version,
        model=model,
        onnx_path=onnx_path,
        labels=splits.labels,
        config=config,
        metrics=metrics,
        verification=differences,
        verified_images=len(check_images),
        training_seconds=config.extra.get("training_seconds"),
    )
    write_model_card(card, model_dir / "model.json")
    try:
        explainers = export_explainers(model, model_dir, check_images[:EXPLAINER_CHECK_IMAGES])
        card["explainers"] = explainers
    except UnsupportedArchitectureError as error:  # Occlusion still explains it.
        print(f"no gradient explanations: {error}")
    for report in REPORT_FILES:
        if (run_dir / report).is_file():
            shutil.copyfile(run_dir / report, model_dir / report)
    print(f"exported {onnx_path} (checked on {len(check_images)} test images)")
    return card


def load_trained(run_dir: Path) -> keras.Model:
    """The Keras model saved by ``run_train``."""
    path = run_dir / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"no trained model at {path}; run `python -m training train` first")
    return keras.models.load_model(path)
