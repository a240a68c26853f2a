"""What the reliability signal costs over HTTP: single images on /predict with and without it.

Two servers of the committed default model take turns under the same wrk load (one uint8 image
per request, 16 connections) for ``--rounds`` rounds: one as committed, one from a copy of the
models directory whose cards have no ``reliability`` entry. Prints requests per second and p99
for each, and the median of the per-round ratios.

Usage: ``python bench/reliability_cost.py [--rounds 3] [--duration 5]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run_benchmarks import Body, run_wrk  # noqa: E402
from tests.servers import MODELS_DIR, running_service  # noqa: E402


def models_without_reliability(directory: Path) -> Path:
    copy = directory / "models"
    shutil.copytree(MODELS_DIR, copy)
    for card_path in copy.glob("*/model.json"):
        card = json.loads(card_path.read_text())
        card.pop("reliability", None)
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        with np.load(
            Path(__file__).resolve().parent.parent / "tests/fixtures/mnist_test_500.npz"
        ) as archive:
            (directory / "digit.u8").write_bytes(archive["images"][0].tobytes())
        body = Body(directory / "digit.u8", "application/octet-stream", "X-Shape: 1,28,28", 1)
        plain_models = models_without_reliability(directory)
        with (
            running_service(workers=2) as scored,
            running_service(workers=2, models_dir=plain_models) as plain,
        ):
            results: dict[str, list] = {"with reliability": [], "without": []}
            for _ in range(args.rounds):
                for name, service in (("with reliability", scored), ("without", plain)):
                    results[name].append(
                        run_wrk(f"{service.url}/predict", body, name, 16, args.duration)
                    )
    for name, runs in results.items():
        rps = statistics.median(run.requests_per_s for run in runs)
        p99 = statistics.median(run.p99_ms for run in runs)
        print(f"{name}: {rps:,.0f} req/s, p99 {p99:.2f} ms")
    ratios = [
        a.requests_per_s / b.requests_per_s
        for a, b in zip(results["with reliability"], results["without"], strict=True)
    ]
    print(
        f"with / without (median of {args.rounds} paired rounds): {statistics.median(ratios):.2f}"
    )


if __name__ == "__main__":
    main()
