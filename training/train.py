"""Fitting a model on the training split, validating on the held-out split."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from training.architectures import DEFAULT_ARCHITECTURE, build_model
from training.augmentation import build_augmenter
from training.data import Splits
from training.explainers import keras_model_from_onnx


@dataclass
class TrainConfig:
    """Everything that decides how a model is trained; recorded in model.json."""

    architecture: str = DEFAULT_ARCHITECTURE
    dataset: str = "mnist"
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    seed: int = 42
    augment: str = "none"  # One of training.augmentation.AUGMENTATIONS.
    early_stopping_patience: int = 4
    reduce_lr_patience: int = 2
    # "plateau": halve the learning rate when validation loss stalls; "cosine": decay it from
    # learning_rate to zero over all epochs along a half cosine (reduce_lr_patience unused).
    lr_schedule: str = "plateau"
    limit_train_samples: int | None = None
    # Fine-tuning: start from the weights of an exported model (a models/<name> directory of
    # the same architecture) instead of a random initialisation.
    initial_weights: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _optimizer(
    name: str, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule
) -> keras.optimizers.Optimizer:
    optimizers = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
        "adadelta": keras.optimizers.Adadelta,
    }
    if name not in optimizers:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(optimizers)}")
    return optimizers[name](learning_rate=learning_rate)


def _training_dataset(splits: Splits, config: TrainConfig) -> tf.data.Dataset:
    x_train, y_train = splits.x_train, splits.y_train
    if config.limit_train_samples is not None:
        x_train = x_train[: config.limit_train_samples]
        y_train = y_train[: config.limit_train_samples]
    dataset = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    dataset = dataset.shuffle(len(x_train), seed=config.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(config.batch_size)
    augmenter = build_augmenter(config.augment, config.seed)
    if augmenter is not None:
        dataset = dataset.map(
            lambda images, labels: (augmenter(images, labels), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _learning_rate(
    config: TrainConfig, train_samples: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    if config.lr_schedule == "plateau":
        return config.learning_rate
    if config.lr_schedule == "cosine":
        samples = min(train_samples, config.limit_train_samples or train_samples)
        steps = config.epochs * -(-samples // config.batch_size)
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps)
    raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}; choose plateau or cosine")


class _EpochTimer(keras.callbacks.Callback):
    """Records the wall-clock seconds of each epoch into the history."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._started


def train_model(splits: Splits, config: TrainConfig) -> tuple[keras.Model, dict[str, list[float]]]:
    """Build and fit ``config.architecture`` on the training split.

    Returns:
        The fitted model (best validation weights when early stopping fires) and its history.
    """
    keras.utils.set_random_seed(config.seed)
    model = (
        keras_model_from_onnx(Path(config.initial_weights), config.architecture)
        if config.initial_weights
        else build_model(config.architecture)
    )
    model.compile(
        optimizer=_optimizer(config.optimizer, _learning_rate(config, len(splits.x_train))),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks: list[keras.callbacks.Callback] = [_EpochTimer()]
    if config.lr_schedule == "plateau" and config.reduce_lr_patience > 0:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=config.reduce_lr_patience, min_lr=1e-5
            )
        )
    if config.early_stopping_patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy",
                patience=config.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    history = model.fit(
        _training_dataset(splits, config),
        validation_data=(splits.x_val, splits.y_val),
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # The tf.data pipeline already reshuffles every epoch.
        verbose=2 if config.extra.get("quiet") else "auto",
    )
    clean_history = {
        key: [float(value) for value in values] for key, values in history.history.items()
    }
    return model, clean_history


def save_training_outputs(
    model: keras.Model, history: dict[str, list[float]], config: TrainConfig, run_dir: Path
) -> None:
    """Write ``model.keras``, ``history.json`` and ``train_config.json`` into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "model.keras")
    (run_dir / "history.json").write_text(json.dumps(history, indent=2))
    (run_dir / "train_config.json").write_text(json.dumps(asdict(config), indent=2))
