"""Request IDs: each request's ``X-Request-ID`` (the client's, or one made here) is echoed on its
response, errors included, and named in every log line written while it is served.

A client's ID is kept when it is 1-128 characters of letters, digits and ``._~:/+=@-`` (what
proxies and tracing tools send); anything else is replaced, so that a log line cannot be forged
through it. The V2 protocol's own ``id`` field is a separate thing and is echoed as it is.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

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


# Fields an access line adds (``logger.info(..., extra=ACCESS_FIELDS...)``), as JSON keys.
ACCESS_FIELDS = ("method", "route", "status", "duration_ms")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, request_id
    (while a request is served), the access fields when present, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = CURRENT.get()
        if current:
            document["request_id"] = current
        for field in ACCESS_FIELDS:
            if hasattr(record, field):
                document[field] = getattr(record, field)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)
