"""Request body size limit, enforced before the body is read."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLargeError, error_response


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
                await self._refuse(send, 400, "bad_request", "invalid Content-Length header")
                return
            if int(declared) > self.max_body_bytes:
                await self._refuse_too_large(send)
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
                await self._refuse_too_large(send)

    def _too_large_message(self) -> str:
        return f"request body exceeds the limit of {self.max_body_bytes} bytes"

    async def _refuse_too_large(self, send: Send) -> None:
        await self._refuse(send, 413, "payload_too_large", self._too_large_message())

    @staticmethod
    async def _refuse(send: Send, status: int, code: str, message: str) -> None:
        response = error_response(status, code, message)
        await send(
            {"type": "http.response.start", "status": status, "headers": response.raw_headers}
        )
        await send({"type": "http.response.body", "body": response.body})
