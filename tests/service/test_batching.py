"""The dynamic batcher: merging, ordering, failure, overload and timeouts."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batching import DynamicBatcher
from service.errors import InferenceError, InferenceTimeoutError, OverloadedError


class RecordingModel:
    """Returns each input's first pixel as its 'probability'; records batch sizes."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.batch_sizes: list[int] = []
        self.delay_s = delay_s
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batch_sizes.append(images.shape[0])
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("boom")
        return images[:, 0, 0, :].copy()


def images_tagged(start: int, count: int) -> np.ndarray:
    images = np.zeros((count, 28, 28, 1), dtype=np.float32)
    images[:, 0, 0, 0] = np.arange(start, start + count)
    return images


async def run_with(model: RecordingModel, coroutine_factory, **options: object):  # type: ignore[no-untyped-def]
    settings = {
        "max_batch_items": 64,
        "max_delay_s": 0.005,
        "max_queue_items": 1000,
        "concurrency": 1,
        "timeout_s": 5.0,
    }
    settings.update(options)
    with ThreadPoolExecutor(2) as executor:
        batcher = DynamicBatcher(model, executor, **settings)  # type: ignore[arg-type]
        batcher.start()
        try:
            return await coroutine_factory(batcher)
        finally:
            await batcher.stop()


def test_concurrent_requests_share_batches_and_get_their_own_rows() -> None:
    model = RecordingModel(delay_s=0.01)

    async def scenario(batcher: DynamicBatcher) -> list[np.ndarray]:
        requests = [batcher.submit(images_tagged(10 * index, 1 + index % 3)) for index in range(40)]
        return await asyncio.gather(*requests)

    results = asyncio.run(run_with(model, scenario))
    for index, result in enumerate(results):
        expected = np.arange(10 * index, 10 * index + 1 + index % 3)
        assert result[:, 0].tolist() == expected.tolist()
    assert sum(model.batch_sizes) == sum(1 + index % 3 for index in range(40))
    assert max(model.batch_sizes) > 3  # Requests really were merged.
    assert max(model.batch_sizes) <= 64


def test_a_failed_batch_fails_each_of_its_requests() -> None:
    async def scenario(batcher: DynamicBatcher) -> list[object]:
        return await asyncio.gather(
            *[batcher.submit(images_tagged(0, 1)) for _ in range(5)], return_exceptions=True
        )

    results = asyncio.run(run_with(RecordingModel(fail=True), scenario))
    assert len(results) == 5
    assert all(isinstance(result, InferenceError) for result in results)


def test_full_queue_answers_overloaded_with_retry_after() -> None:
    model = RecordingModel(delay_s=0.2)

    async def scenario(batcher: DynamicBatcher) -> list[object]:
        first = asyncio.create_task(batcher.submit(images_tagged(0, 1)))
        await asyncio.sleep(0.05)  # The first batch is now running.
        return await asyncio.gather(
            first,
            *[batcher.submit(images_tagged(index, 4)) for index in range(5)],
            return_exceptions=True,
        )

    results = asyncio.run(run_with(model, scenario, max_queue_items=10))
    rejected = [result for result in results if isinstance(result, OverloadedError)]
    assert len(rejected) == 3  # 4 + 4 items fit in a queue of 10, the rest do not.
    assert rejected[0].headers == {"Retry-After": "1"}
    assert sum(isinstance(result, np.ndarray) for result in results) == 3


def test_slow_model_times_out_with_504_error() -> None:
    async def scenario(batcher: DynamicBatcher) -> np.ndarray:
        return await batcher.submit(images_tagged(0, 1))

    with pytest.raises(InferenceTimeoutError):
        asyncio.run(run_with(RecordingModel(delay_s=0.5), scenario, timeout_s=0.05))


def test_oversized_request_runs_alone() -> None:
    model = RecordingModel()

    async def scenario(batcher: DynamicBatcher) -> np.ndarray:
        return await batcher.submit(images_tagged(0, 100))

    result = asyncio.run(run_with(model, scenario, max_batch_items=16))
    assert result.shape == (100, 1) and model.batch_sizes == [100]
