"""The Open Inference Protocol ("KServe V2") with Triton's binary tensor and classification
extensions: request parsing, tensor checks, and response encoding. No HTTP framework here.

A request is a JSON header, optionally followed by the raw bytes of binary tensors (its length is
then in ``Inference-Header-Content-Length``). This service's models take one input (``input``,
FP32 [-1, H, W, 1] in [0, 1]; UINT8 0-255 is accepted too) and produce ``probabilities`` and one
output per conv/pool layer (the feature maps), which a client asks for by name.

Specifications: kserve/open-inference-protocol ``specification/protocol/inference_rest.md``;
triton-inference-server/server ``docs/protocol/extension_binary_data.md`` and
``extension_classification.md``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from model_card import ModelCard
from service.errors import (
    BadRequestError,
    InvalidInputError,
    ModelNotFoundError,
    PayloadTooLargeError,
)
from service.explain import METHODS
from service.metrics import ModelTotals, ServiceMetrics, Timed
from service.numbers import whole_number
from service.preprocessing import checked_unit_interval
from service.shared_memory import SharedMemoryRegistry

if TYPE_CHECKING:
    from service.runtime import ModelRuntime
    from service.state import ServingState

SERVER_EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
]
PLATFORM = "onnx_onnxv1"
TRITON_PLATFORM = "onnxruntime_onnx"  # What Triton's model configuration calls this platform.
FEATURES_SUFFIX = "-features"  # <model>-features: the model with its feature maps as outputs.
# An output returned only when named, and not in the metadata's outputs (so that "no outputs
# named: all outputs" stays cheap; it costs about 170 forward runs an image): the occlusion
# saliency, float32 (N, H, W), of each image for its predicted class or for the output's
# "target" parameter.
SALIENCY_OUTPUT = "saliency"
HEADER_LENGTH = "inference-header-content-length"
# Datatypes a request may use for the image input, and how their values become [0, 1].
INPUT_DATATYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}
# Every datatype the protocol defines, to tell "unknown" from "not accepted here".
PROTOCOL_DATATYPES = {
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES", "BF16",
}  # fmt: skip
ParameterValue = str | int | float | bool


# Fields the protocol does not define are ignored, as KServe's and Triton's servers ignore them:
# KServe's own client sends "model_name" and "model_version" in every request.
IGNORE_UNKNOWN = ConfigDict(extra="ignore")


def _no_parameters_as_empty(value: object) -> object:
    """``"parameters": null`` (sent by some clients) means no parameters."""
    return {} if value is None else value


Parameters = Annotated[dict[str, ParameterValue], BeforeValidator(_no_parameters_as_empty)]


class RequestInput(BaseModel):
    """``$request_input``: one input tensor, its data in JSON or in the binary tail."""

    model_config = IGNORE_UNKNOWN

    name: str
    shape: list[int] = Field(max_length=8)
    datatype: str
    parameters: Parameters = {}
    data: list[Any] | None = Field(
        None, description="The values, nested or flat, row-major (or binary_data_size)."
    )


class RequestOutput(BaseModel):
    """``$request_output``: an output to return, and how (binary, classification)."""

    model_config = IGNORE_UNKNOWN

    name: str
    parameters: Parameters = {}


class InferenceRequest(BaseModel):
    """``$inference_request``."""

    model_config = IGNORE_UNKNOWN

    id: str | None = None
    parameters: Parameters = {}
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


@dataclass(frozen=True)
class RegionSlice:
    """``byte_size`` bytes at ``offset`` of a registered shared-memory region."""

    region: str
    offset: int
    byte_size: int


@dataclass(frozen=True)
class OutputRequest:
    """What to return for one output: as binary or JSON, classified (top ``classes``) or raw,
    or written into a shared-memory region."""

    name: str
    binary: bool
    classes: int | None
    shared_memory: RegionSlice | None = None
    target: int | None = None  # The class a saliency output explains (None: the predicted).
    method: str = "occlusion"  # How a saliency output is made (service/explain.py).


@dataclass(frozen=True)
class ParsedInference:
    """A checked request: images float32 (N, H, W, 1) in [0, 1], and the outputs to return."""

    request_id: str | None
    images: np.ndarray
    outputs: list[OutputRequest]

    @property
    def feature_map_layers(self) -> list[str]:
        """The feature-map outputs asked for (their output names)."""
        return [
            output.name
            for output in self.outputs
            if output.name not in ("probabilities", SALIENCY_OUTPUT)
        ]

    @property
    def saliency(self) -> OutputRequest | None:
        """The saliency output, when asked for."""
        return next((output for output in self.outputs if output.name == SALIENCY_OUTPUT), None)


@dataclass(frozen=True)
class V2Model:
    """A model as V2 publishes it, under two names: ``<name>`` has one output, the
    probabilities; ``<name>-features`` has the probabilities and every feature map. The spec
    returns all of a model's outputs when a request names none, so the plain name keeps that
    cheap and the features name returns every map."""

    name: str
    card: ModelCard
    with_features: bool

    @property
    def output_shapes(self) -> dict[str, list[int]]:
        """Output name -> shape without the batch dimension, in the model card's order."""
        shapes = {self.card.probabilities_output: [len(self.card.labels)]}
        if self.with_features:
            shapes.update({spec.output: list(spec.shape) for spec in self.card.feature_maps})
        return shapes


