"""service/payloads.py and service/options.py on their own: every body form, options, bounds."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from service.errors import (
    BadRequestError,
    InvalidInputError,
    PayloadTooLargeError,
    ServiceError,
    UnsupportedMediaTypeError,
)
from service.options import FeatureMapOptions, PredictOptions, parse_options
from service.payloads import Payload, PayloadLimits, parse_shape, read_payload
from tests.conftest import ROOT

LIMITS = PayloadLimits(max_items=8, image_size=(28, 28))


def request_with(
    body: bytes, content_type: str | None, query: str = "", headers: Mapping[str, str] = {}
) -> Request:
    """A Starlette request whose body is ``body``, as the server would hand it over."""
    raw_headers = [(key.lower().encode(), value.encode()) for key, value in headers.items()]
    if content_type is not None:
        raw_headers.append((b"content-type", content_type.encode()))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "query_string": query.encode(),
        "headers": raw_headers,
    }
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    return Request(scope, receive)


def read(
    body: bytes,
    content_type: str | None,
    query: str = "",
    headers: Mapping[str, str] = {},
    options: type[PredictOptions] = PredictOptions,
) -> Payload:
    return asyncio.run(
        read_payload(request_with(body, content_type, query, headers), options, LIMITS)
    )


def npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values)
    return buffer.getvalue()


def test_json_instances_become_a_float_array() -> None:
    payload = read(json.dumps({"instances": [[[0.5] * 28] * 28] * 2}).encode(), "application/json")
    assert payload.array is not None and payload.array.shape == (2, 28, 28)
    assert payload.array.dtype == np.float32 and payload.count == 2


def test_raw_uint8_without_shape_is_a_whole_number_of_images() -> None:
    payload = read(
        (np.arange(8 * 784) % 256).astype(np.uint8).tobytes(), "application/octet-stream"
    )
    assert payload.array is not None and payload.array.shape == (8, 28, 28)
    assert payload.array.max() == 1.0


def test_raw_float32_with_shape() -> None:
    values = np.full((3, 784), 0.25, dtype="<f4")
    payload = read(
        values.tobytes(),
        "application/octet-stream",
        headers={"x-dtype": "float32", "x-shape": "3x784"},
    )
    assert payload.array is not None and payload.array.shape == (3, 784)


@pytest.mark.parametrize(
    "header, values",
    [
        ("4294967296,4294967296", 0),  # Products that would overflow 64 bits.
        ("49,16,1152921504606846977", 784),
        (",".join(["1"] * 65), 1),  # Too many dimensions.
        ("28,²8", 784),  # Digits that are not ASCII.
        ("-1,28,28", 784),
        ("", 784),
    ],
)
def test_hostile_shapes_are_refused(header: str, values: int) -> None:
    with pytest.raises(InvalidInputError, match="X-Shape"):
        parse_shape(header, values)


def test_npy_header_is_checked_against_its_data_before_allocating() -> None:
    honest = npy(np.zeros((2, 28, 28), dtype=np.uint8))
    lying = honest.replace(b"(2, 28, 28)", b"(1099511627776,)".ljust(11))
    with pytest.raises(InvalidInputError, match="declares shape"):
        read(lying, "application/x-npy")
    payload = read(honest, "application/x-npy")
    assert payload.array is not None and payload.array.shape == (2, 28, 28)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x93NUMPY",
        b"\x93NUMPY\x01\x00\x10\x00{'descr': 'O8'}",
        npy(np.zeros((1, 28, 28), dtype=np.complex64)),
        b"\x93NUMPY\x09\x00\x00\x00",  # An unknown format version.
    ],
)
def test_broken_or_exotic_npy_is_422(body: bytes) -> None:
    with pytest.raises(InvalidInputError):
        read(body, "application/x-npy")


def test_fortran_ordered_npy_keeps_its_values() -> None:
    values = np.asfortranarray(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28))
    payload = read(npy(values), "application/x-npy")
    assert payload.array is not None
    np.testing.assert_allclose(payload.array * 255, values, atol=1e-3)


def test_json_value_floods_are_refused_before_parsing() -> None:
    flood = b'{"instances": [' + b"[]," * 200_000 + b"[]]}"
    with pytest.raises(PayloadTooLargeError, match="values"):
        read(flood, "application/json")


def test_a_full_json_batch_is_not_a_flood() -> None:
    batch = {"instances": np.zeros((8, 28, 28)).round(3).tolist()}
    assert read(json.dumps(batch).encode(), "application/json").count == 8


@pytest.mark.parametrize(
    "content_type, body, error",
    [
        ("application/json", b"{", BadRequestError),
        ("application/json", b"[1]", InvalidInputError),
        ("application/json", b'{"instances": [], "colour": 1}', InvalidInputError),
        ("text/csv", b"1,2", UnsupportedMediaTypeError),
        (None, b"1,2", UnsupportedMediaTypeError),
        ("application/json", b'{"instances": [[0.0]]}', None),
    ],
)
def test_bad_bodies_raise_their_error(
    content_type: str | None, body: bytes, error: type[ServiceError] | None
) -> None:
    if error is None:
        assert read(body, content_type).count == 1
        return
    with pytest.raises(error):
        read(body, content_type)


def test_batch_limits() -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        read(b'{"instances": []}', "application/json")
    with pytest.raises(PayloadTooLargeError) as raised:
        read(bytes(784 * 9), "application/octet-stream")
    assert raised.value.details == {"max_items_per_request": 8}


def multipart(fields: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart body of (name, filename or None for text, content) parts."""
    boundary = "testboundary"
    parts = []
    for name, filename, content in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        parts.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def test_multipart_files_and_option_fields() -> None:
    body, content_type = multipart(
        [("files", "a.png", b"png-a"), ("files", "b.png", b"png-b"), ("top_k", None, b"3")]
    )
    payload = read(body, content_type)
    assert payload.images == [b"png-a", b"png-b"] and payload.options.top_k == 3


