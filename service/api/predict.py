"""/predict and /models/{name}/predict."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service import inference
from service.api.deps import serving_state
from service.api.responses import FastJSONResponse
from service.api.schemas import ERROR_RESPONSES, PredictRequest, PredictResponse, request_body_docs
from service.payloads import read_payload

router = APIRouter(tags=["predict"])
_DOCS = {
    "response_model": PredictResponse,
    "responses": ERROR_RESPONSES,
    "openapi_extra": request_body_docs(PredictRequest, single=False),
    "response_class": FastJSONResponse,
}


async def _predict(
    state: inference.ServingState, model_name: str | None, request: Request
) -> FastJSONResponse:
    payload = await read_payload(request, state.settings.max_batch_size)
    return FastJSONResponse(await inference.predict(state, model_name, payload))


@router.post("/predict", **_DOCS)  # type: ignore[arg-type]
async def predict_default(request: Request) -> FastJSONResponse:
    """Classify a batch of digits with the default model."""
    return await _predict(serving_state(request), None, request)


@router.post("/models/{name}/predict", **_DOCS)  # type: ignore[arg-type]
async def predict_named(name: str, request: Request) -> FastJSONResponse:
    """Classify a batch of digits with the named model."""
    return await _predict(serving_state(request), name, request)
