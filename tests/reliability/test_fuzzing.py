"""No input gets a 5xx: schemathesis over every documented operation of the real server, and
hypothesis over malformed headers and mutated image files.

The seeds are fixed (``derandomize=True``), so CI runs the same cases every time; raise
``FUZZ_EXAMPLES`` to explore further by hand.
"""

from __future__ import annotations

import io
import json
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlencode

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from model_card import PreprocessingSpec
from service.app import create_app
from service.errors import ServiceError
from service.preprocessing import ImageLimits, prepare_image
from tests.conftest import make_settings
from tests.servers import LiveService, running_service

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def live() -> Iterator[LiveService]:
    with running_service(workers=1, max_image_pixels=4_000_000) as service:
        yield service


@pytest.fixture(scope="module")
def live_schema(live: LiveService) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json")


def documented_operations() -> list[tuple[str, str]]:
    """(method, path) of every operation in the OpenAPI schema, read from the app itself."""
    spec = create_app(make_settings()).openapi()
    return [
        (method.upper(), path)
        for path, item in sorted(spec["paths"].items())
        for method in sorted(item)
    ]


@pytest.mark.parametrize("method, path", documented_operations())
def test_every_operation_answers_without_server_errors(
    live_schema: schemathesis.BaseSchema, live: LiveService, method: str, path: str
) -> None:
    """Responses are never 5xx, and match their documented status codes, types and schemas."""
    operation = live_schema[path][method]

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy())
    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=live.url,
            checks=[
                schemathesis.checks.not_a_server_error,
                schemathesis.checks.status_code_conformance,
                schemathesis.checks.content_type_conformance,
                schemathesis.checks.response_schema_conformance,
            ],
            timeout=30,
        )

    call()


HEADER_TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=80)


@FUZZ_SETTINGS
@given(
    content_type=st.one_of(
        st.sampled_from(
            [
                "application/octet-stream",
                "application/x-npy",
                "application/json",
                "multipart/form-data",
                "multipart/form-data; boundary=",
                "image/png",
            ]
        ),
        HEADER_TEXT,
    ),
    shape=st.one_of(st.none(), HEADER_TEXT, st.lists(st.integers(-2, 2**70), max_size=70)),
    dtype=st.one_of(st.none(), HEADER_TEXT),
    query=st.dictionaries(
        st.sampled_from(["top_k", "preprocess", "layers", "format", "x"]), HEADER_TEXT, max_size=3
    ),
    body=st.binary(max_size=3000),
)
def test_malformed_headers_and_bodies_get_4xx(
    live: LiveService,
    content_type: str,
    shape: str | list[int] | None,
    dtype: str | None,
    query: dict[str, str],
    body: bytes,
) -> None:
    headers = {"content-type": content_type}
    if shape is not None:
        headers["x-shape"] = shape if isinstance(shape, str) else ",".join(map(str, shape))
    if dtype is not None:
        headers["x-dtype"] = dtype
    target = "?" + urlencode(query) if query else ""
    for path in ("/predict", "/feature-maps"):
        status, response_body = raw_post(live.port, path + target, headers, body)
        assert 200 <= status < 500, (status, response_body[:300])
        if status >= 400:
            assert response_body.startswith(b"{"), (status, response_body[:300])
            assert set(json.loads(response_body)) == {"error"}


def raw_post(port: int, target: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """POST with header values sent byte for byte (HTTP clients refuse to send odd ones)."""
    lines = [f"POST {target} HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\nconnection: close\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, response_body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), response_body


def valid_images() -> list[bytes]:
    """One small drawing of a digit in every accepted format and a few modes."""
    base = Image.new("L", (64, 64), 255)
    base.paste(0, (28, 10, 36, 54))
    files = []
    for image_format, mode in [
        ("PNG", "L"),
        ("PNG", "RGBA"),
        ("PNG", "P"),
        ("JPEG", "RGB"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("WEBP", "RGBA"),
        ("TIFF", "RGB"),
    ]:
        buffer = io.BytesIO()
        base.convert(mode).save(buffer, format=image_format)
        files.append(buffer.getvalue())
    return files


SPEC = PreprocessingSpec(default="mnist", digit_box=20, canvas=28)
LIMITS = ImageLimits(max_pixels=4_000_000, max_bytes=1 << 20)


@FUZZ_SETTINGS
@given(
    original=st.sampled_from(valid_images()),
    edits=st.lists(
        st.tuples(st.integers(0, 4095), st.integers(0, 255), st.sampled_from(["set", "cut"])),
        min_size=1,
        max_size=8,
    ),
)
def test_mutated_image_files_fail_only_as_input_errors(
    original: bytes, edits: list[tuple[int, int, str]]
) -> None:
    """Flipped bytes and truncations anywhere in real files: a result or a ServiceError (4xx)."""
    data = bytearray(original)
    for position, value, kind in edits:
        if not data:
            break
        index = position % len(data)
        if kind == "set":
            data[index] = value
        else:
            del data[index:]
    try:
        digit = prepare_image(bytes(data), "mnist", SPEC, LIMITS)
    except ServiceError as error:
        assert 400 <= error.status_code < 500
    else:
        assert digit.shape == (28, 28) and np.isfinite(digit).all()
