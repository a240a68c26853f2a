"""V2 inference requests, JSON or with binary tensors (Triton's extension), checked against
the model and turned into model input. No HTTP framework here: gRPC requests are checked by the
same ``checked_request``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pydantic import ValidationError

from model_card import ModelCard
from service.errors import (
    BadRequestError,
    InvalidInputError,
    PayloadTooLargeError,
)
from service.explain import METHODS
from service.numbers import whole_number
from service.preprocessing import checked_unit_interval
from service.protocols.v2.messages import (
    FEATURES_SUFFIX,
    INPUT_DATATYPES,
    PROTOCOL_DATATYPES,
    SALIENCY_OUTPUT,
    InferenceRequest,
    OutputRequest,
    ParameterValue,
    ParsedInference,
    RegionSlice,
    RequestInput,
    RequestOutput,
    V2Model,
)
from service.shared_memory import SharedMemoryRegistry

if TYPE_CHECKING:
    pass


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) of a request body.

    Raises:
        BadRequestError: the declared header length is not a number or exceeds the body.
    """
    if header_length is None:
        return body, b""
    length = whole_number(header_length)
    if length is None:
        raise BadRequestError("Inference-Header-Content-Length must be a whole number")
    if length > len(body):
        raise BadRequestError(
            f"Inference-Header-Content-Length {length} exceeds the body's {len(body)} bytes"
        )
    return body[:length], body[length:]


def parse_request(
    header: bytes,
    tail: bytes,
    model: V2Model,
    max_items: int,
    max_feature_map_items: int,
    shared_memory: SharedMemoryRegistry | None = None,
    max_explain_items: int = 16,
) -> ParsedInference:
    """Check a V2 inference request against the model and turn it into model input.

    An empty header with a binary tail is Triton's "raw binary request": one FP32 image, every
    output returned as binary. An empty body is a JSON header that fails to parse, as Triton
    answers it. A request that names no outputs gets all of the model's outputs (the spec).
    Tensors in shared memory (Triton's extension) need ``shared_memory``; without it, their
    parameters are refused.

    Raises:
        BadRequestError: malformed JSON, unknown datatype, binary sizes that do not add up.
        InvalidInputError: wrong input name, shape, values; unknown output; bad parameters.
        PayloadTooLargeError: more images than allowed.
    """
    if not header and not tail:
        raise BadRequestError("malformed JSON inference header: the request body is empty")
    if not header:
        parsed = _raw_binary_request(tail, model)
    else:
        document = _json_document(header)
        data = _pop_input_data(document)
        request = validated_request(document)
        parsed = checked_request(request, data, tail, model, max_items, shared_memory)
    return within_output_limits(parsed, max_feature_map_items, max_explain_items)


def within_output_limits(
    parsed: ParsedInference, max_feature_map_items: int, max_explain_items: int
) -> ParsedInference:
    """``parsed``, if its feature-map and saliency outputs are within their batch limits.

    Raises:
        PayloadTooLargeError: more images than those outputs are returned for.
    """
    if parsed.feature_map_layers and parsed.images.shape[0] > max_feature_map_items:
        raise PayloadTooLargeError(
            f"feature-map outputs are returned for at most {max_feature_map_items} images a "
            f"request, not {parsed.images.shape[0]}"
        )
    if parsed.saliency is not None and parsed.images.shape[0] > max_explain_items:
        raise PayloadTooLargeError(
            f"the saliency output is returned for at most {max_explain_items} images a "
            f"request, not {parsed.images.shape[0]}"
        )
    return parsed


def checked_request(
    request: InferenceRequest,
    data: list[Any],
    tail: bytes,
    model: V2Model,
    max_items: int,
    shared_memory: SharedMemoryRegistry | None,
) -> ParsedInference:
    """A validated request checked against the model: its input as images, its outputs.

    Args:
        data: each input's values (a JSON array, or None when they are in ``tail``).
        tail: the binary data that inputs with ``binary_data_size`` declare.
    """
    card = model.card
    if shared_memory is None:
        _refuse_shared_memory(request)
    if len(request.inputs) != 1 or request.inputs[0].name != card.input.name:
        names = [item.name for item in request.inputs]
        raise InvalidInputError(
            f"model {card.name} takes one input {card.input.name!r}, not {names}"
        )
    images = _input_tensor(request.inputs[0], data[0], tail, card, max_items, shared_memory)
    return ParsedInference(request.id, images, _requested_outputs(request, model))


def _json_document(header: bytes) -> Any:
    try:
        return orjson.loads(header)
    except orjson.JSONDecodeError as error:
        raise BadRequestError(f"malformed JSON inference header: {error}") from None


def _pop_input_data(document: Any) -> list[Any]:
    """Each input's ``data``, taken out of the document: the arrays (up to a batch of images'
    worth of numbers) go to NumPy straight from the parsed JSON; only the small rest goes
    through pydantic."""
    if isinstance(document, dict) and isinstance(document.get("inputs"), list):
        return [
            item.pop("data", None) if isinstance(item, dict) else None
            for item in document["inputs"]
        ]
    return []


