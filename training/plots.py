"""The report figures the tutorials draw, saved as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # Headless: no display on servers or in CI.

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def learning_curves_figure(history: dict[str, list[float]]) -> Figure:
    """Train/validation loss (left axis) and accuracy (right axis) per epoch.

    Every epoch is a marker as well as a point on a line, so a one-epoch run still shows.
    """
    epochs = np.arange(1, len(history["loss"]) + 1)
    figure, loss_axis = plt.subplots(figsize=(8, 5))
    loss_axis.plot(epochs, history["loss"], "b-o", label="train loss")
    loss_axis.plot(epochs, history["val_loss"], "b--o", label="validation loss")
    loss_axis.set_xlabel("epoch")
    if len(epochs) <= 20:
        loss_axis.set_xticks(epochs)
    loss_axis.set_ylabel("loss", color="b")
    accuracy_axis = loss_axis.twinx()
    accuracy_axis.plot(epochs, history["accuracy"], "r-s", label="train accuracy")
    accuracy_axis.plot(epochs, history["val_accuracy"], "r--s", label="validation accuracy")
    accuracy_axis.set_ylabel("accuracy", color="r")
    lines = loss_axis.get_lines() + accuracy_axis.get_lines()
    loss_axis.legend(lines, [str(line.get_label()) for line in lines], loc="center right")
    loss_axis.set_title("Learning curves")
    figure.tight_layout()
    return figure


def plot_learning_curves(history: dict[str, list[float]], path: Path) -> None:
    """``learning_curves_figure`` saved as a PNG."""
    figure = learning_curves_figure(history)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_misclassified(
    images: np.ndarray,
    true_labels: np.ndarray,
    predicted_labels: np.ndarray,
    labels: list[str],
    path: Path,
    grid_size: int = 5,
) -> None:
    """A grid of the first misclassified test images, titled ``R: <true> P: <pred>``.

    Args:
        images: float (N, 28, 28, 1) in [0, 1].
        true_labels: int (N,).
        predicted_labels: int (N,).
    """
    wrong = np.flatnonzero(true_labels != predicted_labels)[: grid_size * grid_size]
    figure, axes = plt.subplots(grid_size, grid_size, figsize=(8, 8.6))
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, wrong, strict=False):
        axis.imshow(images[index, :, :, 0], cmap="gray_r")
        axis.set_title(
            f"R: {labels[true_labels[index]]} P: {labels[predicted_labels[index]]}", fontsize=9
        )
    figure.suptitle(f"Misclassified test images ({len(wrong)} shown)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion_matrix(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    """The 10x10 confusion matrix with counts written in each cell."""
    figure, axis = plt.subplots(figsize=(8, 7))
    image = axis.imshow(np.log1p(matrix), cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = np.log1p(matrix).max() / 2
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            color = "white" if np.log1p(matrix[row, column]) > threshold else "black"
            axis.text(
                column,
                row,
                str(matrix[row, column]),
                ha="center",
                va="center",
                fontsize=8,
                color=color,
            )
    figure.colorbar(image, ax=axis, label="log(1 + count)")
    axis.set_title("Confusion matrix (test set)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_filters(kernels: np.ndarray, path: Path) -> None:
    """The first conv layer's 3x3 filters, one tile each.

    Args:
        kernels: float (3, 3, 1, filters), the layer's weights.
    """
    filters = kernels.shape[-1]
    columns = 8
    rows = int(np.ceil(filters / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.2))
    for index, axis in enumerate(np.atleast_1d(axes).flat):
        axis.axis("off")
        if index < filters:
            axis.imshow(kernels[:, :, 0, index], cmap="gray")
            axis.set_title(str(index), fontsize=8)
    figure.suptitle("First convolution layer's filters")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
