"""What explanations cost, and whether they are faithful: one run, written to
``docs/explanations.md``.

1. Time: ``occlusion`` in-process for batches of 1 and 16 images beside a plain prediction of
   the same batch (the model's own run), median of ``--rounds`` rounds, for the default model
   and its int8 variant.
2. Deletion (Petsiuk et al., 2018): on the 500 committed MNIST test digits, the target's
   probability as inked pixels are removed in saliency order and in a random order; the area
   under each curve (lower: the map found what the answer rests on).
3. Model randomisation (Adebayo et al., 2018): the rank correlation, on inked pixels, between
   the trained network's maps and those of the same network with its weights re-drawn, beside
   the correlation between two patch sizes of the trained network's own maps.

Usage: ``python bench/explanations.py [--rounds 5]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.explain import deletion_curve, occlusion  # noqa: E402
from service.runtime import ModelRuntime  # noqa: E402
from tests.service.test_explain_faithfulness import randomised_session, rank_correlation  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("mnist-deep-cnn", "mnist-deep-cnn-int8")


def timings(runtime: ModelRuntime, images: np.ndarray, rounds: int) -> list[str]:
    rows = []
    for batch in (1, 16):
        chosen = images[:batch]
        plain, explained = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            runtime.predict_scored(chosen)
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            occlusion(runtime.predict, chosen, [None] * batch)
            explained.append(time.perf_counter() - started)
        prediction, explanation = statistics.median(plain), statistics.median(explained)
        rows.append(
            f"| {runtime.name} | {batch} | {prediction * 1000:.2f} | {explanation * 1000:.1f} "
            f"| {explanation / prediction:.0f}x |"
        )
    return rows


def deletion(runtime: ModelRuntime, images: np.ndarray) -> tuple[float, float]:
    _, explanations = occlusion(runtime.predict, images, [None] * len(images))
    generator = np.random.default_rng(0)
    by_saliency, at_random = [], []
    for image, explanation in zip(images, explanations, strict=True):
        order = np.argsort(-explanation.saliency.ravel())
        by_saliency.append(deletion_curve(runtime.predict, image, explanation.target, order).mean())
        shuffled = generator.permutation(image.size)
        at_random.append(
            deletion_curve(runtime.predict, image, explanation.target, shuffled).mean()
        )
    return float(np.mean(by_saliency)), float(np.mean(at_random))


def randomisation(runtime: ModelRuntime, images: np.ndarray) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as scratch:
        session = randomised_session(Path(scratch))
        output, name = runtime.card.probabilities_output, runtime.card.input.name
        _, trained = occlusion(runtime.predict, images, [None] * len(images))
        targets: list[int | None] = [explanation.target for explanation in trained]
        _, redrawn = occlusion(
            lambda batch: np.asarray(session.run([output], {name: batch})[0]), images, targets
        )
    _, finer = occlusion(runtime.predict, images, targets, patch=4)
    against_random, against_itself = [], []
    for image, first, second, third in zip(images, trained, redrawn, finer, strict=True):
        inked = image[..., 0] > 0.3
        against_random.append(rank_correlation(first.saliency[inked], second.saliency[inked]))
        against_itself.append(rank_correlation(first.saliency[inked], third.saliency[inked]))
    return float(np.median(against_random)), float(np.median(against_itself))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with np.load(ROOT / "tests/fixtures/mnist_test_500.npz") as archive:
        images = (archive["images"] / 255.0).astype(np.float32)[..., np.newaxis]
    lines = [
        "# Explanations: cost and faithfulness",
        "",
        "Made by `python bench/explanations.py` (in-process on this 2-core machine, two ONNX "
        "Runtime threads). `occlusion`: a 5x5 patch blanked at a stride of 2 (169 positions), "
        "the drop of the target's log-probability.",
        "",
        "| model | images | plain prediction, ms | occlusion, ms | ratio |",
        "|---|---|---|---|---|",
    ]
    runtimes = [ModelRuntime(ROOT / "models" / name, 2) for name in MODELS]
    for runtime in runtimes:
        lines += timings(runtime, images, args.rounds)
    lines += [
        "",
        "| model | deletion AUC, saliency order | deletion AUC, random order | rank correlation "
        "with a randomised network | with its own 4x4-patch maps |",
        "|---|---|---|---|---|",
    ]
    for runtime in runtimes:
        by_saliency, at_random = deletion(runtime, images)
        random_network, itself = randomisation(runtime, images[:100])
        lines.append(
            f"| {runtime.name} | {by_saliency:.3f} | {at_random:.3f} | {random_network:.2f} "
            f"| {itself:.2f} |"
        )
    lines += [
        "",
        "Deletion: 500 test digits, inked pixels removed in 20 steps, AUC of the target's "
        "probability (lower: the map ranked first what the answer rests on). Randomisation: "
        "100 test digits, the median Spearman correlation on inked pixels (near 0: the maps "
        "depend on the learned weights, not on the input alone).",
    ]
    text = "\n".join(lines) + "\n"
    (ROOT / "docs" / "explanations.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
