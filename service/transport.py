"""HTTP transport guards, below and around the app.

``guarded_protocol``: uvicorn's httptools protocol with a cap on header size and time limits on
receiving headers and bodies, so that slow or endless clients cannot hold connections forever,
with connections balanced across worker processes (``ConnectionShare``), and with each response
sent in one piece (``OneSendTransport``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from http import HTTPStatus
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import Settings
from service.errors import V2_PREFIX, error_response

logger = logging.getLogger("service.transport")
# (status, error code, message) of a response that ends a connection.
_Refusal = tuple[int, str, str]


class ConnectionShare:
    """This worker's count of open connections, beside its siblings', in shared memory.

    The kernel spreads new connections over the workers' ``SO_REUSEPORT`` sockets by hash, so a
    few long-lived connections (a load balancer's pool, a client's keep-alive pool) often land
    unevenly: 3 and 1, or 4 and 0. A worker holding more than its fair share (all connections
    over the number of workers, rounded up) answers a request with ``Connection: close``; the
    client reconnects, lands by hash again, and within a few requests the load is even.

    Connections already told to close still count until they are gone, so a worker sheds exactly
    its excess, one connection each, not every connection whose request arrives meanwhile (which
    would send them all elsewhere and start the imbalance over).
    """

    counts: Any = None  # multiprocessing Array of ints, one per worker; None: one process
    index = 0
    closing = 0  # This worker's connections told to close, not yet gone.

    @classmethod
    def attach(cls, counts: Any, index: int) -> None:
        cls.counts, cls.index, cls.closing = counts, index, 0
        counts[index] = 0  # A replaced worker's connections died with it.

    @classmethod
    def opened(cls, change: int) -> None:
        if cls.counts is not None:
            cls.counts[cls.index] += change  # Only this worker writes its own slot.

    @classmethod
    def should_shed(cls) -> bool:
        """Whether to close this connection after its response (and count it as closing)."""
        if cls.counts is None:
            return False
        counts: list[int] = list(cls.counts)
        staying = counts[cls.index] - cls.closing
        if staying <= math.ceil(sum(counts) / len(counts)) or staying - min(counts) < 2:
            return False
        cls.closing += 1
        return True

    @classmethod
    def shed_one_gone(cls) -> None:
        cls.closing = max(0, cls.closing - 1)


class OneSendTransport(asyncio.Transport):
    """A connection's transport whose writes within one turn of the event loop leave together.

    uvicorn writes a response's head and its body separately: two ``send`` calls, and to a
    client on the same host or network two packets and two wake-ups. Here writes are held until
    the end of the loop's current turn (``call_soon``), then sent with one ``writelines``: a
    whole response in one system call. Nothing waits longer than the current turn, so a
    streaming response or a ``100 Continue`` goes out as before. Closing sends what is held
    first; aborting drops it, as aborting drops the transport's own buffer.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self._send_held)
        self._held.append(bytes(data))

    def _send_held(self) -> None:
        if self._held and not self._transport.is_closing():
            self._transport.writelines(self._held)
        self._held = []

    def close(self) -> None:
        self._send_held()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))


