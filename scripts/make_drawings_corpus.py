"""Write the real-looking corpora: ``tests/fixtures/drawings/`` and ``tests/fixtures/photos/``.

See ``tests/drawings.py`` (pens, canvases, polarity) and ``tests/photos.py`` (sheets on desks,
notebook paper, faint and uneven ink, dotted strokes, blur, continental styles) for how each kind
is drawn. Every kind renders digits of the 500 committed MNIST test digits
(``tests/fixtures/mnist_test_500.npz``, never training digits), chosen and drawn with a fixed
seed, so running this again reproduces the same files byte for byte.

Usage: ``python scripts/make_drawings_corpus.py [--corpus drawings|photos] [--per-kind N]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import drawings, photos  # noqa: E402
from tests.drawings import Rendering, Rng, renderings, usable_digits  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "fixtures" / "mnist_test_500.npz"
CORPORA: dict[str, tuple[dict[str, Callable[[np.ndarray, Rng], Rendering]], int]] = {
    # name: (kinds, files per kind by default)
    "drawings": (drawings.KINDS, 100),
    "photos": (photos.KINDS, 60),
}


def render_kind(
    corpus: Path,
    kinds: dict[str, Callable[[np.ndarray, Rng], Rendering]],
    kind: str,
    images: np.ndarray,
    labels: np.ndarray,
    usable: np.ndarray,
    count: int,
) -> list[dict]:
    """Render ``count`` of the ``usable`` digits into ``corpus/kind``; returns manifest entries."""
    directory = corpus / kind
    directory.mkdir(parents=True)
    entries = []
    drawn = renderings(kind, images, usable, count, kinds)
    for position, (index, rendering) in enumerate(drawn):
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
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="drawings")
    parser.add_argument("--per-kind", type=int, default=None)
    args = parser.parse_args()
    kinds, default_count = CORPORA[args.corpus]
    count = args.per_kind or default_count
    corpus = ROOT / "tests" / "fixtures" / args.corpus
    with np.load(SOURCE) as archive:
        images, labels = archive["images"], archive["labels"]
    if corpus.exists():
        shutil.rmtree(corpus)
    usable = usable_digits(images)
    skipped = sorted(set(range(len(images))) - set(usable.tolist()))
    print(f"{len(skipped)} digits cannot be re-stroked faithfully and are not used: {skipped}")
    manifest = []
    for kind in sorted(kinds):
        allowed = photos.DIGITS_OF_KIND.get(kind)
        pool = usable if allowed is None else usable[np.isin(labels[usable], allowed)]
        kind_count = min(count, len(pool))
        manifest.extend(render_kind(corpus, kinds, kind, images, labels, pool, kind_count))
        print(f"{kind}: {kind_count} files")
    lines = ",\n".join(json.dumps(entry) for entry in manifest)
    (corpus / "manifest.json").write_text(f"[\n{lines}\n]\n")
    size = sum(path.stat().st_size for path in corpus.rglob("*") if path.is_file())
    print(f"wrote {len(manifest)} files, {size / 1e6:.1f} MB, to {corpus}")


if __name__ == "__main__":
    main()
