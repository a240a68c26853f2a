"""Real-looking drawings and photos (tests/fixtures/drawings) through /predict, kind by kind."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import FIXTURES, MODELS_DIR
from tests.drawings import renderings, usable_digits

CORPUS = FIXTURES / "drawings"
MANIFEST: list[dict[str, object]] = json.loads((CORPUS / "manifest.json").read_text())
KINDS = sorted({str(entry["kind"]) for entry in MANIFEST})
FILES_PER_REQUEST = 25
MIN_ACCURACY = 0.97


def predicted_labels(client: TestClient, model: str, entries: list[dict[str, object]]) -> list[int]:
    """Class indices for the corpus files, posted as multipart uploads a batch at a time."""
    predicted: list[int] = []
    for start in range(0, len(entries), FILES_PER_REQUEST):
        files = [
            ("files", (Path(str(entry["file"])).name, (CORPUS / str(entry["file"])).read_bytes()))
            for entry in entries[start : start + FILES_PER_REQUEST]
        ]
        response = client.post(f"/models/{model}/predict", files=files)
        assert response.status_code == 200, response.text
        predicted.extend(item["class_index"] for item in response.json()["predictions"])
    return predicted


@pytest.fixture(scope="module")
def accuracy_by_kind(client: TestClient) -> dict[str, dict[str, float]]:
    """model -> kind -> accuracy over its 100 files, plus "overall"."""
    results: dict[str, dict[str, float]] = {}
    for model in ("mnist-deep-cnn", "mnist-deep-cnn-int8"):
        hits: dict[str, list[bool]] = defaultdict(list)
        for entry, label in zip(MANIFEST, predicted_labels(client, model, MANIFEST), strict=True):
            hits[str(entry["kind"])].append(label == entry["label"])
        results[model] = {kind: float(np.mean(values)) for kind, values in hits.items()}
        results[model]["overall"] = float(np.mean([hit for kind in hits for hit in hits[kind]]))
    return results


def test_corpus_has_every_kind_at_100_files() -> None:
    counts = {kind: sum(entry["kind"] == kind for entry in MANIFEST) for kind in KINDS}
    assert len(KINDS) == 10 and set(counts.values()) == {100}
    assert all((CORPUS / str(entry["file"])).is_file() for entry in MANIFEST)


@pytest.mark.parametrize("model", ["mnist-deep-cnn", "mnist-deep-cnn-int8"])
@pytest.mark.parametrize("kind", [*KINDS, "overall"])
def test_drawings_are_read_right_97_percent_of_the_time(
    accuracy_by_kind: dict[str, dict[str, float]], model: str, kind: str
) -> None:
    assert accuracy_by_kind[model][kind] >= MIN_ACCURACY, accuracy_by_kind[model]


@pytest.mark.parametrize("model", ["mnist-deep-cnn", "mnist-deep-cnn-int8"])
def test_model_card_records_the_corpus_accuracy_it_reaches(
    accuracy_by_kind: dict[str, dict[str, float]], model: str
) -> None:
    card = json.loads((MODELS_DIR / model / "model.json").read_text())
    recorded = card["metrics"]["drawings_corpus"]
    assert recorded["files"] == len(MANIFEST)
    assert recorded["accuracy"] == pytest.approx(accuracy_by_kind[model]["overall"], abs=1e-9)
    for kind in KINDS:
        assert recorded["per_kind"][kind] == pytest.approx(accuracy_by_kind[model][kind])


def test_the_script_reproduces_the_committed_files(
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    images, _ = mnist_digits
    usable = usable_digits(images)
    for kind in KINDS:
        committed = [entry for entry in MANIFEST if entry["kind"] == kind][:2]
        rendered = renderings(kind, images, usable, count=100)
        for entry, (index, rendering) in zip(committed, rendered, strict=False):
            assert index == entry["mnist_test_index"]
            assert rendering.data == (CORPUS / str(entry["file"])).read_bytes(), entry["file"]
