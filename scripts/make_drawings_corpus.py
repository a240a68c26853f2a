"""Write the real-looking drawings corpus to ``tests/fixtures/drawings/``.

See ``tests/drawings.py`` for how each kind is drawn. Every kind renders 100 of the 500 committed
MNIST test digits (``tests/fixtures/mnist_test_500.npz``, never training digits), chosen and drawn
with a fixed seed, so running this again reproduces the same files byte for byte.

Usage: ``python scripts/make_drawings_corpus.py [--per-kind 100]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.drawings import KINDS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "fixtures" / "mnist_test_500.npz"
CORPUS = ROOT / "tests" / "fixtures" / "drawings"
SEED = 2026


def render_kind(kind: str, images: np.ndarray, labels: np.ndarray, count: int) -> list[dict]:
    """Render ``count`` digits of one kind into ``CORPUS/kind``; returns their manifest entries."""
    seed = SEED + sorted(KINDS).index(kind)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(images), size=count, replace=False)
    directory = CORPUS / kind
    directory.mkdir(parents=True)
    entries = []
    for position, index in enumerate(chosen):
        rendering = KINDS[kind](images[index], rng)
        name = f"{position:03d}-digit{index:03d}.{rendering.extension}"
        (directory / name).write_bytes(rendering.data)
        entries.append(
            {
                "file": f"{kind}/{name}",
                "kind": kind,
                "label": int(labels[index]),
                "mnist_test_index": int(index),
                "canvas": list(rendering.canvas),
                "stroke_px": round(rendering.stroke_px, 2),
                "polarity": rendering.polarity,
            }
        )
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-kind", type=int, default=100)
    args = parser.parse_args()
    with np.load(SOURCE) as archive:
        images, labels = archive["images"], archive["labels"]
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    manifest = []
    for kind in sorted(KINDS):
        manifest.extend(render_kind(kind, images, labels, args.per_kind))
        print(f"{kind}: {args.per_kind} files")
    lines = ",\n".join(json.dumps(entry) for entry in manifest)
    (CORPUS / "manifest.json").write_text(f"[\n{lines}\n]\n")
    size = sum(path.stat().st_size for path in CORPUS.rglob("*") if path.is_file())
    print(f"wrote {len(manifest)} files, {size / 1e6:.1f} MB, to {CORPUS}")


if __name__ == "__main__":
    main()
