"""Many clients at once: every request gets its own answer, and requests share model runs."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import make_settings, slow_model


def test_concurrent_requests_are_batched_and_answered_in_order(
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    images, labels = mnist_digits
    settings = make_settings(batch_max_delay_ms=20.0, batch_max_items=64)
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


def test_full_queue_answers_503_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow model and a queue of 2 items: the overflow is refused at once, not queued."""
    slow_model(monkeypatch, 0.3)
    settings = make_settings(batch_max_queue=2, batch_max_items=1)
    digit = {"instances": [np.zeros((28, 28)).tolist()]}
    with TestClient(create_app(settings)) as client:
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: client.post("/predict", json=digit), range(8)))
        assert client.get("/health/ready").status_code == 200
    statuses = sorted(response.status_code for response in responses)
    refused = [response for response in responses if response.status_code == 503]
    assert statuses.count(200) >= 3 and refused  # 1 running + 2 queued at the least.
    assert set(statuses) == {200, 503}
    for response in refused:
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "overloaded"
