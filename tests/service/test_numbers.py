"""service/numbers.py: the one parser of whole numbers in request text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.numbers import whole_number


@pytest.mark.parametrize(
    "text", ["²", "١٢", "-1", "+5", "0x10", "1e3", "1_000", "", " ", "9" * 19, "9" * 5000]
)
def test_whole_number_refuses_what_is_not_1_to_18_ascii_digits(text: str) -> None:
    assert whole_number(text) is None
    assert whole_number(text.encode()) is None


@given(st.integers(0, 10**18 - 1))
def test_whole_number_reads_every_number_that_fits_64_bits(number: int) -> None:
    assert whole_number(f" {number}\t") == number
    assert whole_number(str(number).encode()) == number
