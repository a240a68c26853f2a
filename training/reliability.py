"""Knowing when the model does not know: calibrated confidence and a distance from the digits.

Two signals, both fitted here on data the model was not trained on (the validation split) and
read by the service from ``model.json`` and ``reliability.npz`` (with
``service/reliability.py``, which holds the calibration and distance both sides compute):

- **Temperature scaling** (Guo et al. 2017, "On Calibration of Modern Neural Networks"): the
  model's log-probabilities divided by one temperature T, fitted to minimise the validation
  negative log-likelihood. It changes no prediction, only how sure each claims to be. The
  expected calibration error (ECE, 15 equal-width bins) before and after is recorded.
- **Mahalanobis distance** of the last feature map (``pool2``) from the nearest class centre
  under one shared covariance (Lee et al. 2018, "A Simple Unified Framework for Detecting
  Out-of-Distribution Samples"), in the whitened space of its leading principal components.
  Inputs unlike any digit seen in training (blank, noise, letters, clothing, several digits
  squeezed together) lie far from every centre, even where the softmax is sure.

A prediction is *reliable* when its calibrated confidence and its distance are both within the
range that ``RELIABLE_SHARE`` of the validation digits reach.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from model_card import sha256_of
from service.reliability import DistanceModel, calibrated, doubt
from service.runtime import ModelRuntime

RELIABILITY_FILE = "reliability.npz"
FEATURE_LAYER = "pool2"
COMPONENTS = 1024  # Leading principal components kept exactly (pool2 has 1,024: all of them).
SHRINKAGE = 1e-4  # Added to the covariance's eigenvalues (relative to the largest).
# Each test alone keeps this share of validation digits reliable (so >= 98 % pass both).
RELIABLE_SHARE = 0.993
ECE_BINS = 15


@dataclass(frozen=True)
class Outputs:
    """The model's probabilities (N, classes) and flattened features (N, F) for a dataset."""

    probabilities: np.ndarray
    features: np.ndarray


def run_model(model_dir: Path, images: np.ndarray, feature_output: str) -> Outputs:
    """Probabilities and ``feature_output`` activations of float32 (N, H, W, 1) images."""
    card = json.loads((model_dir / "model.json").read_text())
    session = ort.InferenceSession(
        str(model_dir / card["files"]["onnx"]), providers=["CPUExecutionProvider"]
    )
    input_name = card["input"]["name"]
    probabilities, features = [], []
    for start in range(0, images.shape[0], 1000):
        batch = images[start : start + 1000]
        result = session.run(
            [card["outputs"]["probabilities"], feature_output], {input_name: batch}
        )
        probabilities.append(np.asarray(result[0]))
        features.append(np.asarray(result[1]).reshape(batch.shape[0], -1))
    return Outputs(np.concatenate(probabilities), np.concatenate(features))


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    rows = np.arange(labels.shape[0])
    return float(-np.log(np.clip(probabilities[rows, labels], 1e-12, 1.0)).mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.25, 10] minimising the NLL (golden-section search on log T)."""
    low, high = np.log(0.25), np.log(10.0)
    ratio = (np.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return negative_log_likelihood(calibrated(probabilities, float(np.exp(log_t))), labels)

    for _ in range(60):
        first, second = high - ratio * (high - low), low + ratio * (high - low)
        if loss(first) < loss(second):
            high = second
        else:
            low = first
    return float(np.exp((low + high) / 2))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """ECE over ``ECE_BINS`` equal-width confidence bins (Naeini et al. 2015)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    bins = np.minimum((confidence * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    error = 0.0
    for index in range(ECE_BINS):
        members = bins == index
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def fit_distance(features: np.ndarray, labels: np.ndarray, classes: int) -> DistanceModel:
    """Class centres and the shared within-class covariance (Lee et al. 2018), its leading
    ``COMPONENTS`` eigenvectors kept exactly and the rest summarised by their mean eigenvalue."""
    features = features.astype(np.float64)
    centres = np.stack([features[labels == label].mean(axis=0) for label in range(classes)])
    within = features - centres[labels]
    covariance = within.T @ within / within.shape[0]
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    floor = SHRINKAGE * eigenvalues.max()
    kept, rest = order[:COMPONENTS], order[COMPONENTS:]
    return DistanceModel(
        basis=eigenvectors[:, kept].astype(np.float32),
        scales=(eigenvalues[kept] + floor).astype(np.float32),
        residual_scale=float((eigenvalues[rest].clip(0).mean() if rest.size else 0.0) + floor),
        centres=centres.astype(np.float32),
    )


def fit_reliability(
    model_dir: Path,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    source: str,
) -> dict[str, Any]:
    """Fit both signals, write ``reliability.npz`` and the card's ``reliability`` entry.

    Args:
        train, validation: float32 (N, H, W, 1) images in [0, 1] and int labels (N,).
        source: where the data came from, for the card.

    Returns:
        The ``reliability`` entry written into ``model.json``.
    """
    card_path = model_dir / "model.json"
    card = json.loads(card_path.read_text())
    classes = len(card["labels"])
    feature_output = next(
        spec["output"] for spec in card["feature_maps"] if spec["layer"] == FEATURE_LAYER
    )
    fitted = run_model(model_dir, train[0], feature_output)
    held_out = run_model(model_dir, validation[0], feature_output)
    temperature = fit_temperature(held_out.probabilities, validation[1])
    distance_model = fit_distance(fitted.features, train[1].astype(np.int64), classes)
    calibrated_validation = calibrated(held_out.probabilities, temperature)
    distances = distance_model.distances(held_out.features)
    np.savez(
        model_dir / RELIABILITY_FILE,
        basis=distance_model.basis,
        scales=distance_model.scales,
        residual_scale=np.float32(distance_model.residual_scale),
        centres=distance_model.centres,
    )
    entry = {
        "file": RELIABILITY_FILE,
        "sha256": sha256_of(model_dir / RELIABILITY_FILE),
        "feature_output": feature_output,
        "temperature": round(temperature, 4),
        "min_confidence": float(np.quantile(calibrated_validation.max(axis=1), 1 - RELIABLE_SHARE)),
        "max_distance": float(np.quantile(distances, RELIABLE_SHARE)),
        "fitted_on": f"{source}: {train[0].shape[0]} training images (distance), "
        f"{validation[0].shape[0]} held-out validation images (temperature, thresholds)",
        "validation_ece_before": round(
            expected_calibration_error(held_out.probabilities, validation[1]), 5
        ),
        "validation_ece_after": round(
            expected_calibration_error(calibrated_validation, validation[1]), 5
        ),
    }
    card["reliability"] = entry
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return entry


def doubts(model: ModelRuntime, images: np.ndarray) -> np.ndarray:
    """The service's doubt (``service.reliability.doubt``) of (N, H, W) images in [0, 1]."""
    batch = images.astype(np.float32)[..., np.newaxis]
    scored = model.predict_scored(batch)
    return doubt(batch, scored.calibrated.max(axis=1), scored.distances, model.card.reliability)


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney U)."""
    above = (positives[:, np.newaxis] > negatives[np.newaxis]).mean()
    ties = (positives[:, np.newaxis] == negatives[np.newaxis]).mean()
    return float(above + ties / 2)
