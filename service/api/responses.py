"""Fast JSON responses (orjson, NumPy arrays serialised natively)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class FastJSONResponse(JSONResponse):
    """``JSONResponse`` rendered by orjson: several times faster for arrays of floats."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)
