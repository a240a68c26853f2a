"""What a live model update costs the requests around it: steady state against a swap window.

One service (2 workers, ``REPOSITORY_POLL_S=1``) of the default model under the same wrk load
(one uint8 image per request on ``/predict``, 16 connections) takes turns, for ``--rounds``
rounds, between a steady window and a swap window of the same length, in which a new version of
the model is published twice (at 20 % and 60 % of the window; the same weights each time),
so that every worker loads, checks, warms up and swaps in two versions while serving. Prints
requests per second, p99 and non-2xx answers for each window, and the medians of the
per-round ratios (swap / steady).

Usage: ``python bench/model_swap.py [--rounds 5] [--duration 6]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run_benchmarks import Body, LoadResult, run_wrk  # noqa: E402
from service.repository import publish_version  # noqa: E402
from tests.servers import MODELS_DIR, running_service  # noqa: E402

MODEL = "mnist-deep-cnn"


def two_exports(directory: Path) -> list[Path]:
    """Two exports of the default model: the same weights, so that a window measures what the
    swap costs and not a faster or slower model."""
    export = directory / "export" / MODEL
    shutil.copytree(MODELS_DIR / MODEL, export)
    return [export, export]


def publish_during(window_s: float, exports: list[Path], repository: Path) -> threading.Thread:
    """Publish each export in turn, at 20 % and 60 % of a window that starts now."""

    def publish() -> None:
        started = time.monotonic()
        for share, export in zip((0.2, 0.6), exports, strict=True):
            time.sleep(max(0.0, started + share * window_s - time.monotonic()))
            publish_version(export, repository / MODEL)

    thread = threading.Thread(target=publish)
    thread.start()
    return thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=6.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        with np.load(MODELS_DIR.parent / "tests/fixtures/mnist_test_500.npz") as archive:
            (directory / "digit.u8").write_bytes(archive["images"][0].tobytes())
        body = Body(directory / "digit.u8", "application/octet-stream", "X-Shape: 1,28,28", 1)
        repository = directory / "models"
        shutil.copytree(MODELS_DIR / MODEL, repository / MODEL)
        exports = two_exports(directory)
        results: dict[str, list[LoadResult]] = {"steady": [], "swap": []}
        with running_service(workers=2, models_dir=repository, repository_poll_s=1) as service:
            url = f"{service.url}/predict"
            for _ in range(args.rounds):
                results["steady"].append(run_wrk(url, body, "steady", 16, args.duration))
                publisher = publish_during(args.duration, exports, repository)
                results["swap"].append(run_wrk(url, body, "swap", 16, args.duration))
                publisher.join()
                time.sleep(2.0)  # The last swap is done everywhere before the next window.
            ready = httpx.get(f"{service.url}/health/ready").json()
    print(f"versions published: {2 * args.rounds}; serving at the end: {ready['versions'][MODEL]}")
    for name, runs in results.items():
        rps = statistics.median(run.requests_per_s for run in runs)
        p99 = statistics.median(run.p99_ms for run in runs)
        failed = sum(run.non_2xx + run.socket_errors for run in runs)
        print(f"{name}: {rps:,.0f} req/s, p99 {p99:.2f} ms, non-2xx or socket errors {failed}")
    pairs = list(zip(results["swap"], results["steady"], strict=True))
    throughput = statistics.median(
        swap.requests_per_s / steady.requests_per_s for swap, steady in pairs
    )
    tail = statistics.median(swap.p99_ms / steady.p99_ms for swap, steady in pairs)
    print(
        f"swap / steady (median of {args.rounds} paired rounds): requests/s {throughput:.2f}, "
        f"p99 {tail:.2f}"
    )


if __name__ == "__main__":
    main()
