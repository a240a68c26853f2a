"""Admission control: under overload, refuse inference requests early, cheaply and slowly.

A request is admitted before its body is read if its worker has room for one more request in
flight and for its body's bytes; otherwise it gets 503 with a ``Retry-After`` worked out from the
work already queued. The refusal is held back for a moment first (``OVERLOAD_PAUSE_MS``):
clients that retry at once (a retry storm) then cost the worker one refusal per pause each
instead of thousands a second, and the CPU goes to the requests being served.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from service.errors import OverloadedError

if TYPE_CHECKING:
    from service.metrics import ServiceMetrics

# Smoothing of the throughput estimate: the weight of each new batch.
THROUGHPUT_SMOOTHING = 0.05


@dataclass
class Throughput:
    """Items per second the model gets through, from recent batches (exponentially smoothed)."""

    items_per_s: float = 0.0

    def observe(self, items: int, seconds: float) -> None:
        if seconds <= 0:
            return
        rate = items / seconds
        if self.items_per_s == 0.0:
            self.items_per_s = rate
        else:
            self.items_per_s += THROUGHPUT_SMOOTHING * (rate - self.items_per_s)

    def drain_seconds(self, queued_items: int) -> float:
        """How long the queued items will take, at the recent rate."""
        return queued_items / self.items_per_s if self.items_per_s > 0 else 1.0


@dataclass
class Admission:
    """Per-process room for requests in flight and for their bodies' bytes."""

    max_requests: int
    max_body_bytes: int
    max_pause_s: float
    throughput: Throughput = field(default_factory=Throughput)
    in_flight: int = 0
    body_bytes: int = 0

    def try_admit(self, body_bytes: int) -> bool:
        if (
            self.in_flight >= self.max_requests
            or self.body_bytes + body_bytes > self.max_body_bytes
        ):
            return False
        self.in_flight += 1
        self.body_bytes += body_bytes
        return True

    def release(self, body_bytes: int) -> None:
        self.in_flight -= 1
        self.body_bytes -= body_bytes

    async def enter(
        self, body_bytes: int, queued_items: Callable[[], int], metrics: ServiceMetrics
    ) -> None:
        """Admit a request (``leave`` when it is answered), or refuse it after the overload
        pause, whatever protocol it came by.

        Raises:
            OverloadedError: no room; its Retry-After is worked out from the work queued.
        """
        if self.try_admit(body_bytes):
            metrics.inflight_requests.set(self.in_flight)
            return
        metrics.overload_refusals.inc()
        queued = queued_items()
        await asyncio.sleep(self.pause_s())
        raise OverloadedError(
            "the server is at capacity; retry after the time in Retry-After",
            details={"in_flight": self.in_flight, "queued_items": queued},
            headers={"Retry-After": str(self.retry_after_s(queued))},
        )

    def leave(self, body_bytes: int, metrics: ServiceMetrics) -> None:
        """An admitted request has been answered."""
        self.release(body_bytes)
        metrics.inflight_requests.set(self.in_flight)

    def retry_after_s(self, queued_items: int) -> int:
        """Whole seconds until the queue has drained, at least 1."""
        return max(1, math.ceil(self.throughput.drain_seconds(queued_items)))

    def pause_s(self) -> float:
        """How long to hold a refusal: a refused client is one too many, so the whole pause.

        Clients that honour Retry-After wait at least a second anyway; one that retries at once
        gets its answer only after the pause, which bounds how often each such connection costs
        the worker a refusal (about 1,000 refusals a second for 1,000 connections).
        """
        return self.max_pause_s
