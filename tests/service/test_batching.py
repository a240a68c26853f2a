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
        self.running = threading.Event()  # Set once the first batch has started.

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batch_sizes.append(images.shape[0])
        self.running.set()
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("boom")
        return images[:, 0, 0, :].copy()


async def until_running(model: RecordingModel) -> None:
    """Wait (without a fixed sleep) until the model has started its first batch."""
    assert await asyncio.to_thread(model.running.wait, 5.0), "the first batch never started"


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
    model.running.clear()  # A model may serve several runs of a test.
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
        await until_running(model)
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


def test_runs_alone_wait_their_turn_in_the_queue_and_are_never_merged() -> None:
    model = RecordingModel(delay_s=0.05)
    alone_calls: list[int] = []

    def feature_maps(images: np.ndarray) -> str:
        alone_calls.append(images.shape[0])
        return f"maps of {images.shape[0]}"

    async def scenario(batcher: DynamicBatcher) -> list[object]:
        first = asyncio.create_task(batcher.submit(images_tagged(0, 1)))
        await until_running(model)  # Everything below queues behind it.
        return await asyncio.gather(
            first,
            batcher.submit(images_tagged(1, 2)),
            batcher.submit_alone(images_tagged(3, 3), feature_maps),
            batcher.submit(images_tagged(6, 2)),
            batcher.submit(images_tagged(8, 2)),
        )

    results = asyncio.run(run_with(model, scenario))
    assert results[2] == "maps of 3" and alone_calls == [3]
    # The predictions before and after the run-alone are batched on their own sides of it.
    assert model.batch_sizes == [1, 2, 4]
    assert [row[0] for row in results[4]] == [8, 9]  # type: ignore[index]


def test_runs_alone_are_bounded_and_share_the_queue_bound_and_timeout() -> None:
    model = RecordingModel(delay_s=0.2)

    def slow_maps(images: np.ndarray) -> int:
        time.sleep(0.2)
        return images.shape[0]

    async def scenario(batcher: DynamicBatcher) -> list[object]:
        first = asyncio.create_task(batcher.submit(images_tagged(0, 1)))
        await until_running(model)
        return await asyncio.gather(
            first,
            *[batcher.submit_alone(images_tagged(0, 4), slow_maps) for _ in range(3)],
            return_exceptions=True,
        )

    # At most 8 items of runs-alone at once: the third request of 4 is refused.
    results = asyncio.run(run_with(model, scenario, max_alone_items=8))
    assert [type(result).__name__ for result in results[1:]] == ["int", "int", "OverloadedError"]
    # A queue of 6 items: the second run-alone of 4 does not fit beside the first.
    results = asyncio.run(run_with(model, scenario, max_queue_items=6))
    assert sum(isinstance(result, OverloadedError) for result in results) == 2
    # Past its timeout a run-alone is a 504, like any request.
    with pytest.raises(InferenceTimeoutError):
        asyncio.run(
            run_with(
                model,
                lambda batcher: batcher.submit_alone(images_tagged(0, 1), slow_maps),
                timeout_s=0.05,
            )
        )


def test_a_retired_batcher_finishes_what_it_holds_then_stops_and_serves_late_requests() -> None:
    """A model version leaving service: requests queued or running finish on it, its collector
    then stops; a request that picked the version just before still gets its answer."""
    model = RecordingModel(delay_s=0.05)

    async def scenario() -> None:
        with ThreadPoolExecutor(2) as executor:
            batcher = DynamicBatcher(
                model,
                executor,
                max_batch_items=4,
                max_delay_s=0.0,
                max_queue_items=100,
                concurrency=1,
                timeout_s=5.0,
            )
            batcher.start()
            held = [asyncio.create_task(batcher.submit(images_tagged(i, 1))) for i in range(8)]
            await until_running(model)
            batcher.retire()
            answers = await asyncio.gather(*held)
            assert [int(a[0, 0]) for a in answers] == list(range(8))
            assert batcher._collector is not None
            await asyncio.wait_for(batcher._collector, 2)  # Stopped by itself once idle.
            late = await batcher.submit(images_tagged(42, 1))
            assert int(late[0, 0]) == 42
            await asyncio.wait_for(batcher._collector, 2)
            await asyncio.sleep(0)  # The run's task ends just after its result is set.
            assert batcher.idle

    asyncio.run(scenario())
