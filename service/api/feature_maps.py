"""/feature-maps and /models/{name}/feature-maps: activations as numbers or as a PNG."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import inference
from service.api.deps import serving_state
from service.api.responses import FastJSONResponse
from service.api.schemas import (
    ERROR_RESPONSES,
    FeatureMapsRequest,
    FeatureMapsResponse,
    request_body_docs,
)
from service.errors import InvalidInputError
from service.payloads import read_payload
from service.visualize import feature_maps_png

router = APIRouter(tags=["feature maps"])
_DOCS = {
    "response_model": FeatureMapsResponse,
    "responses": {
        **ERROR_RESPONSES,
        200: {
            "content": {"image/png": {}},
            "description": "JSON activations, or with format=png / Accept: image/png a grid "
            "of each layer's channels.",
        },
    },
    "openapi_extra": request_body_docs(FeatureMapsRequest, single=True),
    "response_class": FastJSONResponse,
}


def _wants_png(request: Request, requested_format: object) -> bool:
    if requested_format not in (None, "json", "png"):
        raise InvalidInputError("format must be 'json' or 'png'")
    if requested_format is not None:
        return requested_format == "png"
    accept = request.headers.get("accept", "")
    return "image/png" in accept and "application/json" not in accept


async def _feature_maps(
    state: inference.ServingState, model_name: str | None, request: Request
) -> Response:
    payload = await read_payload(request, max_items=1)
    wants_png = _wants_png(request, payload.options.get("format"))
    result = await inference.feature_maps(state, model_name, payload)
    if wants_png:
        layers = {name: values[0] for name, values in result.maps.layers.items()}
        png = await asyncio.to_thread(feature_maps_png, layers)
        return Response(
            png,
            media_type="image/png",
            headers={
                "X-Predicted-Label": result.model.card.labels[
                    int(result.maps.probabilities[0].argmax())
                ]
            },
        )
    return FastJSONResponse(inference.feature_maps_document(result))


@router.post("/feature-maps", **_DOCS)  # type: ignore[arg-type]
async def feature_maps_default(request: Request) -> Response:
    """Activations of each conv/pool layer for one image, default model."""
    return await _feature_maps(serving_state(request), None, request)


@router.post("/models/{name}/feature-maps", **_DOCS)  # type: ignore[arg-type]
async def feature_maps_named(name: str, request: Request) -> Response:
    """Activations of each conv/pool layer for one image, named model."""
    return await _feature_maps(serving_state(request), name, request)