def published_model(name: str, cards: dict[str, ModelCard]) -> V2Model | None:
    """The V2 model called ``name``: a served model, or ``<served>-features``."""
    if name in cards:
        return V2Model(name, cards[name], with_features=False)
    base = name.removesuffix(FEATURES_SUFFIX)
    if base != name and base in cards and cards[base].feature_maps:
        return V2Model(name, cards[base], with_features=True)
    return None


def published_names(cards: dict[str, ModelCard]) -> list[str]:
    """Every V2 model name ``published_model`` answers to, sorted."""
    names = set(cards) | {
        f"{name}{FEATURES_SUFFIX}" for name, card in cards.items() if card.feature_maps
    }
    return sorted(names)


def served_model(
    state: ServingState, name: str, version: str | None
) -> tuple[ModelRuntime, V2Model]:
    """The served model behind the V2 model ``name`` (``<model>`` or ``<model>-features``), or
    a 404 whose text has Triton's "Request for unknown model" (clients match on it)."""
    cards = {served: runtime.card for served, runtime in state.models.items()}
    published = published_model(name, cards)
    if published is None:
        raise ModelNotFoundError(
            f"Request for unknown model: '{name}' is not found; models: "
            + ", ".join(published_names(cards))
        )
    served = state.version_numbers(published.card.name)
    if version is None:
        return state.models[published.card.name], published
    runtime = state.versions[published.card.name].get(version)
    if runtime is None:
        raise ModelNotFoundError(
            f"Request for unknown model: '{name}' version {version} is not found; served "
            f"versions: {', '.join(map(str, served))}"
        )
    return runtime, replace(published, card=runtime.card)


def model_metadata(model: V2Model, versions: list[int]) -> dict[str, Any]:
    """``$metadata_model_response``: the served ``versions``, the input and every output, from
    the model card."""
    card = model.card
    height, width = card.image_size
    outputs = [
        {"name": name, "datatype": "FP32", "shape": [-1, *shape]}
        for name, shape in model.output_shapes.items()
    ]
    return {
        "name": model.name,
        "versions": [str(version) for version in versions],
        "platform": PLATFORM,
        "inputs": [{"name": card.input.name, "datatype": "FP32", "shape": [-1, height, width, 1]}],
        "outputs": outputs,
    }


@dataclass(frozen=True)
class BatchingLimits:
    """The settings a Triton model configuration reports."""

    max_batch_size: int
    max_queue_delay_microseconds: int
    preferred_batch_size: int
    instances: int


def model_config(model: V2Model, limits: BatchingLimits, versions: list[int]) -> dict[str, Any]:
    """Triton's model configuration (``GET /v2/models/{name}/config``, as tritonclient's
    ``get_model_config`` reads it): batch dimension left out of ``dims``, as Triton writes it;
    the version policy as the versions served now.
    """
    card = model.card
    height, width = card.image_size
    outputs = [
        {"name": name, "data_type": "TYPE_FP32", "dims": shape}
        for name, shape in model.output_shapes.items()
    ]
    return {
        "name": model.name,
        "platform": TRITON_PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": versions}},
        "max_batch_size": limits.max_batch_size,
        "input": [
            {
                "name": card.input.name,
                "data_type": "TYPE_FP32",
                "format": "FORMAT_NHWC",
                "dims": [height, width, 1],
            }
        ],
        "output": outputs,
        "dynamic_batching": {
            "preferred_batch_size": [limits.preferred_batch_size],
            "max_queue_delay_microseconds": limits.max_queue_delay_microseconds,
        },
        "instance_group": [{"name": model.name, "kind": "KIND_CPU", "count": limits.instances}],
        "parameters": {"labels": {"string_value": ",".join(card.labels)}},
    }