def test_multipart_in_the_wrong_field_names_both_fields() -> None:
    body, content_type = multipart([("file", "a.png", b"png-a")])
    with pytest.raises(InvalidInputError) as raised:
        read(body, content_type)
    assert "'files'" in raised.value.message and "['file']" in raised.value.message
    assert raised.value.details == {"expected_field": "files", "received_fields": ["file"]}


def test_body_options_override_query_options() -> None:
    payload = read(b'{"instances": [[0.0]], "top_k": 2}', "application/json", query="top_k=5")
    assert payload.options.top_k == 2
    assert read(b'{"instances": [[0.0]]}', "application/json", "top_k=5").options.top_k == 5


@pytest.mark.parametrize(
    "query",
    ["top_k=%C2%B2", "top_k=", "top_k=2.5", "top_k=0", "top_k=-5", "preprocess=sharpen", "x=1"],
)
def test_bad_query_options_are_422_with_their_location(query: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        read(b'{"instances": [[0.0]]}', "application/json", query=query)
    assert raised.value.details[0]["location"][0] == "query"  # type: ignore[index]


@pytest.mark.parametrize("value", [True, 2.5, "2.5", "many", -1, [3]])
def test_top_k_must_be_a_whole_number(value: object) -> None:
    with pytest.raises(InvalidInputError, match="top_k"):
        parse_options(PredictOptions, [("body", {"top_k": value})])


@pytest.mark.parametrize("value", [3, "3", " 3 "])
def test_top_k_in_text_is_read_as_a_number(value: object) -> None:
    # Query strings and form fields carry text; "3" means 3 wherever it comes from.
    assert parse_options(PredictOptions, [("body", {"top_k": value})]).top_k == 3


def test_layers_accept_lists_commas_and_repeats() -> None:
    def layers(value: object) -> list[str] | None:
        return parse_options(FeatureMapOptions, [("query", {"layers": value})]).layers

    assert layers("conv1,pool2") == ["conv1", "pool2"]
    assert layers(["conv1", "pool2, conv3"]) == ["conv1", "pool2", "conv3"]
    assert layers("") is None
    with pytest.raises(InvalidInputError):
        layers(7)


def test_feature_map_options_are_not_predict_options() -> None:
    with pytest.raises(InvalidInputError, match="layers"):
        parse_options(PredictOptions, [("query", {"layers": "conv1"})])


@pytest.mark.parametrize("files", [257, 300])
def test_too_many_files_is_413_however_many(client: TestClient, files: int) -> None:
    """One file over the limit or many: the same 413, not a 400 from the multipart parser."""
    png = (ROOT / "examples" / "digit-7.png").read_bytes()
    response = client.post(
        "/predict", files=[("files", (f"{i}.png", png, "image/png")) for i in range(files)]
    )
    assert response.status_code == 413
    assert response.json()["error"]["details"] == {"max_items_per_request": 256}
