"""Fast JSON responses (orjson, NumPy arrays serialised natively), and JSON-or-PNG negotiation."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class FastJSONResponse(JSONResponse):
    """``JSONResponse`` rendered by orjson: several times faster for arrays of floats."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


def wants_png(request: Request, format_option: str | None) -> bool:
    """Whether a route that answers JSON or a picture should draw: ``format=png``, or (with no
    ``format``) an ``Accept`` that asks for PNG and not for JSON."""
    if format_option is not None:
        return format_option == "png"
    accept = request.headers.get("accept", "")
    return "image/png" in accept and "application/json" not in accept