def model_statistics(name: str, version: str, totals: ModelTotals) -> dict[str, Any]:
    """Triton's ``$model_stat`` for a model published as ``name``, from its totals over every
    worker (``ServiceMetrics.model_totals``).

    success and fail: requests that reached the model, and their time from then to their
    result; queue: their wait in the dynamic batcher's queue; compute_infer: ONNX Runtime runs
    (``execution_count``; one run serves a whole batch); inference_count: images inferred.
    Decoding and copying in and out are not split from those (compute_input and compute_output
    stay 0), and there is no response cache.
    """

    def duration(timed: Timed) -> dict[str, int]:
        return {"count": int(timed.count), "ns": int(timed.seconds * 1e9)}

    nothing = duration(Timed(0, 0))
    return {
        "name": name,
        "version": version,
        "last_inference": int(totals.last_inference_s * 1000),
        "inference_count": int(totals.images),
        "execution_count": int(totals.runs.count),
        "inference_stats": {
            "success": duration(totals.success),
            "fail": duration(totals.fail),
            "queue": duration(totals.queue),
            "compute_input": nothing,
            "compute_infer": duration(totals.runs),
            "compute_output": nothing,
            "cache_hit": nothing,
            "cache_miss": nothing,
        },
        "batch_stats": [],
        "memory_usage": [],
    }


def statistics(
    state: ServingState, metrics: ServiceMetrics, name: str | None, version: str | None
) -> dict[str, Any]:
    """Triton's ``$stats_model_response``: every served model's statistics (``name`` None), or
    one V2 model's (raises ModelNotFoundError as ``served_model`` does)."""
    if name is None:
        totals = metrics.model_totals(state.models)
        return {
            "model_stats": [
                model_statistics(served, runtime.card.version, totals[served])
                for served, runtime in sorted(state.models.items())
            ]
        }
    runtime, published = served_model(state, name, version)
    (one,) = metrics.model_totals([runtime.name]).values()
    return {"model_stats": [model_statistics(published.name, runtime.card.version, one)]}


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


def classification_strings(
    probabilities: np.ndarray, labels: list[str], classes: int
) -> list[bytes]:
    """Triton's "value:index:label" strings for the top ``classes`` of each row, row by row.

    Args:
        probabilities: float32 (N, len(labels)).
    """
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :classes]
    return [
        f"{probabilities[row, index]:.6f}:{index}:{labels[index]}".encode()
        for row in range(probabilities.shape[0])
        for index in order[row]
    ]


@dataclass(frozen=True)
class EncodedOutput:
    """One output as the protocol returns it: its metadata, its values as little-endian bytes
    (BYTES: each element after its 4-byte length) and as JSON data."""

    name: str
    datatype: str
    shape: list[int]
    raw: bytes
    data: Any


def encoded_outputs(
    model: V2Model, parsed: ParsedInference, tensors: dict[str, np.ndarray]
) -> list[EncodedOutput]:
    """Each requested output, classified (Triton's strings) or as FP32, in request order.

    Args:
        tensors: output name -> float32 (N, ...) for each requested output.
    """
    encoded = []
    for requested in parsed.outputs:
        values = tensors[requested.name]
        if requested.classes is not None:
            strings = classification_strings(values, model.card.labels, requested.classes)
            encoded.append(
                EncodedOutput(
                    requested.name,
                    "BYTES",
                    [values.shape[0], requested.classes],
                    b"".join(struct.pack("<I", len(text)) + text for text in strings),
                    [text.decode() for text in strings],
                )
            )
        else:
            encoded.append(
                EncodedOutput(
                    requested.name,
                    "FP32",
                    list(values.shape),
                    values.astype("<f4", copy=False).tobytes(),
                    values.ravel(),
                )
            )
    return encoded


def encode_response(
    model: V2Model,
    parsed: ParsedInference,
    tensors: dict[str, np.ndarray],
    shared_memory: SharedMemoryRegistry | None = None,
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary tensors, the JSON header's length.

    Args:
        tensors: output name -> float32 (N, ...) for each requested output.
    """
    outputs: list[dict[str, Any]] = []
    binary_parts: list[bytes] = []
    for requested, output in zip(
        parsed.outputs, encoded_outputs(model, parsed, tensors), strict=True
    ):
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if requested.shared_memory is not None and shared_memory is not None:
            target = requested.shared_memory
            shared_memory.write(target.region, target.offset, target.byte_size, output.raw)
            entry["parameters"] = {
                "shared_memory_region": target.region,
                "shared_memory_byte_size": len(output.raw),
            }
        elif requested.binary:
            entry["parameters"] = {"binary_data_size": len(output.raw)}
            binary_parts.append(output.raw)
        else:
            entry["data"] = output.data
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": model.name, "model_version": model.card.version}
    if parsed.request_id is not None:
        document["id"] = parsed.request_id
    document["outputs"] = outputs
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary_parts:
        return header, None
    return header + b"".join(binary_parts), len(header)
