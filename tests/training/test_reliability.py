"""training/reliability.py on synthetic data whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from training.reliability import (
    calibrated,
    expected_calibration_error,
    fit_distance,
    fit_temperature,
)


def overconfident(temperature: float, count: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities made over-sure by ``temperature`` from labels drawn at the true ones."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (count, 10))
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(10, p=row) for row in true])
    sharpened = np.exp(logits * temperature)
    return sharpened / sharpened.sum(axis=1, keepdims=True), labels


def test_temperature_scaling_undoes_a_known_overconfidence() -> None:
    probabilities, labels = overconfident(2.0)
    temperature = fit_temperature(probabilities, labels)
    assert temperature == pytest.approx(2.0, rel=0.1)
    assert expected_calibration_error(calibrated(probabilities, temperature), labels) < 0.03
    assert expected_calibration_error(probabilities, labels) > 0.1


def test_distance_is_small_for_the_classes_and_large_elsewhere() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 5, (3, 20))
    labels = rng.integers(0, 3, 3000)
    features = centres[labels] + rng.normal(0, 1, (3000, 20))
    model = fit_distance(features, labels, 3)
    inside = model.distances(
        (centres[labels[:200]] + rng.normal(0, 1, (200, 20))).astype(np.float32)
    )
    outside = model.distances(rng.normal(0, 5, (200, 20)).astype(np.float32) + 20)
    # Squared distances in 20 whitened dimensions: about 20 for the classes' own points.
    assert np.median(inside) == pytest.approx(20, rel=0.3)
    assert inside.max() < outside.min()
