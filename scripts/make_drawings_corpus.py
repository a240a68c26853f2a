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
from tests.drawings import KINDS, renderings, usable_digits  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "fixtures" / "mnist_test_500.npz"
CORPUS = ROOT / "tests" / "fixtures" / "drawings"


def render_kind(
    kind: str, images: np.ndarray, labels: np.ndarray, usable: np.ndarray, count: int
) -> list[dict]:
    """Render ``count`` of the ``usable`` digits into ``CORPUS/kind``; returns manifest entries."""
    directory = CORPUS / kind
    directory.mkdir(parents=True)
    entries = []
    for position, (index, rendering) in enumerate(renderings(kind, images, usable, count)):
        name = f"{position:03d}-digit{index:03d}.{rendering.extension}"
        (directory / name).write_bytes(rendering.data)
        entries.append(
            {
                "file": f"{kind}/{name}",
                "kind": kind,
                "label": int(labels[index]),
                "mnist_test_index": index,
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
    usable = usable_digits(images)
    skipped = sorted(set(range(len(images))) - set(usable.tolist()))
    print(f"{len(skipped)} digits cannot be re-stroked faithfully and are not used: {skipped}")
    manifest = []
    for kind in sorted(KINDS):
        manifest.extend(render_kind(kind, images, labels, usable, args.per_kind))
        print(f"{kind}: {args.per_kind} files")
    lines = ",\n".join(json.dumps(entry) for entry in manifest)
    (CORPUS / "manifest.json").write_text(f"[\n{lines}\n]\n")
    size = sum(path.stat().st_size for path in CORPUS.rglob("*") if path.is_file())
    print(f"wrote {len(manifest)} files, {size / 1e6:.1f} MB, to {CORPUS}")


if __name__ == "__main__":
    main()
