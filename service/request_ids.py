"""Request IDs: each request's ``X-Request-ID`` (the client's, or one made here) is echoed on its
response, errors included, and named in every log line written while it is served.

A client's ID is kept when it is 1-128 characters of letters, digits and ``._~:/+=@-`` (what
proxies and tracing tools send); anything else is replaced, so that a log line cannot be forged
through it. The V2 protocol's own ``id`` field is a separate thing and is echoed as it is.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

HEADER = b"x-request-id"
CURRENT: ContextVar[str] = ContextVar("request_id", default="")
ACCEPTED = re.compile(rb"[A-Za-z0-9._~:/+=@-]{1,128}")


def request_id(offered: bytes | None) -> str:
    """The client's ID when it is acceptable, else a new random one (32 hex digits)."""
    if offered is not None and ACCEPTED.fullmatch(offered):
        return offered.decode("ascii")
    return uuid.uuid4().hex


class RequestIdLogFilter(logging.Filter):
    """Adds ``request`` to every record: `` [<id>]`` while a request is served, else empty."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = CURRENT.get()
        record.request = f" [{current}]" if current else ""
        return True
