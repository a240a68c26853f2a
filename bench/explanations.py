"""What explanations cost, and whether they are faithful: one run, written to
``docs/explanations.md``.

1. Time: each method in-process for batches of 1 and 16 images beside a plain prediction of
   the same batch (the model's own run), median of ``--rounds`` rounds, for the default model
   (every method) and its int8 variant (occlusion: it has no gradient graph).
2. Deletion (Petsiuk et al., 2018): on the 500 committed MNIST test digits, the target's
   probability as inked pixels are removed in saliency order and in a random order; the area
   under each curve (lower: the map found what the answer rests on).
3. Model randomisation (Adebayo et al., 2018): the median rank correlation, on inked pixels,
   between the trained network's maps and those of the same network with its weights re-drawn.
4. Completeness (Sundararajan et al., 2017) of integrated gradients on the 500 digits: the
   largest relative gap between the attributions' sum and the logit's change, and the steps.

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
from service.explain import IG_STEPS, METHODS, occlusion  # noqa: E402
from service.runtime import ModelRuntime  # noqa: E402
from tests.service.test_explain_faithfulness import (  # noqa: E402
    deletion_areas,
    explained,
    inked_correlations,
    randomised_forward,
    randomised_gradients,
)

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("mnist-deep-cnn", "mnist-deep-cnn-int8")


def timings(runtime: ModelRuntime, method: str, images: np.ndarray, rounds: int) -> list[str]:
    rows = []
    for batch in (1, 16):
        chosen = images[:batch]
        plain, explaining = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            runtime.predict_scored(chosen)
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            explained(runtime, method, chosen)
            explaining.append(time.perf_counter() - started)
        prediction, explanation = statistics.median(plain), statistics.median(explaining)
        rows.append(
            f"| {runtime.name} | {method} | {batch} | {prediction * 1000:.2f} | "
            f"{explanation * 1000:.1f} | {explanation / prediction:.0f}x |"
        )
    return rows


def randomisation(runtime: ModelRuntime, method: str, images: np.ndarray) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        if method == "occlusion":
            trained = explained(runtime, method, images)
            targets: list[int | None] = [explanation.target for explanation in trained]
            _, redrawn = occlusion(randomised_forward(Path(scratch), runtime), images, targets)
        else:
            gradients = randomised_gradients(Path(scratch))
            trained = explained(runtime, method, images, max_steps=IG_STEPS)
            redrawn = explained(runtime, method, images, gradients, IG_STEPS)
    return float(np.median(inked_correlations(images, trained, redrawn)))


def completeness(runtime: ModelRuntime, images: np.ndarray) -> tuple[float, list[int]]:
    explanations = explained(runtime, "integrated_gradients", images)
    details = [explanation.details or {} for explanation in explanations]
    return max(float(d["completeness_error"]) for d in details), [int(d["steps"]) for d in details]


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
        "Runtime threads). `integrated_gradients`: the target logit's input gradient (the "
        "exported gradient graph) averaged over 64 points of the path from a black image, "
        "doubled until the attributions add up to the logit's change within 2 %; `gradcam`: "
        "conv4's channels weighted by the logit's mean gradient there; `occlusion`: a 5x5 "
        "patch blanked at a stride of 2 (169 positions), the drop of the target's "
        "log-probability.",
        "",
        "| model | method | images | plain prediction, ms | explanation, ms | ratio |",
        "|---|---|---|---|---|---|",
    ]
    default, int8 = (ModelRuntime(ROOT / "models" / name, 2) for name in MODELS)
    plan = [(default, method) for method in METHODS] + [(int8, "occlusion")]
    for runtime, method in plan:
        lines += timings(runtime, method, images, args.rounds)
    lines += [
        "",
        "| model | method | deletion AUC, saliency order | random order | ratio | rank "
        "correlation with a randomised network |",
        "|---|---|---|---|---|---|",
    ]
    for runtime, method in plan:
        by_saliency, at_random = deletion_areas(runtime, method, images)
        random_network = randomisation(runtime, method, images[:100])
        lines.append(
            f"| {runtime.name} | {method} | {by_saliency:.3f} | {at_random:.3f} | "
            f"{by_saliency / at_random:.2f} | {random_network:.2f} |"
        )
    worst, steps = completeness(default, images)
    counts = {value: steps.count(value) for value in sorted(set(steps))}
    lines += [
        "",
        "Deletion: 500 test digits, inked pixels removed in 20 steps, AUC of the target's "
        "probability (lower: the map ranked first what the answer rests on). Randomisation: "
        "100 test digits, the median Spearman correlation on inked pixels (near 0: the maps "
        "depend on the learned weights, not on the input alone; integrated gradients at 64 "
        "fixed steps there).",
        "",
        f"Completeness of integrated gradients on the 500 digits: largest gap {worst:.4f} of "
        f"the logit's change; steps used: "
        + ", ".join(f"{value}: {count}" for value, count in counts.items())
        + ".",
    ]
    text = "\n".join(lines) + "\n"
    (ROOT / "docs" / "explanations.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
