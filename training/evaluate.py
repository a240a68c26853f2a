"""Test-set evaluation: loss, accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np

NUM_CLASSES = 10


def confusion_matrix(true_labels: np.ndarray, predicted_labels: np.ndarray) -> np.ndarray:
    """Counts of (true, predicted) pairs.

    Args:
        true_labels: int (N,).
        predicted_labels: int (N,).

    Returns:
        int64 (10, 10): rows are the true class, columns the predicted class.
    """
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (true_labels, predicted_labels), 1)
    return matrix


def evaluate_probabilities(
    probabilities: np.ndarray, true_labels: np.ndarray, labels: list[str]
) -> dict[str, Any]:
    """Summarise a model's test-set predictions.

    Args:
        probabilities: float (N, 10), each row a softmax output.
        true_labels: int (N,).
        labels: the 10 class names.

    Returns:
        A JSON-ready dict: test_loss, test_accuracy, per_class_accuracy, confusion_matrix, counts.
    """
    if probabilities.shape != (true_labels.shape[0], NUM_CLASSES):
        raise ValueError(f"probabilities {probabilities.shape} do not match {true_labels.shape}")
    predicted = probabilities.argmax(axis=1)
    picked = probabilities[np.arange(len(true_labels)), true_labels]
    loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    matrix = confusion_matrix(true_labels, predicted)
    per_class_totals = matrix.sum(axis=1)
    per_class = np.divide(
        np.diag(matrix), per_class_totals, out=np.zeros(NUM_CLASSES), where=per_class_totals > 0
    )
    return {
        "test_samples": int(len(true_labels)),
        "test_loss": round(loss, 6),
        "test_accuracy": round(float(np.mean(predicted == true_labels)), 6),
        "misclassified": int(np.sum(predicted != true_labels)),
        "per_class_accuracy": {
            label: round(float(value), 6) for label, value in zip(labels, per_class, strict=True)
        },
        "confusion_matrix": matrix.tolist(),
    }
