"""Resource limits of a request: body size, decode memory, time, and its client staying.

- ``BodySizeLimitMiddleware``: bodies over the limit are refused before they are read;
- ``MemoryBudget``: image decodes in one process hold at most so much memory together;
- ``Deadline``: a request's work stops when its time is up or its client has gone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import (
    ClientGoneError,
    InferenceTimeoutError,
    PayloadTooLargeError,
    error_response,
)


class BodySizeLimitMiddleware:
    """Rejects bodies over ``max_body_bytes`` with 413.

    A declared ``Content-Length`` over the limit is refused before a byte is read; a chunked
    body is counted as it streams in and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._refuse(scope, send, 400, "bad_request", "invalid Content-Length header")
                return
            if int(declared) > self.max_body_bytes:
                await self._refuse_too_large(scope, send)
                return
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # The app's exception handlers turn this into the 413 JSON error.
                    raise PayloadTooLargeError(self._too_large_message())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except PayloadTooLargeError:
            if not response_started:  # Raised where no handler saw it.
                await self._refuse_too_large(scope, send)

    def _too_large_message(self) -> str:
        return f"request body exceeds the limit of {self.max_body_bytes} bytes"

    async def _refuse_too_large(self, scope: Scope, send: Send) -> None:
        await self._refuse(scope, send, 413, "payload_too_large", self._too_large_message())

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
        response = error_response(status, code, message, path=scope["path"])
        await send(
            {"type": "http.response.start", "status": status, "headers": response.raw_headers}
        )
        await send({"type": "http.response.body", "body": response.body})


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
    client_gone: threading.Event = field(default_factory=threading.Event)

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
        if self.client_gone.is_set():
            raise ClientGoneError
        if self.remaining() <= 0:
            raise InferenceTimeoutError(f"no result within {self.timeout_s:g} s")
