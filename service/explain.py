"""Why the network gave its answer: a saliency map per image, in the model's input space.

``occlusion`` (Zeiler and Fergus, 2014) works for every model, the int8 one included, since it
needs only forward passes: a square patch of the input is set to the baseline (0, no ink) at
every position of a grid, all the occluded copies run in batches, and each pixel's saliency is
the mean drop of the target class's log-probability over the patches that covered it (log, so
that a confident class, whose probability barely moves, and an unlikely one, "why not 9?",
both get a readable map). For a class other than the predicted one ("why not 9?") the score is
the contrast log p(9) - log p(predicted), so that the map shows what makes the answer 7 rather
than 9, not merely everything that makes it look unlike a 9. Positive:
the pixel's ink speaks for the target; negative: against it (ink whose removal makes the target
more likely, the stroke that turns a 1 into a 7). Zero where covering changes nothing.

Faithfulness is tested, not assumed (``tests/service/test_explain.py``): deleting pixels in
saliency order lowers the target probability much faster than deleting them in random order
(Petsiuk et al., 2018), and the maps of a network with re-initialised weights are unrelated to
the trained network's (Adebayo et al., 2018).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from service.runtime import Gradients

METHODS = ("integrated_gradients", "gradcam", "occlusion")
# Integrated gradients' midpoint sum starts at IG_STEPS points and doubles, up to IG_MAX_STEPS,
# until the attributions add up to f(image) - f(baseline) within IG_COMPLETENESS (relative):
# a ReLU network's gradient jumps along the path, so a fixed number is too few for some images.
IG_STEPS = 64
IG_MAX_STEPS = 2048
IG_COMPLETENESS = 0.02
OCCLUSION_PATCH = 5  # pixels of the 28x28 input: about a stroke's width and a half
OCCLUSION_STRIDE = 2
OCCLUSION_BASELINE = 0.0  # no ink
MAX_BATCH = 256  # occluded copies per forward run

Forward = Callable[[np.ndarray], np.ndarray]
"""float32 (N, H, W, 1) -> float32 (N, classes) probabilities."""
GradientsOf = Callable[[np.ndarray, np.ndarray], Gradients]
"""(images float32 (N, H, W, 1), targets int64 (N,)) -> the gradient graph's outputs."""


@dataclass(frozen=True)
class Explanation:
    """One image's saliency for one target class.

    ``saliency``: float32 (H, W), signed, in units of the target's natural log-probability.
    """

    target: int
    method: str
    saliency: np.ndarray
    details: dict[str, float | int] | None = None  # e.g. integrated gradients' steps


def patch_origins(side: int, patch: int, stride: int) -> list[int]:
    """Where a patch starts along one side, so that the last one ends at the edge."""
    origins = list(range(0, side - patch + 1, stride))
    if origins[-1] != side - patch:
        origins.append(side - patch)
    return origins


def occlusion(
    forward: Forward,
    images: np.ndarray,
    targets: list[int | None],
    patch: int = OCCLUSION_PATCH,
    stride: int = OCCLUSION_STRIDE,
) -> tuple[np.ndarray, list[Explanation]]:
    """Occlusion saliency of each image for its target (None: the predicted class).

    Args:
        forward: the model's plain run.
        images: float32 (N, H, W, 1) in the model's input space.

    Returns:
        The probabilities of the unoccluded images, float32 (N, classes), and one
        ``Explanation`` per image.
    """
    probabilities = _batched(forward, images)
    _, height, width, _ = images.shape
    rows, columns = patch_origins(height, patch, stride), patch_origins(width, patch, stride)
    positions = [(row, column) for row in rows for column in columns]
    explanations = []
    chosen, predictions = _targets(probabilities, targets)
    pairs = zip(chosen.tolist(), predictions.tolist(), strict=True)
    for index, (target, predicted) in enumerate(pairs):
        copies = np.repeat(images[index : index + 1], len(positions), axis=0)
        for copy, (row, column) in zip(copies, positions, strict=True):
            copy[row : row + patch, column : column + patch] = OCCLUSION_BASELINE
        occluded = _batched(forward, copies)
        drops = _score(probabilities[index : index + 1], target, predicted) - _score(
            occluded, target, predicted
        )
        total = np.zeros((height, width), dtype=np.float64)
        covered = np.zeros((height, width), dtype=np.float64)
        for drop, (row, column) in zip(drops, positions, strict=True):
            total[row : row + patch, column : column + patch] += drop
            covered[row : row + patch, column : column + patch] += 1
        saliency = (total / np.maximum(covered, 1)).astype(np.float32)
        explanations.append(Explanation(target, "occlusion", saliency))
    return probabilities, explanations


def _score(probabilities: np.ndarray, target: int, predicted: int) -> np.ndarray:
    """log p(target), less log p(predicted) when the target is another class: (N,)."""
    score = _log(probabilities[:, target])
    if target != predicted:
        score = score - _log(probabilities[:, predicted])
    return score


def _log(probabilities: np.ndarray) -> np.ndarray:
    return np.asarray(np.log(np.clip(probabilities, 1e-12, 1.0)))


def _batched(forward: Forward, images: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [forward(images[start : start + MAX_BATCH]) for start in range(0, len(images), MAX_BATCH)]
    )


