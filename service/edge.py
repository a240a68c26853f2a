"""``EdgeMiddleware``: everything a request meets before the app, in one pass.

In order: hidden operator routes (404), cross-origin browser requests (403), API keys (401), a
declared body over the limit (413), admission under overload (503, before the body is read);
then the app, with HEAD answered like GET, every response carrying the request's
``X-Request-ID`` (``service.request_ids``), the body counted as it streams (413 past the limit),
and a request cut off by shutdown answered with the JSON error (503). Every request is counted
and timed for /metrics, refusals included.

One middleware instead of one per concern: each extra ASGI layer wraps ``send`` once more and
costs every request a few microseconds, which at thousands of requests per second per core was
a quarter of the service's time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import request_ids
from service.admission import Admission
from service.errors import INTERNAL_ERROR, OverloadedError, PayloadTooLargeError, error_response
from service.metrics import ServiceMetrics
from service.numbers import whole_number
from service.security import ApiKeys, ExposureRules, OriginPolicy
from service.tracing import Tracing

logger = logging.getLogger("service")
access_logger = logging.getLogger("service.access")


def _log_access(method: str, route: str, status: int, seconds: float) -> None:
    """One line per request (``CNN_SERVE_ACCESS_LOG``), its fields also as the JSON keys of
    ``service.request_ids.JsonLogFormatter``."""
    duration_ms = round(seconds * 1000, 2)
    access_logger.info(
        "%s %s %d %.2f ms",
        method,
        route,
        status,
        duration_ms,
        extra={"method": method, "route": route, "status": status, "duration_ms": duration_ms},
    )


@dataclass
class _Exchange:
    """One request's response as it goes out: its status, and whether it started.

    ``scope`` is what the app sees: for HEAD, a copy that says GET, so that routes declared for
    GET answer it. The server's own scope keeps HEAD, so uvicorn sends the head of the response
    with its Content-Length and drops the body itself (changing the server's scope made it
    expect the body, log "Response content shorter than Content-Length" and drop the
    connection).
    """

    send: Send
    scope: Scope
    request_id: bytes = b""
    status: int = 500
    started: bool = False

    async def forward(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status, self.started = message["status"], True
            headers = [*message.get("headers", []), (request_ids.HEADER, self.request_id)]
            message = {**message, "headers": headers}
        await self.send(message)

    async def refuse(
        self,
        scope: Scope,
        status: int,
        code: str,
        message: str,
        details: object = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        response = error_response(status, code, message, details, headers, path=scope["path"])
        await self.forward(  # The response's status: under /v2, Triton's (V2_STATUS).
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await self.forward({"type": "http.response.body", "body": response.body})


@dataclass(frozen=True)
class _Headers:
    """The few request headers the edge looks at, read in one pass over the raw list."""

    content_length: bytes | None = None
    origin: str | None = None
    host: str | None = None
    authorization: str | None = None
    request_id: bytes | None = None

    @classmethod
    def of(cls, scope: Scope) -> _Headers:
        found: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _LOOKED_AT:
                found.setdefault(name, value)
        text = {key: value.decode("latin-1") for key, value in found.items()}
        return cls(
            found.get(b"content-length"),
            text.get(b"origin"),
            text.get(b"host"),
            text.get(b"authorization"),
            found.get(request_ids.HEADER),
        )


_LOOKED_AT = (b"content-length", b"origin", b"host", b"authorization", request_ids.HEADER)


class EdgeMiddleware:
    """The outermost layer of the app (see the module's docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        metrics: ServiceMetrics,
        admission: Admission,
        api_keys: ApiKeys,
        origins: OriginPolicy,
        exposure: ExposureRules,
        is_inference: Callable[[Scope], bool],
        access_log: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        self.app = app
        self.is_inference = is_inference  # Which requests admission decides on.
        self.access_log = access_log
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.admission = admission
        self.api_keys = api_keys
        self.origins = origins
        self.exposure = exposure
        self.tracing = tracing or Tracing()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        exchange = _Exchange(send, {**scope, "method": "GET"} if method == "HEAD" else scope)
        headers = _Headers.of(scope)
        identity = request_ids.request_id(headers.request_id)
        exchange.request_id = identity.encode("ascii")
        token = request_ids.CURRENT.set(identity)
        try:
            if self.tracing.enabled:
                await self._traced(exchange, receive, headers)
            else:
                await self._handle(exchange.scope, receive, exchange, headers)
        except PayloadTooLargeError as error:  # From the counting receive, where no handler saw it.
            if not exchange.started:
                await exchange.refuse(scope, 413, "payload_too_large", error.message)
        except asyncio.CancelledError:
            # Shutdown's grace period is over and uvicorn cancels what still runs.
            if exchange.started:
                raise
            await exchange.refuse(
                scope,
                503,
                "shutting_down",
                "the server stopped before this request finished; retry",
                headers={"Retry-After": "1"},
            )
            # Answered; the task was cancelled to end it, and now ends normally.
        except Exception:
            # A bug: logged here, while the request's ID is current, and answered as 500 with
            # that ID (Starlette's own handler would answer outside this layer, without it).
            logger.exception("unexpected error on %s %s", method, scope["path"])
            if exchange.started:
                raise
            await exchange.refuse(scope, *INTERNAL_ERROR)
        finally:
            template = getattr(exchange.scope.get("route"), "path", "unmatched")
            seconds = time.perf_counter() - started
            self.metrics.observe_exchange(method, template, exchange.status, seconds)
            if self.access_log:
                _log_access(method, template, exchange.status, seconds)
            request_ids.CURRENT.reset(token)

    async def _traced(self, exchange: _Exchange, receive: Receive, headers: _Headers) -> None:
        """``_handle`` inside the request's server span (``service/tracing.py``)."""
        scope = exchange.scope
        with self.tracing.request(scope["method"], scope["path"], scope["headers"]) as span:
            try:
                await self._handle(scope, receive, exchange, headers)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    span.update_name(f"{scope['method']} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", exchange.status)
                span.set_attribute("request.id", exchange.request_id.decode("ascii"))

    async def _handle(
        self, scope: Scope, receive: Receive, exchange: _Exchange, headers: _Headers
    ) -> None:
        if not self.exposure.allowed(scope):
            refusal = self.exposure.refusal(scope["path"])
            await exchange.refuse(scope, 404, "not_found", refusal)
            return
        if self.origins.refuses(headers.origin, headers.host):
            await exchange.refuse(
                scope,
                403,
                "forbidden_origin",
                f"requests from pages of {headers.origin} are not allowed (see "
                "CNN_SERVE_CORS_ALLOW_ORIGINS, and CNN_SERVE_TRUSTED_HOSTS for the service's own "
                "host names)",
            )
            return
        if not self.api_keys.admits(scope, headers.authorization):
            await exchange.refuse(
                scope,
                401,
                "unauthorized",
                "this route needs an API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": 'Bearer realm="cnn-serve"'},
            )
            return
        declared = None if headers.content_length is None else whole_number(headers.content_length)
        if headers.content_length is not None and declared is None:
            await exchange.refuse(scope, 400, "bad_request", "invalid Content-Length header")
            return
        if declared is not None and declared > self.max_body_bytes:
            await exchange.refuse(scope, 413, "payload_too_large", self._too_large())
            return
        if not self.is_inference(scope):
            await self.app(scope, self._counting(receive), exchange.forward)
            return
        body_bytes = self.max_body_bytes if declared is None else declared
        try:
            await self.admission.enter(body_bytes, lambda: _queued_items(scope), self.metrics)
        except OverloadedError as refusal:
            await exchange.refuse(
                scope,
                refusal.status_code,
                refusal.code,
                refusal.message,
                details=refusal.details,
                headers=refusal.headers,
            )
            return
        try:
            await self.app(scope, self._counting(receive), exchange.forward)
        finally:
            self.admission.leave(body_bytes, self.metrics)

    def _too_large(self) -> str:
        return f"request body exceeds the limit of {self.max_body_bytes} bytes"

    def _counting(self, receive: Receive) -> Receive:
        """``receive`` that refuses a body (413) as soon as it streams past the limit."""
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # The app's exception handlers turn this into the 413 JSON error.
                    raise PayloadTooLargeError(self._too_large())
            return message

        return counting_receive


def _queued_items(scope: Scope) -> int:
    """Items waiting in the app's inference queues (0 while it starts or stops)."""
    serving = getattr(scope["app"].state, "serving", None)
    return serving.queued_items if serving else 0
