"""Reading request bodies into a protocol-neutral ``Payload``: encoded images or a numeric array.

Supported bodies:

- ``application/json``: ``{"instances": [...]}`` or ``{"images": ["<base64>", ...]}``;
- ``multipart/form-data``: one or more image files in the repeatable field ``files``;
- ``application/octet-stream``: raw little-endian uint8 or float32 pixels, shape in ``X-Shape``;
- ``application/x-npy``: a NumPy ``.npy`` array (uint8 0-255 or float in [0, 1]);
- ``image/*``: the bytes of one image.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field
from typing import Any, get_args

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
from service.repository import PreprocessMethod

PREPROCESS_METHODS: tuple[str, ...] = get_args(PreprocessMethod)
JSON_OPTION_FIELDS = frozenset({"top_k", "preprocess", "layers", "format"})
_IMAGE_PIXELS = 28 * 28


@dataclass
class Payload:
    """What a request asks the model to look at, before preprocessing.

    Exactly one of ``images`` (encoded image files) and ``array`` (numbers, (N, ...)) is set.
    ``options`` holds top_k / preprocess / layers / format as sent, not yet validated.
    """

    images: list[bytes] | None = None
    array: np.ndarray | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        if self.images is not None:
            return len(self.images)
        assert self.array is not None
        return int(self.array.shape[0]) if self.array.ndim else 0


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_payload(request: Request, max_items: int) -> Payload:
    """Parse a request body of any supported type, rejecting empty and oversized batches."""
    media_type = _media_type(request)
    if media_type == "application/json":
        payload = _from_json(await request.body())
    elif media_type == "multipart/form-data":
        payload = await _from_multipart(request, max_items)
    elif media_type == "application/octet-stream":
        payload = _from_raw_tensor(await request.body(), request.headers)
    elif media_type in ("application/x-npy", "application/npy"):
        payload = _from_npy(await request.body())
    elif media_type.startswith("image/"):
        payload = Payload(images=[await request.body()])
    else:
        raise UnsupportedMediaTypeError(
            f"unsupported Content-Type {media_type or '(none)'!r}",
            details={
                "supported": [
                    "application/json",
                    "multipart/form-data",
                    "application/octet-stream",
                    "application/x-npy",
                    "image/*",
                ]
            },
        )
    for key, value in request.query_params.items():
        payload.options.setdefault(key, value)
    if "layers" in request.query_params and len(request.query_params.getlist("layers")) > 1:
        payload.options["layers"] = request.query_params.getlist("layers")
    _check_count(payload.count, max_items)
    return payload


def _check_count(count: int, max_items: int) -> None:
    if count == 0:
        raise InvalidInputError("the batch is empty: send at least one instance or image")
    if count > max_items:
        raise PayloadTooLargeError(
            f"the batch has {count} items; the limit is {max_items}",
            details={"max_batch_size": max_items},
        )


def _from_json(body: bytes) -> Payload:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequestError(f"malformed JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInputError("the JSON body must be an object with 'instances' or 'images'")
    unknown = set(document) - {"instances", "images"} - JSON_OPTION_FIELDS
    if unknown:
        raise InvalidInputError(f"unknown fields {sorted(unknown)}")
    options = {key: document[key] for key in JSON_OPTION_FIELDS if key in document}
    has_instances, has_images = "instances" in document, "images" in document
    if has_instances == has_images:
        raise InvalidInputError("send exactly one of 'instances' and 'images'")
    if has_images:
        return Payload(images=_decode_base64_list(document["images"]), options=options)
    return Payload(array=_numbers(document["instances"]), options=options)


def _numbers(instances: Any) -> np.ndarray:
    if not isinstance(instances, list):
        raise InvalidInputError("'instances' must be a list of arrays")
    try:
        return np.asarray(instances, dtype=np.float32)
    except (ValueError, TypeError):
        raise InvalidInputError(
            "'instances' must be numbers in equally shaped 28x28, 28x28x1 or 784 arrays"
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


async def _from_multipart(request: Request, max_items: int) -> Payload:
    try:
        form = await request.form(max_files=max_items + 1, max_fields=20)
    except PayloadTooLargeError:
        raise
    except Exception as error:  # Starlette raises HTTPException/MultiPartException variants.
        raise BadRequestError(
            f"malformed multipart body: {getattr(error, 'detail', error)}"
        ) from None
    files = [item for item in form.getlist("files") if isinstance(item, UploadFile)]
    if not files and form.getlist("files"):
        raise InvalidInputError("the 'files' field must carry files, not text")
    images = [await upload.read() for upload in files]
    options: dict[str, Any] = {
        key: value
        for key, value in form.multi_items()
        if key in JSON_OPTION_FIELDS and isinstance(value, str)
    }
    if len(form.getlist("layers")) > 1:
        options["layers"] = [value for value in form.getlist("layers") if isinstance(value, str)]
    await form.close()
    return Payload(images=images, options=options)


def _from_raw_tensor(body: bytes, headers: Any) -> Payload:
    dtype_name = headers.get("x-dtype", "uint8").strip().lower()
    if dtype_name not in ("uint8", "float32"):
        raise InvalidInputError("X-Dtype must be uint8 or float32")
    dtype = np.dtype(dtype_name).newbyteorder("<")
    if len(body) % dtype.itemsize:
        raise InvalidInputError(f"body length {len(body)} is not a multiple of {dtype.itemsize}")
    values = np.frombuffer(body, dtype=dtype)
    shape_header = headers.get("x-shape")
    if shape_header is None:
        if values.size % _IMAGE_PIXELS:
            raise InvalidInputError("body is not a whole number of 28x28 images; send X-Shape")
        shape: tuple[int, ...] = (values.size // _IMAGE_PIXELS, 28, 28)
    else:
        try:
            shape = tuple(int(part) for part in shape_header.replace("x", ",").split(","))
        except ValueError:
            raise InvalidInputError("X-Shape must look like 'N,28,28'") from None
        if any(size < 0 for size in shape) or int(np.prod(shape)) != values.size:
            raise InvalidInputError(f"X-Shape {list(shape)} does not match {values.size} values")
    return Payload(array=_scaled(values.reshape(shape)))


def _from_npy(body: bytes) -> Payload:
    try:
        values = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise InvalidInputError(
            "the body is not a valid .npy array (pickled objects refused)"
        ) from None
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "uif":
        raise InvalidInputError("the .npy array must hold numbers")
    return Payload(array=_scaled(values))


def _scaled(values: np.ndarray) -> np.ndarray:
    """uint8 pixels become [0, 1]; floats are passed on to be range-checked."""
    if values.dtype == np.uint8:
        return values.astype(np.float32) / np.float32(255.0)
    return values.astype(np.float32, copy=False)
