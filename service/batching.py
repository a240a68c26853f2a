"""Dynamic micro-batching: concurrent requests for one model share one ONNX Runtime run.

Requests wait in a bounded queue. A collector takes the oldest request, adds whatever else is
waiting (up to ``max_batch_items`` items, waiting at most ``max_delay_s`` for more), and runs the
batch in a worker thread. Runs of another kind (feature maps: every layer's activations) wait in
the same queue, under the same bound and deadline, and run alone (``submit_alone``); at most
``max_alone_items`` of their items wait or run at once, since each returns far more data than a
prediction. While every inference thread is busy nothing is collected, so batches
grow by themselves under load and stay at one request when the server is idle. Each request gets
exactly its own rows back; if a run fails, every request in it fails with the same clear error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import numpy as np

from service.errors import (
    InferenceError,
    InferenceTimeoutError,
    OverloadedError,
    PayloadTooLargeError,
)
from service.tracing import BatchTiming

logger = logging.getLogger("service.batching")

BatchObserver = Callable[[int, float, list[float]], None]
"""Called after each run with (items in the batch, seconds the model took, seconds each of its
requests waited in the queue)."""
Result = TypeVar("Result")
Rows = TypeVar("Rows")
"""What one batched run returns: anything sliced by rows like an array (``runtime.Scored``)."""


def _record_timing(batch: list[_Pending], started_ns: int, items: int) -> None:
    """The run's times, for the requests that trace theirs."""
    ended_ns = time.time_ns()
    for pending in batch:
        if pending.timing is not None:
            pending.timing.started_ns, pending.timing.ended_ns = started_ns, ended_ns
            pending.timing.batch_items = items


class _Retired(Exception):
    """The collector of a retired batcher found its queue empty: it stops."""


@dataclass
class _Pending:
    """A queued request: its images, and ``alone``, the run it needs instead of a batch's."""

    images: np.ndarray
    future: asyncio.Future[Any] = field(repr=False)
    alone: Callable[[np.ndarray], Any] | None = None
    queued_at: float = field(default_factory=time.perf_counter, repr=False)
    timing: BatchTiming | None = field(default=None, repr=False)  # Filled when traced.

    @property
    def size(self) -> int:
        return int(self.images.shape[0])


