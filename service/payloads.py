"""Reading request bodies into a protocol-neutral ``Payload``: encoded images or a numeric array.

Supported bodies:

- ``application/json``: ``{"instances": [...]}`` or ``{"images": ["<base64>", ...]}``, plus options;
- ``multipart/form-data``: one or more image files in the repeatable field ``files``;
- ``application/octet-stream``: raw little-endian uint8 or float32 pixels, shape in ``X-Shape``;
- ``application/x-npy``: a NumPy ``.npy`` array (uint8 0-255 or float in [0, 1]);
- ``image/*``: the bytes of one image.

Every parser checks sizes before it allocates: a declared shape must match the bytes sent, and a
JSON body may hold only as many values as a full batch of images needs.
"""

from __future__ import annotations

import ast
import base64
import binascii
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.errors import (
    BadRequestError,
    InvalidInputError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from service.numbers import whole_number
from service.options import OPTION_FIELDS, PredictOptions, parse_options

SUPPORTED_MEDIA_TYPES = (
    "application/json",
    "multipart/form-data",
    "application/octet-stream",
    "application/x-npy",
    "image/*",
)
IMAGE_FIELD = "files"
RAW_DTYPES = ("uint8", "float32")
MAX_TENSOR_DIMENSIONS = 4
# Multipart bodies carry files and a few option fields, nothing else.
MAX_FORM_FIELDS = 20


@dataclass(frozen=True)
class Payload:
    """What a request asks the model to look at, before preprocessing, and its options.

    Exactly one of ``images`` (encoded image files) and ``array`` is set. ``array`` is float32
    (N, ...) as sent: (N, H, W), (N, H, W, 1) or (N, H * W) values, uint8 already scaled to [0, 1].
    """

    options: PredictOptions
    images: list[bytes] | None = None
    array: np.ndarray | None = None

    @property
    def count(self) -> int:
        if self.images is not None:
            return len(self.images)
        assert self.array is not None
        return int(self.array.shape[0]) if self.array.ndim else 0


@dataclass(frozen=True)
class PayloadLimits:
    """What one request may hold: items, and the (height, width) of the model's images."""

    max_items: int
    image_size: tuple[int, int]

    @property
    def image_pixels(self) -> int:
        return self.image_size[0] * self.image_size[1]

    @property
    def max_json_values(self) -> int:
        """Numbers and brackets a JSON body of ``max_items`` full images needs, and some slack."""
        height, width = self.image_size
        return self.max_items * (height * width + height + 2) + 64


def media_type(request: Request) -> str:
    """The Content-Type without parameters, lower-cased ('' when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_payload(
    request: Request, options_model: type[PredictOptions], limits: PayloadLimits
) -> Payload:
    """Parse a request body of any supported type with its options.

    Options may come from the query string and, for JSON and multipart bodies, from the body
    itself, which wins. The batch must hold between 1 and ``limits.max_items`` items.

    Raises:
        ServiceError subclasses: 400 malformed, 413 too large, 415 unsupported, 422 unusable.
    """
    kind = media_type(request)
    query = _query_options(request)
    if kind == "application/json":
        document = _json_document(await _json_body(request, limits))
        body_options = {key: value for key, value in document.items() if key in OPTION_FIELDS}
        options = parse_options(options_model, [("query", query), ("body", body_options)])
        payload = _from_json(document, options)
    elif kind == "multipart/form-data":
        images, form_options = await _from_multipart(request, limits.max_items)
        options = parse_options(options_model, [("query", query), ("form", form_options)])
        payload = Payload(options, images=images)
    else:
        options = parse_options(options_model, [("query", query)])
        payload = await _from_binary(request, kind, options, limits)
    _check_count(payload.count, limits.max_items)
    return payload


def _query_options(request: Request) -> dict[str, Any]:
    """Query parameters as option values; a repeated ``layers`` becomes a list."""
    params = request.query_params
    options: dict[str, Any] = dict(params.items())
    if len(params.getlist("layers")) > 1:
        options["layers"] = params.getlist("layers")
    return options


async def _from_binary(
    request: Request, kind: str, options: PredictOptions, limits: PayloadLimits
) -> Payload:
    if kind == "application/octet-stream":
        return Payload(options, array=_raw_tensor(await request.body(), request.headers, limits))
    if kind in ("application/x-npy", "application/npy"):
        return Payload(options, array=_npy_array(await request.body()))
    if kind.startswith("image/"):
        return Payload(options, images=[await request.body()])
    raise UnsupportedMediaTypeError(
        f"unsupported Content-Type {kind or '(none)'!r}",
        details={"supported": list(SUPPORTED_MEDIA_TYPES)},
    )


def _check_count(count: int, max_items: int) -> None:
    if count == 0:
        raise InvalidInputError("the batch is empty: send at least one instance or image")
    if count > max_items:
        raise _too_many(str(count), max_items)


def _too_many(count: str, max_items: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the batch has {count} items; the limit is {max_items}",
        details={"max_items_per_request": max_items},
    )


def json_value_count(text: bytes) -> int:
    """An upper bound on the values a JSON text holds, counted without parsing it."""
    return text.count(b",") + text.count(b"[")


def check_json_value_count(values: int, limits: PayloadLimits) -> None:
    """Refuse (413) JSON holding more values than a batch of ``limits.max_items`` images needs.

    Building Python objects costs about 50 bytes a value, so a body of a few MB of ``[],[],...``
    would cost hundreds of MB to parse: it is refused before it is parsed.
    """
    if values > limits.max_json_values:
        raise PayloadTooLargeError(
            f"the JSON holds over {values} values; a batch of {limits.max_items} images "
            f"needs at most {limits.max_json_values}",
            details={"max_items_per_request": limits.max_items},
        )


async def _json_body(request: Request, limits: PayloadLimits) -> bytes:
    """The body of a JSON request, refused (413) as soon as it streams past the values a batch
    needs (``check_json_value_count``), without waiting for the rest."""
    chunks, values = [], 0
    async for chunk in request.stream():
        values += json_value_count(chunk)  # Separators are single bytes: chunks add up exactly.
        check_json_value_count(values, limits)
        chunks.append(chunk)
    return b"".join(chunks)


def _json_document(body: bytes) -> dict[str, Any]:
    """Parse a JSON body that has been checked not to be a flood of values (``_json_body``)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequestError(f"malformed JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInputError("the JSON body must be an object with 'instances' or 'images'")
    return document


def _from_json(document: dict[str, Any], options: PredictOptions) -> Payload:
    unknown = set(document) - {"instances", "images"} - OPTION_FIELDS
    if unknown:
        raise InvalidInputError(
            f"unknown fields {sorted(unknown)}",
            details={"allowed": sorted({"instances", "images", *type(options).model_fields})},
        )
    has_instances, has_images = "instances" in document, "images" in document
    if has_instances == has_images:
        raise InvalidInputError("send exactly one of 'instances' and 'images'")
    if has_images:
        return Payload(options, images=_decode_base64_list(document["images"]))
    return Payload(options, array=_numbers(document["instances"]))


def _numbers(instances: Any) -> np.ndarray:
    if not isinstance(instances, list):
        raise InvalidInputError("'instances' must be a list of arrays")
    try:
        return np.asarray(instances, dtype=np.float32)
    except (ValueError, TypeError):
        raise InvalidInputError(
            "'instances' must be numbers in equally shaped arrays (28x28, 28x28x1 or 784 each)"
        ) from None


def _decode_base64_list(images: Any) -> list[bytes]:
    if not isinstance(images, list) or not all(isinstance(item, str) for item in images):
        raise InvalidInputError("'images' must be a list of base64 strings")
    decoded = []
    for index, text in enumerate(images):
        if text.startswith("data:") and "," in text:  # A data URL, as browsers make them.
            text = text.split(",", 1)[1]
        try:
            decoded.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidInputError("invalid base64 image", details={"item": index}) from None
    return decoded


async def _from_multipart(request: Request, max_items: int) -> tuple[list[bytes], dict[str, Any]]:
    """(image files of the ``files`` field, option fields)."""
    try:
        form = await request.form(max_files=max_items + 1, max_fields=MAX_FORM_FIELDS)
    except PayloadTooLargeError:
        raise
    except Exception as error:  # Starlette raises HTTPException/MultiPartException variants.
        detail = str(getattr(error, "detail", error))
        if detail.startswith("Too many files"):  # The same answer as max_items + 1 files.
            raise _too_many(f"more than {max_items + 1}", max_items) from None
        raise BadRequestError(f"malformed multipart body: {detail}") from None
    try:
        files = [item for item in form.getlist(IMAGE_FIELD) if isinstance(item, UploadFile)]
        if not files:
            raise _no_files_error(form.multi_items())
        images = [await upload.read() for upload in files]
        options: dict[str, Any] = {
            key: value
            for key, value in form.multi_items()
            if key != IMAGE_FIELD and isinstance(value, str)
        }
        if len(form.getlist("layers")) > 1:
            options["layers"] = [
                value for value in form.getlist("layers") if isinstance(value, str)
            ]
    finally:
        await form.close()
    return images, options


def _no_files_error(items: list[tuple[str, Any]]) -> InvalidInputError:
    """Say which field the images must go in and which fields this request used."""
    file_fields = sorted({key for key, value in items if isinstance(value, UploadFile)})
    if file_fields:
        return InvalidInputError(
            f"image files go in the multipart field {IMAGE_FIELD!r}; this request sent files in "
            f"{file_fields}",
            details={"expected_field": IMAGE_FIELD, "received_fields": file_fields},
        )
    text_fields = sorted({key for key, _ in items})
    if IMAGE_FIELD in text_fields:
        return InvalidInputError(f"the {IMAGE_FIELD!r} field must carry files, not text")
    return InvalidInputError(
        f"the batch is empty: send image files in the multipart field {IMAGE_FIELD!r}",
        details={"expected_field": IMAGE_FIELD, "received_fields": text_fields},
    )


def _raw_tensor(body: bytes, headers: Mapping[str, str], limits: PayloadLimits) -> np.ndarray:
    """Raw little-endian pixels; without ``X-Shape``, a whole number of images."""
    dtype_name = headers.get("x-dtype", "uint8").strip().lower()
    if dtype_name not in RAW_DTYPES:
        raise InvalidInputError(f"X-Dtype must be one of {list(RAW_DTYPES)}")
    dtype = np.dtype(dtype_name).newbyteorder("<")
    if len(body) % dtype.itemsize:
        raise InvalidInputError(f"body length {len(body)} is not a multiple of {dtype.itemsize}")
    count = len(body) // dtype.itemsize
    shape_header = headers.get("x-shape")
    if shape_header is None:
        if count % limits.image_pixels:
            raise InvalidInputError(
                f"the body is not a whole number of {limits.image_size[0]}x"
                f"{limits.image_size[1]} images; send X-Shape"
            )
        shape: tuple[int, ...] = (count // limits.image_pixels, *limits.image_size)
    else:
        shape = parse_shape(shape_header, count)
    return _scaled(np.frombuffer(body, dtype=dtype).reshape(shape))


def parse_shape(text: str, values: int) -> tuple[int, ...]:
    """An ``X-Shape`` header ('N,28,28' or 'Nx28x28') that must account for ``values`` values.

    Raises:
        InvalidInputError: not a list of 1-4 whole numbers, or not matching the body.
    """
    numbers = [whole_number(part) for part in text.replace("x", ",").split(",")]
    shape = tuple(number for number in numbers if number is not None)
    if not 1 <= len(numbers) <= MAX_TENSOR_DIMENSIONS or len(shape) != len(numbers):
        raise InvalidInputError(
            f"X-Shape must be 1 to {MAX_TENSOR_DIMENSIONS} whole numbers like 'N,28,28'"
        )
    if math.prod(shape) != values:  # Python integers: no overflow, whatever the header says.
        raise InvalidInputError(f"X-Shape {list(shape)} does not match the {values} values sent")
    return shape


def _npy_array(body: bytes) -> np.ndarray:
    """A ``.npy`` array, its header checked against the bytes that follow before any allocation."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        header = _npy_header(stream, version)
    except (ValueError, TypeError, OSError, EOFError, SyntaxError, RecursionError, MemoryError):
        raise InvalidInputError("the body is not a valid .npy array") from None
    shape, fortran_order, dtype = header
    if dtype.hasobject or dtype.kind not in "uif" or dtype.itemsize > 8:
        raise InvalidInputError("the .npy array must hold plain numbers (no pickled objects)")
    if len(shape) > MAX_TENSOR_DIMENSIONS or any(size < 0 for size in shape):
        raise InvalidInputError(f"the .npy array's shape {list(shape)} is not a batch of images")
    data = body[stream.tell() :]
    if math.prod(shape) * dtype.itemsize != len(data):
        raise InvalidInputError(
            f"the .npy header declares shape {list(shape)} of {dtype.name}, but "
            f"{len(data)} bytes follow it"
        )
    values = np.frombuffer(data, dtype=dtype)
    values = values.reshape(shape[::-1]).T if fortran_order else values.reshape(shape)
    return _scaled(values)


def _npy_header(stream: io.BytesIO, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, Any]:
    """(shape, fortran_order, dtype) of a .npy header, refusing anything but plain literals."""
    if version == (1, 0):
        length = int.from_bytes(stream.read(2), "little")
    elif version in ((2, 0), (3, 0)):
        length = int.from_bytes(stream.read(4), "little")
    else:
        raise ValueError(f"unknown .npy version {version}")
    header = ast.literal_eval(stream.read(length).decode("latin1"))
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ValueError("bad .npy header")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(size, int) for size in shape):
        raise ValueError("bad .npy shape")
    return shape, bool(header["fortran_order"]), np.dtype(header["descr"])


def _scaled(values: np.ndarray) -> np.ndarray:
    """uint8 pixels become [0, 1]; other numbers become float32, to be range-checked later."""
    if values.dtype == np.uint8:
        return values.astype(np.float32) / np.float32(255.0)
    return values.astype(np.float32)
