"""Request and response shapes, for validation docs and the OpenAPI page at /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.options import ExplainOptions, FeatureMapOptions, PredictOptions
from service.payloads import MAX_TENSOR_DIMENSIONS, RAW_DTYPES

EXAMPLE_ZERO_IMAGE = [[0.0] * 28 for _ in range(28)]


class _Data(BaseModel):
    instances: list[Any] | None = Field(
        None,
        description="Arrays of SxS, SxSx1 or S*S numbers in [0, 1], light ink on dark "
        "(S = 28 for the MNIST models: see /models).",
    )
    images: list[str] | None = Field(
        None, description="Base64-encoded PNG/JPEG/GIF/BMP/WEBP/TIFF files (data URLs accepted)."
    )


class PredictRequest(PredictOptions, _Data):
    """JSON body of /predict: exactly one of ``instances`` and ``images``, plus options."""


class FeatureMapsRequest(FeatureMapOptions, _Data):
    """JSON body of /feature-maps: one instance or image, plus options."""


class ExplainRequest(ExplainOptions, _Data):
    """JSON body of /explain: instances or images (a small batch), plus options."""


class ClassProbability(BaseModel):
    label: str
    class_index: int
    probability: float


class Prediction(BaseModel):
    label: str
    class_index: int
    confidence: float
    probabilities: list[float] | None = Field(None, description="One per label, without top_k.")
    top_k: list[ClassProbability] | None = Field(None, description="With top_k.")


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[Prediction]


class LayerValues(BaseModel):
    name: str
    shape: list[int]
    values: list[Any] = Field(description="Nested (H, W, C) activations.")


class FeatureMapsResponse(BaseModel):
    model: str
    version: str
    prediction: Prediction
    input: list[list[float]] = Field(description="The 28x28 image the model saw, in [0, 1].")
    layers: list[LayerValues]


class ExplanationValues(BaseModel):
    target: int = Field(description="The class explained.")
    label: str
    method: str
    saliency: list[list[float]] = Field(
        description="28x28, signed: positive where the pixel speaks for the target (units: the "
        "logit for integrated gradients and gradcam, the log-probability for occlusion)."
    )
    details: dict[str, float] | None = Field(
        None, description="integrated_gradients: steps used and completeness error."
    )
    prediction: Prediction


class ExplainResponse(BaseModel):
    model: str
    version: str
    explanations: list[ExplanationValues]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class LiveResponse(BaseModel):
    status: Literal["ok"]


class HealthResponse(BaseModel):
    status: Literal["ok", "not_ready"]
    models: list[str] = Field(description="the models loaded and warmed up")
    versions: dict[str, list[int]] = Field(
        default_factory=dict, description="each model's versions served"
    )
    reason: str | None = Field(None, description="why not ready, when not")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Malformed JSON, multipart, base64 or header.",
        404: "Unknown model.",
        413: "Body, image or batch over its limit.",
        415: "Unsupported Content-Type or image format.",
        422: "Wrong shape, NaN/Inf, values out of range, unknown layer, no digit found.",
        503: "Queue full (see Retry-After) or not ready.",
        504: "No result in time.",
    }.items()
}


def query_parameter_docs(options: type[PredictOptions]) -> list[dict[str, Any]]:
    """OpenAPI query parameters for every field of an options model (the model validates them)."""
    schema = options.model_json_schema()
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": field.get("description", ""),
            "schema": {key: value for key, value in field.items() if key != "description"},
        }
        for name, field in schema["properties"].items()
    ]


RAW_TENSOR_HEADER_DOCS: list[dict[str, Any]] = [
    {
        "name": "X-Dtype",
        "in": "header",
        "required": False,
        "description": "application/octet-stream only: uint8 (0-255, default) or float32 (0-1).",
        "schema": {"type": "string", "enum": list(RAW_DTYPES)},
    },
    {
        "name": "X-Shape",
        "in": "header",
        "required": False,
        "description": "application/octet-stream only: the tensor's shape, e.g. '32,28,28' "
        "(default: a whole number of images).",
        "schema": {
            "type": "string",
            "pattern": f"^[0-9]+([,x][0-9]+){{0,{MAX_TENSOR_DIMENSIONS - 1}}}$",
        },
    },
]


def json_or_png_docs(
    response_model: type[BaseModel], options: type[PredictOptions], single: bool, picture: str
) -> dict[str, Any]:
    """The route documentation of a route that answers JSON or, with ``format=png`` or
    ``Accept: image/png``, the ``picture`` described."""
    return {
        "response_model": response_model,
        "responses": {
            **ERROR_RESPONSES,
            200: {
                "content": {"image/png": {}},
                "description": f"JSON, or with format=png / Accept: image/png {picture}.",
            },
        },
        "openapi_extra": operation_docs(options, single=single),
    }


def operation_docs(options: type[PredictOptions], single: bool) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads its own body: parameters and every body form."""
    body_model: type[BaseModel] = PredictRequest
    if issubclass(options, FeatureMapOptions):
        body_model = FeatureMapsRequest
    elif issubclass(options, ExplainOptions):
        body_model = ExplainRequest
    return {
        "parameters": [*query_parameter_docs(options), *RAW_TENSOR_HEADER_DOCS],
        **request_body_docs(body_model, single),
    }


def request_body_docs(model: type[BaseModel], single: bool) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a route that reads its body itself, in every accepted form."""
    count = "one image" if single else "one or more images"
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": model.model_json_schema(),
                    "examples": {
                        "instances": {
                            "summary": "28x28 arrays",
                            "value": {"instances": [EXAMPLE_ZERO_IMAGE]},
                        },
                        "images": {
                            "summary": "base64 images",
                            "value": {"images": ["iVBORw0KGgo..."], "top_k": 3},
                        },
                    },
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "files": {
                                "type": "array",
                                "description": count,
                                "items": {"type": "string", "format": "binary"},
                            }
                        },
                        "required": ["files"],
                    }
                },
                "application/octet-stream": {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "Raw little-endian pixels; see the X-Dtype and "
                        "X-Shape headers.",
                    }
                },
                "application/x-npy": {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "A .npy array: uint8 0-255 or float 0-1.",
                    }
                },
                "image/*": {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "The bytes of one image.",
                    }
                },
            },
        }
    }
