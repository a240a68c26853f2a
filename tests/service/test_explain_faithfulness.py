"""Tests from the literature that /explain's saliency maps mean something: completeness
(integrated gradients), deletion (every method) and model randomisation (every method)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from service.explain import (
    IG_MAX_STEPS,
    IG_STEPS,
    METHODS,
    Explanation,
    Forward,
    GradientsOf,
    deletion_curve,
    explanations_by,
    integrated_gradients,
    occlusion,
)
from service.runtime import Gradients, ModelRuntime
from tests.conftest import MODELS_DIR

MODEL = "mnist-deep-cnn"
Digits = tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    return ModelRuntime(MODELS_DIR / MODEL, 2)


def as_inputs(images: np.ndarray) -> np.ndarray:
    return (images / 255.0).astype(np.float32)[..., np.newaxis]


def explained(
    runtime: ModelRuntime,
    method: str,
    images: np.ndarray,
    gradients: GradientsOf | None = None,
    max_steps: int = IG_MAX_STEPS,
) -> list[Explanation]:
    """Each image's map for its predicted class (``gradients``: another gradient graph)."""
    gradients = gradients or runtime.gradients
    targets: list[int | None] = [None] * len(images)
    return explanations_by(method, runtime.predict, gradients, images, targets, max_steps)


def test_integrated_gradients_are_complete(runtime: ModelRuntime, mnist_digits: Digits) -> None:
    """Sundararajan et al. (2017): the attributions add up to the target logit's change from
    the black baseline, within 2 %, on 100 test digits (for the predicted class, and for class
    3 as the logit contrast with the predicted one)."""
    images = as_inputs(mnist_digits[0][:100])
    for wanted in (None, 3):
        _, explanations = integrated_gradients(
            runtime.predict, runtime.gradients, images, [wanted] * len(images)
        )
        for image, explanation in zip(images, explanations, strict=True):
            ends = np.stack([np.zeros_like(image), image])
            target = np.full(2, explanation.target, dtype=np.int64)
            logits = runtime.gradients(ends, target).logit
            predicted = int(runtime.predict(image[np.newaxis]).argmax())
            if explanation.target != predicted:
                against = np.full(2, predicted, dtype=np.int64)
                logits = logits - runtime.gradients(ends, against).logit
            change = float(logits[1] - logits[0])
            total = float(explanation.saliency.sum())
            assert abs(total - change) <= 0.02 * abs(change), (total, change)


def deletion_areas(runtime: ModelRuntime, method: str, images: np.ndarray) -> tuple[float, float]:
    """Petsiuk et al.'s deletion metric: the mean area under the target's probability as
    inked pixels go in saliency order, and in a random order (seeded)."""
    generator = np.random.default_rng(0)
    by_saliency, at_random = [], []
    for image, explanation in zip(images, explained(runtime, method, images), strict=True):
        order = np.argsort(-explanation.saliency.ravel())
        by_saliency.append(deletion_curve(runtime.predict, image, explanation.target, order).mean())
        shuffled = generator.permutation(image.size)
        at_random.append(
            deletion_curve(runtime.predict, image, explanation.target, shuffled).mean()
        )
    return float(np.mean(by_saliency)), float(np.mean(at_random))


@pytest.mark.parametrize("method", METHODS)
def test_deleting_pixels_in_saliency_order_lowers_the_target_faster_than_at_random(
    runtime: ModelRuntime, mnist_digits: Digits, method: str
) -> None:
    """The area under the deletion curve, saliency order against a random order, on 100 test
    digits (500 in docs/explanations.md)."""
    by_saliency, at_random = deletion_areas(runtime, method, as_inputs(mnist_digits[0][:100]))
    assert by_saliency < 0.8 * at_random


def randomised_session(tmp_path: Path, file: str = "model.onnx") -> ort.InferenceSession:
    """The network (or its gradient graph) with every weight re-drawn at its layer's scale
    (Adebayo et al.'s cascading randomisation, all layers at once)."""
    graph = onnx.load(str(MODELS_DIR / MODEL / file))
    generator = np.random.default_rng(1)
    for initializer in graph.graph.initializer:
        values = numpy_helper.to_array(initializer)
        if values.dtype == np.float32 and values.ndim >= 2:
            redrawn = generator.normal(0.0, float(values.std()), values.shape).astype(np.float32)
            initializer.CopyFrom(numpy_helper.from_array(redrawn, initializer.name))
    path = tmp_path / f"randomised-{file}"
    onnx.save(graph, str(path))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def randomised_forward(tmp_path: Path, runtime: ModelRuntime) -> Forward:
    """The plain run of the randomised network."""
    session = randomised_session(tmp_path)
    output, name = runtime.card.probabilities_output, runtime.card.input.name

    def forward(images: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([output], {name: images})[0])

    return forward


def randomised_gradients(tmp_path: Path) -> GradientsOf:
    """The gradient graph of the randomised network."""
    session = randomised_session(tmp_path, "explain.onnx")

    def gradients(images: np.ndarray, targets: np.ndarray) -> Gradients:
        outputs = session.run(
            ["target_logit", "input_gradient", "gradcam"], {"images": images, "targets": targets}
        )
        return Gradients(*outputs)

    return gradients


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    ranks = [
        np.argsort(np.argsort(values.ravel())).astype(np.float64) for values in (first, second)
    ]
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def inked_correlations(
    images: np.ndarray, first: list[Explanation], second: list[Explanation]
) -> list[float]:
    """Per image, the rank correlation of two maps on its inked pixels: where the digit's
    shape alone would make any two maps agree (integrated gradients multiply by the input,
    so off the ink every map is 0)."""
    return [
        rank_correlation(one.saliency[inked], other.saliency[inked])
        for one, other, inked in zip(first, second, images[..., 0] > 0.3, strict=True)
    ]


def test_occlusion_of_a_randomised_network_is_unrelated_to_the_trained_one(
    runtime: ModelRuntime, mnist_digits: Digits, tmp_path: Path
) -> None:
    """Adebayo et al. (2018): a map that survives re-initialising the weights shows the input,
    not what the network learned; while the same network's maps with a 4x4 patch agree."""
    randomised = randomised_forward(tmp_path, runtime)
    images = as_inputs(mnist_digits[0][:30])
    _, trained = occlusion(runtime.predict, images, [None] * len(images))
    targets: list[int | None] = [explanation.target for explanation in trained]
    _, redrawn = occlusion(randomised, images, targets)
    _, finer = occlusion(runtime.predict, images, targets, patch=4)
    assert abs(float(np.median(inked_correlations(images, trained, redrawn)))) < 0.3
    assert float(np.median(inked_correlations(images, trained, finer))) > 0.7


@pytest.mark.parametrize("method", ["integrated_gradients", "gradcam"])
def test_gradient_maps_of_a_randomised_network_are_unrelated(
    runtime: ModelRuntime, mnist_digits: Digits, tmp_path: Path, method: str
) -> None:
    """Adebayo et al. (2018) for the gradient methods (integrated gradients at a fixed 64
    steps: a random network's gradients jump too often for the completeness loop)."""
    images = as_inputs(mnist_digits[0][:30])
    trained = explained(runtime, method, images, max_steps=IG_STEPS)
    redrawn = explained(runtime, method, images, randomised_gradients(tmp_path), IG_STEPS)
    assert abs(float(np.median(inked_correlations(images, trained, redrawn)))) < 0.3
