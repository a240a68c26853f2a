"""Capacity plan figures from ``bench/results/latest.json``: docs/scaling.png and the numbers
docs/scaling.md quotes.

Usage: ``python -m bench.capacity`` (after ``python bench/run_benchmarks.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.json"
PLOT = ROOT / "docs" / "scaling.png"
# Measured on a 16-core machine (issue #12): single-image throughput grew near-linearly with
# workers, about 1,450 req/s per worker from 1 to 12 workers.
SIXTEEN_CORE_PER_WORKER = 1_450.0
TARGET_UTILISATION = 0.7  # Run pods at 70 % of what they saturate at: p99 stays low.
CPUS_PER_POD = 2


def per_core(report: dict[str, Any]) -> dict[str, float]:
    """Single-image and batch throughput per CPU core, measured on this machine."""
    cpus = int(report["machine"].split(",")[-1].split()[0])
    single = max(r["requests_per_s"] for r in report["single"] if r["name"] == "binary")
    batch = max(r["images_per_s"] for r in report["batches"][str(cpus)])
    return {"single_req_s": single / cpus, "batch_img_s": batch / cpus}


def pods_needed(target_req_s: float, req_s_per_core: float, cpus_per_pod: int) -> int:
    return math.ceil(target_req_s / (req_s_per_core * cpus_per_pod * TARGET_UTILISATION))


def plot(report: dict[str, Any]) -> None:
    here = per_core(report)["single_req_s"]
    loads = [5_000 * step for step in range(1, 21)]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, rate in (
        (
            f"{SIXTEEN_CORE_PER_WORKER:,.0f} req/s per core (16-core machine)",
            SIXTEEN_CORE_PER_WORKER,
        ),
        (f"{here:,.0f} req/s per core (2 cores, wrk on the same cores)", here),
    ):
        axes[0].plot(loads, [pods_needed(load, rate, CPUS_PER_POD) for load in loads], label=label)
    axes[0].axvline(50_000, color="gray", linestyle=":")
    axes[0].set_xlabel("single-image requests/s to serve")
    axes[0].set_ylabel(f"pods of {CPUS_PER_POD} CPUs at {TARGET_UTILISATION:.0%} load")
    axes[0].set_title("replicas for a target load")
    axes[0].legend(fontsize=8)
    rss = report["capacity"]["2"]["worker_rss_mib"]
    worker_mib = max(rss)
    decode, bodies = 192, 64  # deploy/k8s/base/configmap.yaml
    workers = list(range(1, 9))
    axes[1].bar(
        workers, [count * (worker_mib + decode + bodies) + 60 for count in workers], color="C1"
    )
    axes[1].set_xlabel("workers (= CPUs) per pod")
    axes[1].set_ylabel("memory limit to set, MiB")
    axes[1].set_title(f"memory: {worker_mib:.0f} MiB a worker + budgets")
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(PLOT, dpi=100)
    plt.close(figure)


def main() -> None:
    report = json.loads(RESULTS.read_text())
    figures = per_core(report)
    print(json.dumps(figures, indent=1))
    for rate in (SIXTEEN_CORE_PER_WORKER, figures["single_req_s"]):
        print(f"50,000 req/s at {rate:,.0f} req/s per core: {pods_needed(50_000, rate, 2)} pods")
    print(json.dumps(report["capacity"], indent=1))
    plot(report)
    print(f"wrote {PLOT}")


if __name__ == "__main__":
    main()
