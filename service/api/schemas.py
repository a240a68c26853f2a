"""Request and response shapes, for validation docs and the OpenAPI page at /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

EXAMPLE_ZERO_IMAGE = [[0.0] * 28 for _ in range(28)]


class PredictRequest(BaseModel):
    """JSON body of /predict: exactly one of ``instances`` and ``images``."""

    instances: list[Any] | None = Field(
        None, description="Arrays of 28x28, 28x28x1 or 784 numbers in [0, 1], light ink on dark."
    )
    images: list[str] | None = Field(
        None, description="Base64-encoded PNG/JPEG/GIF/BMP/WEBP/TIFF files (data URLs accepted)."
    )
    top_k: int | None = Field(None, ge=1, description="Return only the k most likely classes.")
    preprocess: Literal["mnist", "resize", "none"] | None = Field(
        None, description="Default: the model's own for images, 'none' for arrays."
    )


class FeatureMapsRequest(PredictRequest):
    """JSON body of /feature-maps: one instance or image."""

    layers: list[str] | None = Field(None, description="Layers to return (default: all).")
    format: Literal["json", "png"] | None = Field(None, description="'png' returns a picture.")


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


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class HealthResponse(BaseModel):
    status: Literal["ok", "not_ready"]
    models: list[str] = []


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Malformed JSON, multipart or base64.",
        404: "Unknown model.",
        413: "Body, image or batch over its limit.",
        415: "Unsupported Content-Type or image format.",
        422: "Wrong shape, NaN/Inf, values out of range, unknown layer, no digit found.",
        503: "Queue full (see Retry-After) or not ready.",
        504: "No result in time.",
    }.items()
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
                        "description": "Raw little-endian pixels. Headers: X-Dtype "
                        "(uint8 0-255 | float32 0-1, default uint8), X-Shape (e.g. "
                        "'32,28,28'; default: length / 784).",
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
