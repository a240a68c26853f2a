"""/feature-maps and /models/{name}/feature-maps: activations as numbers or as a PNG."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import inference
from service.api.deps import Serving, watching_client
from service.api.lean import InferenceRoute
from service.api.responses import FastJSONResponse, wants_png
from service.api.schemas import FeatureMapsResponse, json_or_png_docs
from service.options import FeatureMapOptions
from service.payloads import read_payload
from service.runtime import ModelRuntime
from service.state import ServingState
from service.visualize import feature_maps_png

router = APIRouter(tags=["feature maps"], route_class=InferenceRoute)
_DOCS = {
    **json_or_png_docs(
        FeatureMapsResponse,
        FeatureMapOptions,
        single=True,
        picture="a grid of each layer's channels",
    ),
    "response_class": FastJSONResponse,
}


async def _feature_maps(state: ServingState, model: ModelRuntime, request: Request) -> Response:
    deadline = state.deadline()
    payload = await read_payload(request, FeatureMapOptions, state.payload_limits(model, 1))
    assert isinstance(payload.options, FeatureMapOptions)
    async with watching_client(request, deadline, active=payload.images is not None):
        result = await inference.feature_maps(state, model, payload, deadline)
    with state.stage("serialize", model.name):
        if wants_png(request, payload.options.format):
            layers = {name: values[0] for name, values in result.maps.layers.items()}
            png = await asyncio.to_thread(feature_maps_png, layers)
            label = model.card.labels[int(result.maps.probabilities[0].argmax())]
            return Response(png, media_type="image/png", headers={"X-Predicted-Label": label})
        return FastJSONResponse(inference.feature_maps_document(result))


@router.post("/feature-maps", **_DOCS)
async def feature_maps_default(request: Request, state: Serving) -> Response:
    """Activations of each conv/pool layer for one image, default model."""
    return await _feature_maps(state, state.model(None), request)


@router.post("/models/{name}/feature-maps", **_DOCS)
async def feature_maps_named(name: str, request: Request, state: Serving) -> Response:
    """Activations of each conv/pool layer for one image, named model."""
    return await _feature_maps(state, state.model(name), request)


@router.post("/models/{name}/versions/{version}/feature-maps", **_DOCS)
async def feature_maps_version(
    name: str, version: str, request: Request, state: Serving
) -> Response:
    """Activations of each conv/pool layer for one image, one version of the named model."""
    return await _feature_maps(state, state.model(name, version), request)
