"""Resource limits of a request: decode memory, time, and its client staying.

(Body size is enforced by ``service.edge.EdgeMiddleware``, before the body is read.)

- ``MemoryBudget``: image decodes in one process hold at most so much memory together;
- ``Deadline``: a request's work stops when its time is up or its client has gone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

from service.errors import ClientGoneError, InferenceTimeoutError, PayloadTooLargeError


class MemoryBudget:
    """A weighted semaphore over bytes: each decode reserves what it will hold, or waits.

    With one budget per process, the memory that concurrent image decodes hold together stays
    below ``capacity`` however many requests arrive; an image that alone needs more is refused.
    Decoding threads take and give back bytes themselves (``try_take``, ``give_back``), so that
    an image whose bytes are free is opened, checked and decoded in one thread hop; only one
    that must wait goes back to the event loop for it (``wait_and_take``).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.available = capacity
        self._lock = threading.Lock()
        self._freed: asyncio.Event | None = None  # Made on the event loop by the first waiter.
        self._loop: asyncio.AbstractEventLoop | None = None

    def check(self, amount: int) -> None:
        """Raises PayloadTooLargeError when ``amount`` exceeds the whole budget."""
        if amount > self.capacity:
            raise PayloadTooLargeError(
                f"decoding this image would take about {amount // 2**20} MiB; the limit is "
                f"{self.capacity // 2**20} MiB (send a smaller image, or a JPEG)"
            )

    def try_take(self, amount: int) -> bool:
        """Take ``amount`` bytes if they are free now (from any thread)."""
        with self._lock:
            if self.available < amount:
                return False
            self.available -= amount
            return True

    def give_back(self, amount: int) -> None:
        """Return bytes taken, and wake the waiters on the event loop (from any thread)."""
        with self._lock:
            self.available += amount
        loop, freed = self._loop, self._freed
        if loop is None or freed is None:
            return  # Nobody has ever waited.
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            freed.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(freed.set)

    async def wait_and_take(self, amount: int) -> None:
        """Take ``amount`` bytes, waiting on the event loop until they are free."""
        if self._freed is None:
            self._loop, self._freed = asyncio.get_running_loop(), asyncio.Event()
        while True:
            self._freed.clear()
            if self.try_take(amount):
                return
            await self._freed.wait()


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