def validated_request(document: Any) -> InferenceRequest:
    """The request (a parsed JSON document, or one built from another protocol's message)
    checked against the protocol.

    Raises:
        InvalidInputError: it is not a ``$inference_request``.
    """
    try:
        return InferenceRequest.model_validate(document)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidInputError(f"invalid inference request at {where}: {first['msg']}") from None


def _refuse_shared_memory(request: InferenceRequest) -> None:
    """Triton's shared-memory parameters are refused, not ignored: ignoring them would answer
    from data the client did not mean to send, or drop outputs it expects in its region."""
    items: list[RequestInput | RequestOutput] = [*request.inputs, *(request.outputs or [])]
    for item in items:
        named = sorted(key for key in item.parameters if key.startswith("shared_memory_"))
        if named:
            raise BadRequestError(
                f"{item.name!r} asks for shared memory ({', '.join(named)}); Triton's "
                "system shared-memory extension is off here (CNN_SERVE_SHARED_MEMORY; GET /v2 "
                "lists the extensions on): send the tensor in the request"
            )


def _region_slice(parameters: dict[str, ParameterValue]) -> RegionSlice | None:
    """The shared-memory parameters of an input or output, checked, if it has them."""
    region = parameters.get("shared_memory_region")
    if region is None:
        return None
    byte_size = parameters.get("shared_memory_byte_size")
    offset = parameters.get("shared_memory_offset", 0)
    if not isinstance(region, str):
        raise BadRequestError("shared_memory_region must be a region's name")
    for name, value in (("shared_memory_byte_size", byte_size), ("shared_memory_offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadRequestError(f"{name} must be a whole number of bytes")
    assert isinstance(byte_size, int) and isinstance(offset, int)
    return RegionSlice(region, offset, byte_size)


def _raw_binary_request(tail: bytes, model: V2Model) -> ParsedInference:
    height, width = model.card.image_size
    expected = height * width * 4
    if len(tail) != expected:
        raise InvalidInputError(
            f"a raw binary request is one FP32 image of {expected} bytes, not {len(tail)}"
        )
    values = np.frombuffer(tail, dtype="<f4").reshape(1, height, width, 1)
    outputs = [OutputRequest(name, True, None) for name in model.output_shapes]
    return ParsedInference(None, _checked_values(values), outputs)


def _input_tensor(
    item: RequestInput,
    data: Any,
    tail: bytes,
    card: ModelCard,
    max_items: int,
    shared_memory: SharedMemoryRegistry | None,
) -> np.ndarray:
    """The input's values as float32 (N, H, W, 1) in [0, 1]."""
    if item.datatype not in PROTOCOL_DATATYPES:
        raise BadRequestError(f"unknown datatype {item.datatype!r}")
    if item.datatype not in INPUT_DATATYPES:
        raise InvalidInputError(
            f"input {item.name!r} takes datatype FP32 (or UINT8 0-255), not {item.datatype}"
        )
    shape = _image_batch_shape(item.shape, card)
    if shape[0] > max_items:
        raise PayloadTooLargeError(
            f"the batch has {shape[0]} items; the limit is {max_items}",
            details={"max_items_per_request": max_items},
        )
    dtype = INPUT_DATATYPES[item.datatype]
    count = math.prod(item.shape)
    binary_size = item.parameters.get("binary_data_size")
    region = _region_slice(item.parameters)
    if region is not None and shared_memory is not None:
        if data is not None or binary_size is not None:
            raise BadRequestError(f"input {item.name!r} has data and a shared-memory region")
        if region.byte_size != count * dtype.itemsize:
            raise InvalidInputError(
                f"shared_memory_byte_size {region.byte_size} does not match the shape: "
                f"{count} values of {dtype.itemsize} bytes"
            )
        raw = shared_memory.read(region.region, region.offset, region.byte_size)
        values = np.frombuffer(raw, dtype=dtype)
    elif binary_size is not None:
        values = _binary_values(binary_size, tail, count, dtype)
    else:
        if tail:
            raise BadRequestError("binary data follows the header but no input declares it")
        values = _json_values(data, count, dtype)
    if dtype == np.uint8:
        return (values.astype(np.float32) / np.float32(255.0)).reshape(shape)
    return _checked_values(values.astype(np.float32).reshape(shape))


def _image_batch_shape(shape: list[int], card: ModelCard) -> tuple[int, int, int, int]:
    """(N, H, W, 1) for a declared [N, H, W, 1], [N, H, W] or [N, H * W]."""
    height, width = card.image_size
    accepted = ([height, width, 1], [height, width], [height * width])
    if len(shape) < 2 or shape[0] < 1 or shape[1:] not in accepted:
        raise InvalidInputError(
            f"input shape must be [N, {height}, {width}, 1] (or [N, {height}, {width}], "
            f"[N, {height * width}]) with N >= 1, not {shape}"
        )
    return shape[0], height, width, 1


def _binary_values(size: ParameterValue, tail: bytes, count: int, dtype: np.dtype) -> np.ndarray:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadRequestError("binary_data_size must be a whole number of bytes")
    if size != count * dtype.itemsize:
        raise InvalidInputError(
            f"binary_data_size {size} does not match the shape: {count} values of "
            f"{dtype.itemsize} bytes"
        )
    if len(tail) != size:
        raise BadRequestError(
            f"the body carries {len(tail)} bytes of binary data; the inputs declare {size}"
        )
    return np.frombuffer(tail, dtype=dtype)


def _json_values(data: Any, count: int, dtype: np.dtype) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidInputError("the input's data must be a JSON array (or binary_data_size)")
    try:
        # FP32 straight to float32; UINT8 through float64, to tell 3 from 3.5 and 256.
        parse_type = np.float32 if dtype == np.float32 else np.float64
        values: np.ndarray = np.asarray(data, dtype=parse_type).ravel()
    except (ValueError, TypeError):
        raise InvalidInputError("the input's data must be numbers in a regular array") from None
    if values.size != count:
        raise InvalidInputError(
            f"the input's data holds {values.size} values; its shape says {count}"
        )
    if dtype == np.uint8 and (
        not np.isfinite(values).all()
        or (values != np.round(values)).any()
        or values.min() < 0
        or values.max() > 255
    ):
        raise InvalidInputError("UINT8 data must be whole numbers from 0 to 255")
    return values.astype(dtype)


def _checked_values(values: np.ndarray) -> np.ndarray:
    return checked_unit_interval(values, "FP32 input values", "send UINT8 for 0-255 pixels")


def _requested_outputs(request: InferenceRequest, model: V2Model) -> list[OutputRequest]:
    card = model.card
    binary_default = _flag(request.parameters, "binary_data_output", False)
    known = [*model.output_shapes, SALIENCY_OUTPUT]
    if request.outputs is None:
        return [OutputRequest(name, binary_default, None) for name in model.output_shapes]
    outputs = []
    for item in request.outputs:
        if item.name not in known:
            raise InvalidInputError(_unknown_output(model, item.name))
        classes = item.parameters.get("classification")
        if classes is not None:
            if item.name != card.probabilities_output:
                raise InvalidInputError("classification applies to the probabilities output only")
            if isinstance(classes, bool) or not isinstance(classes, int):
                raise InvalidInputError("classification must be a whole number of classes")
            if not 1 <= classes <= len(card.labels):
                raise InvalidInputError(f"classification must be between 1 and {len(card.labels)}")
        binary = _flag(item.parameters, "binary_data", binary_default)
        region = _region_slice(item.parameters)
        if region is not None and classes is not None:
            raise InvalidInputError("classification results cannot go to shared memory")
        target = _saliency_target(item.name, item.parameters, card)
        method = _saliency_method(item.name, item.parameters)
        outputs.append(OutputRequest(item.name, binary, classes, region, target, method))
    if len({output.name for output in outputs}) != len(outputs):
        raise InvalidInputError("an output is requested twice")
    return outputs


def _saliency_target(
    name: str, parameters: dict[str, ParameterValue], card: ModelCard
) -> int | None:
    """The saliency output's ``target`` parameter (a class index), checked.

    Raises:
        InvalidInputError: a target on another output, or not a class index.
    """
    target = parameters.get("target")
    if target is None:
        return None
    if name != SALIENCY_OUTPUT:
        raise InvalidInputError(f"the target parameter applies to the {SALIENCY_OUTPUT} output")
    if isinstance(target, bool) or not isinstance(target, int):
        raise InvalidInputError("target must be a class index")
    if not 0 <= target < len(card.labels):
        raise InvalidInputError(f"target must be between 0 and {len(card.labels) - 1}")
    return target


def _saliency_method(name: str, parameters: dict[str, ParameterValue]) -> str:
    """The saliency output's ``method`` parameter (default occlusion: every model has it).

    Raises:
        InvalidInputError: a method on another output, or not one of the methods.
    """
    method = parameters.get("method", "occlusion")
    if "method" in parameters and name != SALIENCY_OUTPUT:
        raise InvalidInputError(f"the method parameter applies to the {SALIENCY_OUTPUT} output")
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {', '.join(METHODS)}")
    return str(method)


def _unknown_output(model: V2Model, name: str) -> str:
    message = f"model {model.name} has no output {name!r}; it has {list(model.output_shapes)}"
    if not model.with_features and name in {spec.output for spec in model.card.feature_maps}:
        message += f"; feature maps are outputs of model {model.name}{FEATURES_SUFFIX!s}"
    return message


def _flag(parameters: dict[str, ParameterValue], name: str, default: bool) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInputError(f"parameter {name} must be true or false")
    return value
