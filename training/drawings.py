"""Accuracy on the corpus of real-looking drawings and photos (``tests/fixtures/drawings``).

The files go through the service's own preprocessing, exactly as an upload to ``/predict`` does,
so the figure recorded in ``model.json`` is the one the service's users get.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.config import Settings
from service.preprocessing import ImageLimits, images_to_batch
from service.repository import read_model_card
from training.export import INPUT_NAME, PROBABILITIES_OUTPUT, write_model_card

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "drawings"


def drawings_accuracy(model_dir: Path, corpus: Path = DEFAULT_CORPUS) -> dict[str, Any]:
    """Accuracy of an exported model on every file of the corpus, overall and per kind."""
    card = read_model_card(model_dir)
    session = ort.InferenceSession(
        str(model_dir / card.files.onnx), providers=["CPUExecutionProvider"]
    )
    defaults = Settings()
    limits = ImageLimits(defaults.max_image_pixels, defaults.max_image_bytes)
    manifest = json.loads((corpus / "manifest.json").read_text())
    hits: dict[str, list[bool]] = defaultdict(list)
    for entry in manifest:
        batch = images_to_batch(
            [(corpus / entry["file"]).read_bytes()],
            card.preprocessing.default,
            card.preprocessing,
            limits,
        )
        (probabilities,) = session.run([PROBABILITIES_OUTPUT], {INPUT_NAME: batch})
        hits[entry["kind"]].append(int(probabilities[0].argmax()) == entry["label"])
    every = [hit for values in hits.values() for hit in values]
    return {
        "corpus": "tests/fixtures/drawings (scripts/make_drawings_corpus.py)",
        "files": len(every),
        "accuracy": float(np.mean(every)),
        "per_kind": {kind: float(np.mean(values)) for kind, values in sorted(hits.items())},
    }


def record_drawings_accuracy(model_dir: Path, corpus: Path = DEFAULT_CORPUS) -> dict[str, Any]:
    """Measure ``drawings_accuracy`` and store it as ``metrics.drawings_corpus`` in model.json."""
    result = drawings_accuracy(model_dir, corpus)
    card_path = model_dir / "model.json"
    card = json.loads(card_path.read_text())
    card["metrics"]["drawings_corpus"] = result
    write_model_card(card, card_path)
    worst = min(result["per_kind"].items(), key=lambda item: item[1])
    print(
        f"drawings corpus: {result['accuracy']:.2%} of {result['files']} files "
        f"(weakest kind {worst[0]}: {worst[1]:.0%})"
    )
    return result
