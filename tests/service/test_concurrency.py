"""Many clients at once: every request gets its own answer, and requests share model runs."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import make_settings


def test_concurrent_requests_are_batched_and_answered_in_order(
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = mnist_digits
    settings = make_settings(batch_max_delay_ms=20.0, batch_max_size=64)
    with TestClient(create_app(settings)) as client:

        def classify(index: int) -> list[int]:
            # Requests of 1-3 digits each, so rows must be split back correctly.
            chosen = images[index : index + 1 + index % 3].astype(np.float32) / 255.0
            response = client.post("/predict", json={"instances": chosen.tolist()})
            assert response.status_code == 200
            return [item["class_index"] for item in response.json()["predictions"]]

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(classify, range(120)))
        metrics = client.get("/metrics").text

    expected = [labels[index : index + 1 + index % 3].tolist() for index in range(120)]
    agreement = np.mean([answer == truth for answer, truth in zip(answers, expected, strict=True)])
    assert agreement >= 0.97  # The model's own accuracy; a mix-up would give ~10 %.
    runs = float(
        re.search(r'cnn_serve_batch_items_count\{model="mnist-deep-cnn"\} (\S+)', metrics).group(1)
    )  # type: ignore[union-attr]
    items = float(
        re.search(r'cnn_serve_batch_items_sum\{model="mnist-deep-cnn"\} (\S+)', metrics).group(1)
    )  # type: ignore[union-attr]
    assert items == sum(1 + index % 3 for index in range(120))
    assert runs < 120  # Fewer model runs than requests: they were merged.
