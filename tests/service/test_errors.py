"""Bad input always gets a clear 4xx JSON error in one shape, never a 500 or a stack trace."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from tests.conftest import make_settings
from tests.imaging import encode, mnist_png

DIGIT = np.zeros((28, 28)).tolist()


def assert_error(response: object, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    text = response.text  # type: ignore[attr-defined]
    assert "Traceback" not in text and "/work" not in text and ".py" not in text
    return body["error"]  # type: ignore[no-any-return]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a tiny compressed payload (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "instances, fragment",
    [
        ([[[0.0] * 27] * 28], "28x28"),
        ([[0.0] * 783], "28x28"),
        ([[[0.0] * 28] * 28, [[0.0] * 28] * 27], "equally shaped"),
        ([[["a"] * 28] * 28], "numbers"),
        ([[[None] * 28] * 28], "null"),
        ([[[300.0] * 28] * 28], "[0, 1]"),
        ([[[-0.5] * 28] * 28], "[0, 1]"),
    ],
)
def test_wrong_instances_are_422(client: TestClient, instances: object, fragment: str) -> None:
    error = assert_error(
        client.post("/predict", json={"instances": instances}), 422, "invalid_input"
    )
    assert fragment in str(error["message"])


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_inf_in_json_are_400(client: TestClient, value: str) -> None:
    row = ",".join(["0.0"] * 27 + [value])
    body = '{"instances": [[' + ",".join([f"[{row}]"] * 28) + "]]}"
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    # Standard JSON has no NaN: the body is malformed JSON, not a well-formed bad value.
    error = assert_error(response, 400, "bad_request")
    assert "malformed JSON" in str(error["message"])


def test_nan_in_binary_float_tensor_is_422(client: TestClient) -> None:
    values = np.zeros((1, 28, 28), dtype="<f4")
    values[0, 3, 3] = np.nan
    response = client.post(
        "/predict",
        content=values.tobytes(),
        headers={"content-type": "application/octet-stream", "x-dtype": "float32"},
    )
    error = assert_error(response, 422, "invalid_input")
    assert "NaN" in str(error["message"])


def test_empty_batch_is_422(client: TestClient) -> None:
    assert_error(client.post("/predict", json={"instances": []}), 422, "invalid_input")
    assert_error(client.post("/predict", json={"images": []}), 422, "invalid_input")


def test_batch_over_the_limit_is_413(client: TestClient) -> None:
    response = client.post("/predict", json={"instances": [DIGIT] * 257})
    error = assert_error(response, 413, "payload_too_large")
    assert error["details"] == {"max_items_per_request": 256}


def test_body_over_the_limit_is_413_before_reading() -> None:
    settings = make_settings(max_body_bytes=10_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as small_client:
        response = small_client.post(
            "/predict", content=b"x" * 20_000, headers={"content-type": "application/json"}
        )
        assert_error(response, 413, "payload_too_large")

        def chunks() -> object:  # No Content-Length: counted as it streams.
            for _ in range(10):
                yield b" " * 4_000

        response = small_client.post(
            "/predict", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_error(response, 413, "payload_too_large")
        assert small_client.get("/health/ready").status_code == 200


@pytest.mark.parametrize("body", [b"{", b"[1, 2", b"\xff\xfe", b""])
def test_malformed_json_is_400(client: TestClient, body: bytes) -> None:
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert "malformed JSON" in str(assert_error(response, 400, "bad_request")["message"])


@pytest.mark.parametrize("body", [b"null", b"[]", b'"text"'])
def test_json_that_is_not_an_object_is_422(client: TestClient, body: bytes) -> None:
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    error = assert_error(response, 422, "invalid_input")
    assert "must be an object with 'instances' or 'images'" in str(error["message"])


def test_both_or_neither_field_is_422(client: TestClient) -> None:
    assert_error(client.post("/predict", json={}), 422, "invalid_input")
    assert_error(
        client.post("/predict", json={"instances": [DIGIT], "images": ["x"]}), 422, "invalid_input"
    )
    assert_error(
        client.post("/predict", json={"instances": [DIGIT], "colour": 1}), 422, "invalid_input"
    )


def test_invalid_base64_is_422(client: TestClient) -> None:
    error = assert_error(
        client.post("/predict", json={"images": ["not base64!!"]}), 422, "invalid_input"
    )
    assert error["details"] == {"item": 0}


def test_non_image_file_is_422(client: TestClient) -> None:
    response = client.post(
        "/predict", files={"files": ("notes.txt", b"hello, world", "text/plain")}
    )
    error = assert_error(response, 422, "invalid_input")
    assert "not an image" in str(error["message"])


def test_truncated_image_is_422(client: TestClient) -> None:
    photo = encode(Image.new("RGB", (200, 200), "white"), "JPEG")
    response = client.post("/predict", files={"files": ("cut.jpg", photo[: len(photo) // 2])})
    error = assert_error(response, 422, "invalid_input")
    assert "truncated" in str(error["message"])


def test_second_bad_file_names_its_position(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    files = [("files", ("ok.png", mnist_png(mnist_digits[0][0]))), ("files", ("bad.png", b"xx"))]
    error = assert_error(client.post("/predict", files=files), 422, "invalid_input")
    assert error["details"]["item"] == 1  # type: ignore[index]


def test_decompression_bomb_is_413_before_decoding(client: TestClient) -> None:
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 2_000
    error = assert_error(
        client.post("/predict", content=bomb, headers={"content-type": "image/png"}),
        413,
        "payload_too_large",
    )
    assert "100000x100000" in str(error["message"])


def test_unsupported_image_format_is_415(client: TestClient) -> None:
    icon = encode(Image.new("RGB", (32, 32), "white"), "ICO")
    error = assert_error(
        client.post("/predict", json={"images": [base64.b64encode(icon).decode()]}),
        415,
        "unsupported_media_type",
    )
    assert "PNG" in error["details"]["allowed_formats"]  # type: ignore[index]


def test_unsupported_content_type_is_415(client: TestClient) -> None:
    assert_error(
        client.post("/predict", content=b"1,2,3", headers={"content-type": "text/csv"}),
        415,
        "unsupported_media_type",
    )


def test_unknown_model_is_404(client: TestClient) -> None:
    error = assert_error(
        client.post("/models/resnet/predict", json={"instances": [DIGIT]}), 404, "model_not_found"
    )
    assert "mnist-deep-cnn" in error["details"]["models"]  # type: ignore[index]
    assert_error(client.get("/models/resnet"), 404, "model_not_found")


def test_unknown_layer_is_422(client: TestClient) -> None:
    error = assert_error(
        client.post("/feature-maps", json={"instances": [DIGIT], "layers": ["conv9"]}),
        422,
        "invalid_input",
    )
    assert "conv1" in error["details"]["known_layers"]  # type: ignore[index]


def test_feature_maps_take_one_image(client: TestClient) -> None:
    assert_error(
        client.post("/feature-maps", json={"instances": [DIGIT, DIGIT]}), 413, "payload_too_large"
    )


@pytest.mark.parametrize(
    "options",
    [
        {"top_k": 0},
        {"top_k": 11},
        {"top_k": "many"},
        {"top_k": 2.5},
        {"top_k": True},
        {"preprocess": "sharpen"},
    ],
)
def test_bad_options_are_422(client: TestClient, options: dict[str, object]) -> None:
    assert_error(
        client.post("/predict", json={"instances": [DIGIT], **options}), 422, "invalid_input"
    )


def test_blank_image_reports_no_digit(client: TestClient) -> None:
    blank = encode(Image.new("L", (300, 300), 255))
    error = assert_error(
        client.post("/predict", content=blank, headers={"content-type": "image/png"}),
        422,
        "invalid_input",
    )
    assert "no digit" in str(error["message"])


def test_binary_shape_mismatch_is_422(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b"\x00" * 785, headers={"content-type": "application/octet-stream"}
    )
    assert_error(response, 422, "invalid_input")
    response = client.post(
        "/predict",
        content=b"\x00" * 784,
        headers={"content-type": "application/octet-stream", "x-shape": "2,28,28"},
    )
    assert_error(response, 422, "invalid_input")


def test_pickled_npy_is_refused(client: TestClient) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_error(
        client.post(
            "/predict", content=buffer.getvalue(), headers={"content-type": "application/x-npy"}
        ),
        422,
        "invalid_input",
    )


def test_unknown_route_and_method_use_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_service_still_works_after_bad_requests(
    client: TestClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    for body in (b"{", b"\x00" * 100):
        client.post("/predict", content=body, headers={"content-type": "application/json"})
    response = client.post("/predict", files={"files": ("d.png", mnist_png(mnist_digits[0][0]))})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("multipart/form-data", b"no boundary at all"),
        ("multipart/form-data; boundary=x", b"--x\r\nnot a header\r\n"),
    ],
)
def test_malformed_multipart_is_400(client: TestClient, content_type: str, body: bytes) -> None:
    response = client.post("/predict", content=body, headers={"content-type": content_type})
    error = assert_error(response, 400, "bad_request")
    assert "multipart" in str(error["message"])
