"""Preprocessing time per image on the corpora, and what the reliability signal costs.

In one process and one thread, as a worker runs them: the median time of ``prepare_image``
(decode + the ``mnist`` method) for each kind of ``tests/fixtures/drawings`` and
``tests/fixtures/photos``; and the model's plain run (probabilities only) against the scored run
(probabilities + pool2, calibration, class-centre distance) at batch 1 and 64, taking turns in
each round so that the ratio is paired.

Usage: ``python bench/real_inputs.py [--rounds 5]``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.errors import ServiceError  # noqa: E402
from service.preprocessing import ImageLimits, prepare_image  # noqa: E402
from service.runtime import ModelRuntime  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LIMITS = ImageLimits(max_pixels=16_000_000, max_bytes=8 << 20)


def preprocessing_ms(model: ModelRuntime, corpus: Path) -> dict[str, tuple[float, str]]:
    """kind -> (median ms per image, typical size)."""
    times: dict[str, list[float]] = defaultdict(list)
    sizes: dict[str, list[str]] = defaultdict(list)
    for entry in json.loads((corpus / "manifest.json").read_text()):
        data = (corpus / entry["file"]).read_bytes()
        started = time.perf_counter()
        try:
            prepare_image(data, "mnist", model.card.preprocessing, LIMITS)
        except ServiceError:
            pass
        times[entry["kind"]].append((time.perf_counter() - started) * 1000)
        sizes[entry["kind"]].append("x".join(map(str, entry["canvas"])))
    return {
        kind: (statistics.median(values), sorted(sizes[kind])[len(sizes[kind]) // 2])
        for kind, values in sorted(times.items())
    }


def images_per_second(run: object, images: np.ndarray, seconds: float = 0.5) -> float:
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run(images)  # type: ignore[operator]
        count += images.shape[0]
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = ModelRuntime(ROOT / "models" / "mnist-deep-cnn", 1)
    print("| corpus | kind | typical canvas | preprocessing, ms per image (median) |")
    print("|---|---|---|---|")
    for corpus in ("drawings", "photos"):
        for kind, (milliseconds, size) in preprocessing_ms(
            model, ROOT / "tests" / "fixtures" / corpus
        ).items():
            print(f"| {corpus} | {kind} | {size} | {milliseconds:.1f} |")
    print()
    print(
        "| batch | plain run, images/s | scored run, images/s | scored / plain (median of rounds) |"
    )
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for batch in (1, 64):
        images = rng.random((batch, 28, 28, 1), dtype=np.float32)
        plain, scored = [], []
        for _ in range(args.rounds):
            plain.append(images_per_second(model.predict, images))
            scored.append(images_per_second(model.predict_scored, images))
        ratio = statistics.median(s / p for s, p in zip(scored, plain, strict=True))
        print(
            f"| {batch} | {statistics.median(plain):,.0f} | {statistics.median(scored):,.0f} "
            f"| {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
