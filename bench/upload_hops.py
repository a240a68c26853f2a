"""What opening each upload once, in one thread hop, saves: in-process, on the event loop.

``two hops`` is the path before it (still built from the same functions): the header read in
one thread hop, the budget reserved on the event loop, then the image opened again and decoded
in a second hop. ``one hop`` is ``service.preprocessing.uploads.prepare_uploads``. Both
preprocess with the default model's ``mnist`` method, one image a request, for the committed
example digit (a small PNG) and the photo of a 2 (a JPEG), taking turns for ``--rounds``
rounds of ``--requests`` requests each; 8 requests in flight, as the HTTP benchmarks run.
Prints requests per second and the ratio one hop / two hops (median of the rounds).

Usage: ``python bench/upload_hops.py [--rounds 5] [--requests 400]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.limits import Deadline, MemoryBudget  # noqa: E402
from service.preprocessing import ImageLimits, prepare_image, read_header  # noqa: E402
from service.preprocessing.uploads import prepare_uploads  # noqa: E402
from service.repository import read_model_card  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGES = {
    "digit PNG": ROOT / "examples" / "digit-7.png",
    "photo JPEG": ROOT / "examples" / "photo-of-a-2.jpg",
}
LIMITS = ImageLimits(max_pixels=16_000_000, max_bytes=8 << 20)
IN_FLIGHT = 8
SPEC = read_model_card(ROOT / "models" / "mnist-deep-cnn").preprocessing


async def two_hops(blob: bytes, budget: MemoryBudget) -> np.ndarray:
    header = await asyncio.to_thread(read_header, blob, LIMITS)
    budget.check(header.decode_bytes)
    await budget.wait_and_take(header.decode_bytes)
    try:
        return await asyncio.to_thread(prepare_image, blob, "mnist", SPEC, LIMITS, set())
    finally:
        budget.give_back(header.decode_bytes)


async def one_hop(blob: bytes, budget: MemoryBudget) -> np.ndarray:
    return await prepare_uploads([blob], "mnist", SPEC, LIMITS, budget, Deadline.after(30))


async def rate(way: str, blob: bytes, requests: int) -> float:
    """Requests per second with IN_FLIGHT requests in flight."""
    budget = MemoryBudget(192 << 20)
    run = one_hop if way == "one hop" else two_hops
    remaining = requests

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await run(blob, budget)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(IN_FLIGHT)))
    return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    print("| image | two hops req/s | one hop req/s | one hop / two hops |")
    print("|---|---|---|---|")
    for name, path in IMAGES.items():
        blob = path.read_bytes()
        rates: dict[str, list[float]] = {"two hops": [], "one hop": []}
        for _ in range(args.rounds):
            for way in rates:
                rates[way].append(asyncio.run(rate(way, blob, args.requests)))
        ratio = statistics.median(
            one / two for one, two in zip(rates["one hop"], rates["two hops"], strict=True)
        )
        print(
            f"| {name} | {statistics.median(rates['two hops']):,.0f} "
            f"| {statistics.median(rates['one hop']):,.0f} | {ratio:.2f}x |"
        )


if __name__ == "__main__":
    main()
