"""Write a Keras-style mnist.npz cut from the committed 500-digit fixture (for quick smoke runs).

Usage: python scripts/make_tiny_mnist_npz.py OUT.npz  -> 400 training and 100 test digits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mnist_test_500.npz"


def main(out: Path) -> None:
    with np.load(FIXTURE) as archive:
        images, labels = archive["images"], archive["labels"]
    np.savez(
        out, x_train=images[:400], y_train=labels[:400], x_test=images[400:], y_test=labels[400:]
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
