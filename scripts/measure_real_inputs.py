"""Measure the committed MNIST models on real-looking input, and write ``docs/real-inputs.md``.

One command for every figure the README quotes about photos and drawings: per-kind accuracy and
reliable share on ``tests/fixtures/drawings`` and ``tests/fixtures/photos``, calibration error
before and after temperature scaling on the 500 committed MNIST test digits, and the AUROC of
the "cannot tell" signal on ``tests/fixtures/not_digits.npz`` against those digits. Everything
runs through the service's own preprocessing and runtime.

Usage: ``python scripts/measure_real_inputs.py``
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.errors import ServiceError  # noqa: E402
from service.preprocessing import ImageLimits, prepare_image  # noqa: E402
from service.reliability import verdicts  # noqa: E402
from service.runtime import ModelRuntime  # noqa: E402
from training.reliability import auroc, doubts, expected_calibration_error  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = ("mnist-deep-cnn", "mnist-deep-cnn-int8")
LIMITS = ImageLimits(max_pixels=16_000_000, max_bytes=8 << 20)


def corpus_results(model: ModelRuntime, corpus: Path) -> dict[str, tuple[float, float, int]]:
    """kind -> (accuracy, share reliable, files); a file refused (422) counts as wrong."""
    hits: dict[str, list[bool]] = defaultdict(list)
    trusted: dict[str, list[bool]] = defaultdict(list)
    for entry in json.loads((corpus / "manifest.json").read_text()):
        notes: set[str] = set()
        try:
            image = prepare_image(
                (corpus / entry["file"]).read_bytes(),
                "mnist",
                model.card.preprocessing,
                LIMITS,
                notes,
            )
        except ServiceError:
            hits[entry["kind"]].append(False)
            trusted[entry["kind"]].append(False)
            continue
        batch = image[np.newaxis, :, :, np.newaxis]
        scored = model.predict_scored(batch)
        reason = verdicts(
            batch, scored.calibrated.max(axis=1), scored.distances, model.card.reliability
        )[0]
        hits[entry["kind"]].append(int(scored.probabilities[0].argmax()) == entry["label"])
        trusted[entry["kind"]].append(reason is None and "several digits" not in notes)
    return {
        kind: (float(np.mean(hits[kind])), float(np.mean(trusted[kind])), len(hits[kind]))
        for kind in sorted(hits)
    }


def main() -> None:
    with np.load(FIXTURES / "mnist_test_500.npz") as archive:
        digits, labels = archive["images"] / 255.0, archive["labels"].astype(np.int64)
    with np.load(FIXTURES / "not_digits.npz") as archive:
        not_digits = {name: archive[name] for name in archive.files if name != "two_digits"}
    lines = [
        "# Real input: accuracy, calibration and knowing when it cannot tell",
        "",
        "Made by `python scripts/measure_real_inputs.py` (service preprocessing and runtime,",
        "in-process). A file refused with 422 counts as wrong; *reliable* is the share of files",
        'answered with `"reliable": true`.',
        "",
    ]
    for name in MODELS:
        model = ModelRuntime(ROOT / "models" / name, 2)
        lines += [
            f"## `{name}`",
            "",
            "| corpus | kind | files | accuracy | reliable |",
            "|---|---|---|---|---|",
        ]
        for corpus in ("drawings", "photos"):
            results = corpus_results(model, FIXTURES / corpus)
            for kind, (accuracy, reliable, files) in results.items():
                lines.append(f"| {corpus} | {kind} | {files} | {accuracy:.1%} | {reliable:.1%} |")
            total = sum(files for _, _, files in results.values())
            overall = sum(a * f for a, _, f in results.values()) / total
            lines.append(f"| {corpus} | **all** | {total} | **{overall:.1%}** | |")
            print(f"{name} {corpus}: {overall:.1%}")
        batch = digits.astype(np.float32)[..., np.newaxis]
        scored = model.predict_scored(batch)
        before = expected_calibration_error(scored.probabilities, labels)
        after = expected_calibration_error(scored.calibrated, labels)
        digit_doubt = doubts(model, digits)
        spec = model.card.reliability
        assert spec is not None, f"{name} has no reliability model"
        fitted = model.card.raw["reliability"]
        lines += [
            "",
            f"Calibration (ECE, 15 bins), temperature T = {spec.temperature}: on the 10,000 "
            f"held-out validation digits {fitted['validation_ece_before']:.4f} before, "
            f"{fitted['validation_ece_after']:.4f} after; on the 500 committed MNIST test digits "
            f"{before:.4f} before, {after:.4f} after (500 digits are too few for a difference "
            "this small to mean anything).",
            f"MNIST test digits reliable: {(digit_doubt <= 1).mean():.1%}.",
            "",
            "| not one digit | inputs | AUROC against MNIST test | flagged unreliable |",
            "|---|---|---|---|",
        ]
        for kind, images in not_digits.items():
            other = doubts(model, images)
            score, flagged = auroc(other, digit_doubt), (other > 1).mean()
            lines.append(f"| {kind} | {len(images)} | {score:.3f} | {flagged:.0%} |")
        lines.append("")
    (ROOT / "docs" / "real-inputs.md").write_text("\n".join(lines))
    print("wrote docs/real-inputs.md")


if __name__ == "__main__":
    main()