def _raw_error(status: int, code: str, message: str, path: str) -> bytes:
    """A complete HTTP/1.1 response in the error shape the app uses for ``path`` (under /v2,
    the protocol's, with Triton's status), for closing a connection."""
    response = error_response(status, code, message, path=path)
    reason = HTTPStatus(response.status_code).phrase
    head = (
        f"HTTP/1.1 {response.status_code} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(response.body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + bytes(response.body)


class _GuardedHttpToolsProtocol(HttpToolsProtocol):
    """httptools with limits: header bytes, time to send the headers, time to send the body."""

    max_header_bytes = 16 * 1024
    header_timeout_s = 10.0
    body_timeout_s = 60.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneSendTransport(transport, self.loop))
        ConnectionShare.opened(+1)
        self._shedding = False
        self._refusal_after_answers: _Refusal | None = None
        self._parse_refusal: _Refusal | None = None
        self._header_bytes = 0
        self._path_start = b""  # The request path's first bytes: enough to tell /v2 apart.
        self._framing_headers: set[bytes] = set()
        self._last_data = b""
        self._timer: asyncio.TimerHandle | None = None
        self._arm(self.header_timeout_s, "send its request headers")

    def _arm(self, seconds: float, doing: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._too_slow, doing, seconds)

    def _disarm(self) -> None:
        if getattr(self, "_timer", None) is not None:
            assert self._timer is not None
            self._timer.cancel()
            self._timer = None

    def _too_slow(self, doing: str, seconds: float) -> None:
        self._timer = None
        if self.cycle is not None and self.cycle.response_started:
            return  # The app answered already; its response will end the exchange.
        logger.info("closing a connection that took over %g s to %s", seconds, doing)
        self._refuse(408, "timeout", f"the client took over {seconds:g} s to {doing}")

    def _refuse(self, status: int, code: str, message: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(
                _raw_error(status, code, message, self._path_start.decode("latin-1"))
            )
            self.transport.close()

    def _refuse_in_turn(self, refusal: _Refusal) -> None:
        """Refuse a request whose earlier, valid neighbours on the connection (pipelined in the
        same packet) are still being answered: after their responses, not instead of them."""
        if self._answering():
            self._refusal_after_answers = refusal
            self.flow.pause_reading()  # The parser has stopped; nothing more is read.
            return
        self._refuse(*refusal)

    def _answering(self) -> bool:
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        refusal = self._refusal_after_answers
        if refusal is not None and not self._answering():
            self._refusal_after_answers = None
            self._refuse(*refusal)

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP (a bad request line or header): the error shape, not plain text.

        uvicorn calls this when the parser stops, also when one of the callbacks here stopped
        it on purpose (``_parse_refusal``: headers too large).
        """
        self._disarm()
        refusal = self._parse_refusal or (400, "bad_request", self._malformed_reason())
        self._refuse_in_turn(refusal)

    def data_received(self, data: bytes) -> None:
        self._last_data = data  # For _malformed_reason: uvicorn drops the parser's message.
        super().data_received(data)

    def _malformed_reason(self) -> str:
        # The parser stops at the second of the two headers, before on_header sees it.
        other = {b"content-length": b"transfer-encoding", b"transfer-encoding": b"content-length"}
        seen = [other[name] for name in self._framing_headers]
        if len(seen) == 1 and seen[0] + b":" in self._last_data.lower():
            # RFC 9112 section 6.3 lets a server refuse these, and refusing them closes the
            # request-smuggling gap between a proxy that reads one header and this server.
            return (
                "malformed HTTP request: both Content-Length and Transfer-Encoding; send one "
                "(refused against request smuggling)"
            )
        return "malformed HTTP request"

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._path_start = b""
        self._framing_headers = set()
        self._arm(self.header_timeout_s, "send its request headers")

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        if len(self._path_start) < len(V2_PREFIX) + 1:  # The URL may arrive in pieces.
            self._path_start = (self._path_start + url[:8]).split(b"?")[0]
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            self._framing_headers.add(lowered)
        super().on_header(name, value)

    def _count_header_bytes(self, amount: int) -> None:
        self._header_bytes += amount
        if self._header_bytes > self.max_header_bytes:
            self._parse_refusal = (
                431,
                "headers_too_large",
                f"the request line and headers exceed {self.max_header_bytes} bytes",
            )
            # Stops the parser: uvicorn then calls send_400_response, which refuses in turn.
            raise httptools.HttpParserError("headers too large")

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return
        self._arm(self.body_timeout_s, "send its request body")
        super().on_headers_complete()
        if self.cycle is not None and not self._shedding and ConnectionShare.should_shed():
            self._shedding = True
            self.cycle.keep_alive = False  # Answered with Connection: close; see ConnectionShare.

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        ConnectionShare.opened(-1)
        if self._shedding:
            ConnectionShare.shed_one_gone()
        super().connection_lost(exc)


def guarded_protocol(settings: Settings) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=``, with the limits from ``settings``."""
    return type(
        "GuardedHttpToolsProtocol",
        (_GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": settings.max_header_bytes,
            "header_timeout_s": settings.header_timeout_s,
            "body_timeout_s": settings.body_timeout_s,
        },
    )
