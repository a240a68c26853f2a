"""Cut the committed test fixture (the first 500 MNIST test digits) from an IDX directory."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from training.data import read_idx

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mnist_test_500.npz"
COUNT = 500


def main(source: Path) -> None:
    images = read_idx(source / "t10k-images-idx3-ubyte.gz")[:COUNT]
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz")[:COUNT]
    np.savez_compressed(FIXTURE, images=images, labels=labels.astype(np.uint8))
    print(f"wrote {FIXTURE} ({COUNT} digits)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mnist"))