def deletion_curve(
    forward: Forward, image: np.ndarray, target: int, order: np.ndarray, steps: int = 20
) -> np.ndarray:
    """The target's probability as the pixels are set to the baseline in ``order``, in
    ``steps`` equal parts of the image's inked pixels (Petsiuk et al.'s deletion metric).

    Args:
        image: float32 (H, W, 1); order: pixel indices (flattened), most important first.

    Returns:
        float32 (steps + 1,), from the untouched image to every inked pixel removed.
    """
    inked = set(np.flatnonzero(image[..., 0] > 0).tolist())
    ranked = [pixel for pixel in order.tolist() if pixel in inked]
    copies = np.repeat(image[np.newaxis], steps + 1, axis=0)
    for step in range(1, steps + 1):
        removed = ranked[: round(step * len(ranked) / steps)]
        copies[step].reshape(-1)[removed] = OCCLUSION_BASELINE
    return _batched(forward, copies)[:, target].astype(np.float32)


def _contrasted(
    gradients_of: GradientsOf, images: np.ndarray, targets: np.ndarray, predicted: np.ndarray
) -> Gradients:
    """The gradient graph for ``targets``, less the same for ``predicted`` where they differ:
    the contrast z(target) - z(predicted) that "why not 9?" asks about (linear, so integrated
    gradients stay complete for it)."""
    own = gradients_of(images, targets)
    other = targets != predicted
    if not other.any():
        return own
    against = gradients_of(images, predicted)
    mask = other.astype(np.float32)
    return Gradients(
        own.logit - mask * against.logit,
        own.input - mask[:, None, None, None] * against.input,
        own.gradcam - mask[:, None, None] * against.gradcam,
    )


def _targets(probabilities: np.ndarray, wanted: list[int | None]) -> tuple[np.ndarray, np.ndarray]:
    predicted = probabilities.argmax(axis=1).astype(np.int64)
    targets = np.array(
        [predicted[index] if target is None else target for index, target in enumerate(wanted)],
        dtype=np.int64,
    )
    return targets, predicted


def integrated_gradients(
    forward: Forward,
    gradients_of: GradientsOf,
    images: np.ndarray,
    wanted: list[int | None],
    steps: int = IG_STEPS,
    max_steps: int = IG_MAX_STEPS,
) -> tuple[np.ndarray, list[Explanation]]:
    """Integrated gradients (Sundararajan et al., 2017) of the target's logit (for another class
    than the predicted one, of the logit contrast), from the black baseline, with a midpoint
    sum of ``steps`` points along the straight path: the attributions add up to
    f(image) - f(baseline).

    Returns:
        The probabilities, float32 (N, classes), and one ``Explanation`` per image, its
        ``saliency`` in units of the logit.
    """
    probabilities = _batched(forward, images)
    targets, predicted = _targets(probabilities, wanted)
    explanations = []
    for index in range(images.shape[0]):
        image, target, other = images[index], targets[index], predicted[index]
        ends = np.stack([np.zeros_like(image), image])
        pair = np.array([target, target]), np.array([other, other])
        baseline, end = _contrasted(gradients_of, ends, *pair).logit
        expected = float(end - baseline)
        points = steps
        while True:
            saliency = _path_integral(gradients_of, image, target, other, points)
            error = abs(float(saliency.sum()) - expected) / max(abs(expected), 1e-6)
            if error <= IG_COMPLETENESS or points >= max_steps:
                break
            points *= 2
        details = {"steps": points, "completeness_error": round(error, 5)}
        explanations.append(Explanation(int(target), "integrated_gradients", saliency, details))
    return probabilities, explanations


def _path_integral(
    gradients_of: GradientsOf, image: np.ndarray, target: int, other: int, points: int
) -> np.ndarray:
    """image * the mean gradient at ``points`` midpoints of the path from black: (H, W)."""
    alphas = ((np.arange(points) + 0.5) / points).astype(np.float32)
    total = np.zeros(image.shape, dtype=np.float64)
    for start in range(0, points, MAX_BATCH):
        chunk = alphas[start : start + MAX_BATCH]
        path = chunk[:, None, None, None] * image[np.newaxis]
        targets = np.full(len(chunk), target, dtype=np.int64)
        against = np.full(len(chunk), other, dtype=np.int64)
        total += _contrasted(gradients_of, path, targets, against).input.sum(axis=0)
    return np.asarray((total / points * image)[..., 0], dtype=np.float32)


def gradcam(
    forward: Forward, gradients_of: GradientsOf, images: np.ndarray, wanted: list[int | None]
) -> tuple[np.ndarray, list[Explanation]]:
    """Grad-CAM (Selvaraju et al., 2017) over the last convolution, brought to the input's size
    (bilinear): where that layer's evidence for the target lies. Not signed (ReLU'd) for the
    predicted class; for another class, of the logit contrast, so signed.

    Returns:
        The probabilities, float32 (N, classes), and one ``Explanation`` per image.
    """
    probabilities = _batched(forward, images)
    targets, predicted = _targets(probabilities, wanted)
    maps = _contrasted(gradients_of, images, targets, predicted).gradcam
    height, width = images.shape[1:3]
    explanations = [
        Explanation(int(target), "gradcam", _resized(cam, (height, width)))
        for target, cam in zip(targets, maps, strict=True)
    ]
    return probabilities, explanations


def _resized(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    picture = Image.fromarray(values.astype(np.float32), mode="F")
    resized = picture.resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def explanations_by(
    method: str,
    forward: Forward,
    gradients_of: GradientsOf,
    images: np.ndarray,
    targets: list[int | None],
    max_steps: int = IG_MAX_STEPS,
) -> list[Explanation]:
    """Each image's explanation by ``method`` (one of ``METHODS``; occlusion needs only
    ``forward``), for its target (None: the predicted class)."""
    if method == "integrated_gradients":
        return integrated_gradients(forward, gradients_of, images, targets, max_steps=max_steps)[1]
    if method == "gradcam":
        return gradcam(forward, gradients_of, images, targets)[1]
    return occlusion(forward, images, targets)[1]
