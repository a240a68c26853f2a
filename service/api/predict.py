"""/predict and /models/{name}/predict."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service import inference
from service.api.deps import Serving, watching_client
from service.api.lean import InferenceRoute
from service.api.responses import FastJSONResponse
from service.api.schemas import ERROR_RESPONSES, PredictResponse, operation_docs
from service.options import PredictOptions
from service.payloads import read_payload
from service.runtime import ModelRuntime
from service.state import ServingState

router = APIRouter(tags=["predict"], route_class=InferenceRoute)
_DOCS = {
    "response_model": PredictResponse,
    "responses": ERROR_RESPONSES,
    "openapi_extra": operation_docs(PredictOptions, single=False),
    "response_class": FastJSONResponse,
}


async def _predict(state: ServingState, model: ModelRuntime, request: Request) -> FastJSONResponse:
    deadline = state.deadline()
    payload = await read_payload(request, PredictOptions, state.payload_limits(model))
    async with watching_client(request, deadline, active=payload.images is not None):
        result = await inference.predict(state, model, payload, deadline)
    with state.stage("serialize", model.name):
        return FastJSONResponse(result)


@router.post("/predict", **_DOCS)  # type: ignore[arg-type]
async def predict_default(request: Request, state: Serving) -> FastJSONResponse:
    """Classify a batch of digits with the default model."""
    return await _predict(state, state.model(None), request)


@router.post("/models/{name}/predict", **_DOCS)  # type: ignore[arg-type]
async def predict_named(name: str, request: Request, state: Serving) -> FastJSONResponse:
    """Classify a batch of digits with the named model."""
    return await _predict(state, state.model(name), request)


@router.post("/models/{name}/versions/{version}/predict", **_DOCS)  # type: ignore[arg-type]
async def predict_version(
    name: str, version: str, request: Request, state: Serving
) -> FastJSONResponse:
    """Classify a batch of digits with one version of the named model."""
    return await _predict(state, state.model(name, version), request)
