"""Resource limits of a request: decode memory, time, and its client staying.

(Body size is enforced by ``service.edge.EdgeMiddleware``, before the body is read.)

- ``MemoryBudget``: image decodes in one process hold at most so much memory together;
- ``Deadline``: a request's work stops when its time is up or its client has gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from service.errors import ClientGoneError, InferenceTimeoutError, PayloadTooLargeError


class MemoryBudget:
    """A weighted semaphore over bytes: each decode reserves what it will hold, or waits.

    With one budget per process, the memory that concurrent image decodes hold together stays
    below ``capacity`` however many requests arrive; an image that alone needs more is refused.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.available = capacity
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, amount: int) -> AsyncIterator[None]:
        """Hold ``amount`` bytes of the budget for the duration of the block.

        Raises:
            PayloadTooLargeError: ``amount`` exceeds the whole budget.
        """
        if amount > self.capacity:
            raise PayloadTooLargeError(
                f"decoding this image would take about {amount // 2**20} MiB; the limit is "
                f"{self.capacity // 2**20} MiB (send a smaller image, or a JPEG)"
            )
        async with self._changed:
            await self._changed.wait_for(lambda: self.available >= amount)
            self.available -= amount
        try:
            yield
        finally:
            async with self._changed:
                self.available += amount
                self._changed.notify_all()


@dataclass
class Deadline:
    """When a request's work must stop: its time limit, or its client going away.

    Checked between units of work (one image's decoding, the queue wait), so a dead request
    costs at most one more unit of CPU.
    """

    expires_at: float  # time.monotonic()
    timeout_s: float
    # Set on the event loop, read by decoding threads: a plain flag is enough under the GIL.
    client_gone: bool = False

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return self.expires_at - time.monotonic()

    def check(self) -> None:
        """Raise if the work should stop.

        Raises:
            ClientGoneError: the client disconnected.
            InferenceTimeoutError: the time limit passed (504).
        """
        if self.client_gone:
            raise ClientGoneError
        if self.remaining() <= 0:
            raise InferenceTimeoutError(f"no result within {self.timeout_s:g} s")