class DynamicBatcher(Generic[Rows]):
    """Merges concurrent ``submit`` calls into batched calls of ``run_batch``."""

    def __init__(
        self,
        run_batch: Callable[[np.ndarray], Rows],
        executor: Executor,
        *,
        max_batch_items: int,
        max_delay_s: float,
        max_queue_items: int,
        concurrency: int,
        timeout_s: float,
        observer: BatchObserver | None = None,
        retry_after_s: Callable[[int], int] | None = None,
        max_alone_items: int | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._executor = executor
        self._max_batch_items = max_batch_items
        self._max_delay_s = max_delay_s
        self._max_queue_items = max_queue_items
        self._max_alone_items = max_queue_items if max_alone_items is None else max_alone_items
        self._alone_items = 0  # Items of runs-alone queued or running.
        self._timeout_s = timeout_s
        self._observer = observer
        self._retry_after_s = retry_after_s or (lambda queued_items: 1)
        self._waiting: deque[_Pending] = deque()
        self._queued_items = 0
        self._arrived = asyncio.Event()
        self._free_runners = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._collector: asyncio.Task[None] | None = None
        self._retired = False

    @property
    def queued_items(self) -> int:
        return self._queued_items

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing runs."""
        return not self._waiting and not self._running

    def start(self) -> None:
        """Start collecting; call from the running event loop."""
        self._collector = asyncio.create_task(self._collect_forever(), name="batch-collector")

    def retire(self) -> None:
        """Wind down once idle, without failing anything: the model version behind this batcher
        no longer takes new requests, but those that already hold it (decoding, queued,
        running) finish here. A request that submits after the collector stopped starts it
        again, and it stops again when the queue is empty."""
        self._retired = True
        self._arrived.set()  # Wake the collector so that it sees an empty queue and stops.

    async def stop(self) -> None:
        """Stop collecting, finish the runs in flight, and fail whatever still waits."""
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
        await asyncio.gather(*self._running, return_exceptions=True)
        while self._waiting:
            pending = self._waiting.popleft()
            if not pending.future.done():
                pending.future.set_exception(OverloadedError("the server is shutting down"))
        self._queued_items = 0

    async def submit(
        self, images: np.ndarray, timeout_s: float | None = None, timing: BatchTiming | None = None
    ) -> Rows:
        """Queue a request and wait for its rows of the batched result.

        Args:
            images: float32 (n, H, W, 1).
            timeout_s: longest wait for the result (default: the batcher's own timeout).

        Returns:
            Its n rows of ``run_batch``'s output, in the order of ``images``.

        Raises:
            PayloadTooLargeError: the request alone is larger than the whole queue (413).
            OverloadedError: the queue is full (503 with Retry-After).
            InferenceTimeoutError: no result within the timeout (504).
            InferenceError: the batch this request was in failed.
        """
        if timing is not None:
            timing.queued_ns = time.time_ns()
        pending = _Pending(images, self._future(), timing=timing)
        return cast(Rows, await self._queued(pending, timeout_s))

    async def submit_alone(
        self,
        images: np.ndarray,
        run: Callable[[np.ndarray], Result],
        timeout_s: float | None = None,
    ) -> Result:
        """Queue ``run(images)``, to run by itself in its turn, and wait for what it returns.

        The same queue bound, timeout and errors as ``submit``; also ``OverloadedError`` while
        ``max_alone_items`` items of such runs are queued or running.
        """
        if self._alone_items + images.shape[0] > self._max_alone_items:
            raise OverloadedError(
                f"{self._alone_items} items of feature-map runs are already waiting or running",
                headers={"Retry-After": str(self._retry_after_s(self._queued_items))},
            )
        self._alone_items += images.shape[0]
        try:
            pending = _Pending(images, self._future(), alone=run)
            return cast(Result, await self._queued(pending, timeout_s))
        finally:
            self._alone_items -= images.shape[0]

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _queued(self, pending: _Pending, timeout_s: float | None) -> Any:
        """Queue ``pending`` within the bound and wait for its result, or its timeout."""
        if pending.size > self._max_queue_items:
            raise PayloadTooLargeError(
                f"a request of {pending.size} items can never fit the inference queue of "
                f"{self._max_queue_items}; send smaller batches",
                details={"max_queue_items": self._max_queue_items},
            )
        if self._queued_items + pending.size > self._max_queue_items:
            raise OverloadedError(
                f"the inference queue is full ({self._queued_items} items waiting)",
                headers={"Retry-After": str(self._retry_after_s(self._queued_items))},
            )
        self._waiting.append(pending)
        self._queued_items += pending.size
        self._arrived.set()
        if self._retired and (self._collector is None or self._collector.done()):
            self.start()
        # A timer on the future itself: cheaper than wait_for + shield on every request.
        timer = asyncio.get_running_loop().call_later(
            self._timeout_s if timeout_s is None else max(0.0, timeout_s),
            self._expire,
            pending.future,
        )
        try:
            return await pending.future
        finally:
            timer.cancel()

    def _expire(self, future: asyncio.Future[Any]) -> None:
        if not future.done():
            future.set_exception(
                InferenceTimeoutError(
                    f"no result within {self._timeout_s:g} s; the server is overloaded"
                )
            )

    async def _collect_forever(self) -> None:
        while True:
            await self._free_runners.acquire()
            try:
                batch = await self._next_batch()
            except _Retired:
                self._free_runners.release()
                return
            except BaseException:
                self._free_runners.release()
                raise
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[_Pending]:
        while not self._waiting:
            if self._retired:
                raise _Retired
            self._arrived.clear()
            await self._arrived.wait()
        batch = [self._take()]
        if batch[0].alone is not None:
            return batch
        items = batch[0].size
        deadline = time.monotonic() + self._max_delay_s
        while items < self._max_batch_items:
            if not self._waiting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
                continue
            following = self._waiting[0]
            if following.alone is not None or items + following.size > self._max_batch_items:
                break
            batch.append(self._take())
            items += batch[-1].size
        return batch

    def _take(self) -> _Pending:
        pending = self._waiting.popleft()
        self._queued_items -= pending.size
        return pending

    async def _run(self, batch: list[_Pending]) -> None:
        live = [pending for pending in batch if not pending.future.done()]
        try:
            if not live:
                return
            images = (
                live[0].images
                if len(live) == 1
                else np.concatenate([pending.images for pending in live])
            )
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            started_ns = time.time_ns()
            run = live[0].alone or self._run_batch  # A run-alone is a batch of one request.
            try:
                outputs = await loop.run_in_executor(self._executor, run, images)
            except Exception as error:
                logger.exception("inference failed on a batch of %d items", images.shape[0])
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(
                            InferenceError(f"inference failed: {type(error).__name__}")
                        )
                return
            if self._observer is not None:
                waits = [started - pending.queued_at for pending in live]
                self._observer(images.shape[0], time.perf_counter() - started, waits)
            _record_timing(live, started_ns, images.shape[0])
            if live[0].alone is not None:
                if not live[0].future.done():
                    live[0].future.set_result(outputs)
                return
            offset = 0
            for pending in live:
                if not pending.future.done():
                    pending.future.set_result(cast(Any, outputs)[offset : offset + pending.size])
                offset += pending.size
        finally:
            self._free_runners.release()
