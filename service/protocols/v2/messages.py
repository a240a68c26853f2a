"""The Open Inference Protocol (KServe V2) as this service speaks it: its constants, the
request as pydantic validates it, and a checked request (``ParsedInference``).

Specifications: kserve/open-inference-protocol ``specification/protocol/inference_rest.md``;
triton-inference-server/server ``docs/protocol/extension_binary_data.md`` and
``extension_classification.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from model_card import ModelCard

if TYPE_CHECKING:
    pass


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
