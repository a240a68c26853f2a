"""Whole numbers read from request text (headers, query strings, form fields): one parser.

``str.isdigit`` accepts '²' and other Unicode digits that ``int`` then refuses, and ``int``
refuses more than 4,300 digits: either was a 500. Here a number is 1 to 18 ASCII digits
(anything up to 10**18 - 1 fits a signed 64-bit integer), and anything else is "not a number".
"""

from __future__ import annotations

import re

WHOLE_NUMBER = re.compile(rb"[0-9]{1,18}")


def whole_number(text: str | bytes) -> int | None:
    """The value of ``text`` (surrounding spaces ignored), or None if it is not a whole number."""
    raw = text.encode("latin-1", "replace") if isinstance(text, str) else text
    raw = raw.strip(b" \t")
    return int(raw) if WHOLE_NUMBER.fullmatch(raw) else None
