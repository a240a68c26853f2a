"""Whether a prediction can be trusted, and why not: the service's side of
``training/reliability.py`` (calibrated confidence, distance from the digits seen in training).

Each prediction is ``reliable`` unless one of these holds, checked in this order (a model
without a reliability model, such as the fashion one, is judged by the first alone):

- ``blank``: the model's input holds almost no ink (fewer than ``MIN_INK_PIXELS`` pixels);
- ``not one digit``: wider than tall, as several digits side by side become once framed;
- ``does not look like a digit``: its last feature map lies farther from every class centre
  than ``max_distance`` (reached by 0.7 % of held-out digits);
- ``low confidence``: its calibrated confidence is below ``min_confidence``.

The label and probabilities are returned either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_card import ReliabilitySpec, sha256_of
from service.errors import ModelLoadError

MIN_INK_PIXELS = 10  # Pixels above INK_LEVEL in the model's input; MNIST's fewest is about 40.
INK_LEVEL = 0.3
WIDER_THAN_TALL = 1.25  # Width over height of the inked box past which it is not one digit.


@dataclass(frozen=True)
class DistanceModel:
    """The shared-covariance Mahalanobis distance to the nearest class centre (see training)."""

    basis: np.ndarray  # float32 (F, C), orthonormal leading eigenvectors
    scales: np.ndarray  # float32 (C,), their eigenvalues
    residual_scale: float
    centres: np.ndarray  # float32 (classes, F)
    # Computed once: the whitening (F, C) = basis / sqrt(scales), the centres whitened (classes,
    # C) and their squared lengths (classes,), and the centres' squared lengths in full (classes,).
    whitening: np.ndarray = field(init=False, repr=False)
    centres_whitened: np.ndarray = field(init=False, repr=False)
    whitened_norms: np.ndarray = field(init=False, repr=False)
    centre_norms: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        whitening = (self.basis / np.sqrt(self.scales)[np.newaxis]).astype(np.float32)
        centres_whitened = self.centres @ whitening
        object.__setattr__(self, "whitening", whitening)
        object.__setattr__(self, "centres_whitened", centres_whitened)
        object.__setattr__(self, "whitened_norms", (centres_whitened**2).sum(axis=1))
        object.__setattr__(self, "centre_norms", (self.centres**2).sum(axis=1))

    @property
    def full_rank(self) -> bool:
        """Every component kept: nothing is left for the residual term."""
        return bool(self.basis.shape[1] == self.basis.shape[0])

    @classmethod
    def load(cls, model_dir: Path, spec: ReliabilitySpec) -> DistanceModel:
        """Read ``spec.file``, checked against its sha256.

        Raises:
            ModelLoadError: the file is missing, altered or malformed.
        """
        path = model_dir / spec.file
        if not path.is_file() or sha256_of(path) != spec.sha256:
            raise ModelLoadError(f"{path} is missing or does not match its sha256 in model.json")
        try:
            with np.load(path) as archive:
                model = cls(
                    basis=archive["basis"].astype(np.float32),
                    scales=archive["scales"].astype(np.float32),
                    residual_scale=float(archive["residual_scale"]),
                    centres=archive["centres"].astype(np.float32),
                )
        except (KeyError, ValueError, OSError) as error:
            raise ModelLoadError(f"{path} is not a distance model: {error}") from None
        return model

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Squared distance to the nearest class centre.

        In the whitened space, ``|W x - W c|^2 = |W x|^2 - 2 (W x) . (W c) + |W c|^2``: one
        (F, C) product per batch, the rest on (N, classes). The components left out, if any,
        add their squared length over their mean eigenvalue.

        Args:
            features: float32 (N, F), the flattened feature map.

        Returns:
            float32 (N,).
        """
        whitened = features @ self.whitening
        leading = (
            (whitened**2).sum(axis=1)[:, np.newaxis]
            - 2 * whitened @ self.centres_whitened.T
            + self.whitened_norms[np.newaxis]
        )
        total = np.clip(leading, 0.0, None)
        if not self.full_rank:
            total = total + self._residual(features, whitened)
        return np.asarray(total.min(axis=1), dtype=np.float32)

    def _residual(self, features: np.ndarray, whitened: np.ndarray) -> np.ndarray:
        """(N, classes): the part of each offset outside the basis, over ``residual_scale``.
        The offsets' parts inside it come from ``whitened`` (N, C), unwhitened again."""
        root_scales = np.sqrt(self.scales)[np.newaxis]
        projected = whitened * root_scales
        centres_projected = self.centres_whitened * root_scales
        inside = (
            (projected**2).sum(axis=1)[:, np.newaxis]
            - 2 * projected @ centres_projected.T
            + (centres_projected**2).sum(axis=1)[np.newaxis]
        )
        everything = (
            (features**2).sum(axis=1)[:, np.newaxis]
            - 2 * features @ self.centres.T
            + self.centre_norms[np.newaxis]
        )
        return np.asarray(np.clip(everything - inside, 0.0, None) / self.residual_scale)


def calibrated(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): float32 (N, classes), the same ranking, honest confidence."""
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / np.float32(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    exponentials = np.exp(logits)
    return np.asarray(exponentials / exponentials.sum(axis=1, keepdims=True), dtype=np.float32)


def doubt(
    images: np.ndarray,
    confidence: np.ndarray,
    distances: np.ndarray | None,
    spec: ReliabilitySpec | None,
) -> np.ndarray:
    """How far each prediction is past the reliable range, as one number: above 1 where
    ``verdicts`` gives a reason (2 for the blank and several-digit rules), so that one threshold
    ranks every input (what an ROC curve needs). float32 (N,)."""
    reasons = verdicts(images, confidence, distances, spec)
    scores = np.zeros(images.shape[0], dtype=np.float32)
    if spec is not None:
        scores = np.maximum(scores, (1 - confidence) / (1 - spec.min_confidence))
        if distances is not None:
            scores = np.maximum(scores, distances / spec.max_distance)
    rules = np.array([reason in ("blank", "not one digit") for reason in reasons])
    return np.where(rules, np.maximum(scores, 2.0), scores).astype(np.float32)


def verdicts(
    images: np.ndarray,
    confidence: np.ndarray,
    distances: np.ndarray | None,
    spec: ReliabilitySpec | None,
) -> list[str | None]:
    """The reason each prediction is not reliable, or None where it is.

    Args:
        images: float32 (N, H, W, 1), what the model saw.
        confidence: (N,) calibrated confidence of each prediction.
        distances: (N,) distance to the nearest class centre, or None without a distance model.
    """
    ink = images[..., 0] > INK_LEVEL
    reasons: list[str | None] = []
    for index in range(images.shape[0]):
        reasons.append(_reason(ink[index], confidence[index], distances, index, spec))
    return reasons


def _reason(
    ink: np.ndarray,
    confidence: float,
    distances: np.ndarray | None,
    index: int,
    spec: ReliabilitySpec | None,
) -> str | None:
    if int(ink.sum()) < MIN_INK_PIXELS:
        return "blank"
    if spec is None:  # No reliability model (the fashion model): nothing more to judge by.
        return None
    rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if columns[-1] - columns[0] + 1 > WIDER_THAN_TALL * (rows[-1] - rows[0] + 1):
        return "not one digit"
    if distances is not None and distances[index] > spec.max_distance:
        return "does not look like a digit"
    if confidence < spec.min_confidence:
        return "low confidence"
    return None
