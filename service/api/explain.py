"""/explain, /models/{name}/explain and /models/{name}/versions/{v}/explain: which pixels made
the network answer what it did."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import inference
from service.api.deps import Serving, watching_client
from service.api.lean import InferenceRoute
from service.api.responses import FastJSONResponse, wants_png
from service.api.schemas import ExplainResponse, json_or_png_docs
from service.errors import InvalidInputError
from service.options import ExplainOptions
from service.payloads import read_payload
from service.runtime import ModelRuntime
from service.state import ServingState
from service.visualize import saliency_png

router = APIRouter(tags=["explanations"], route_class=InferenceRoute)
_DOCS = {
    **json_or_png_docs(
        ExplainResponse,
        ExplainOptions,
        single=False,
        picture="the saliency of one image over what the model saw",
    ),
    "response_class": FastJSONResponse,
}


async def _explain(state: ServingState, model: ModelRuntime, request: Request) -> Response:
    deadline = state.deadline()
    limits = state.payload_limits(model, state.settings.max_explain_items)
    payload = await read_payload(request, ExplainOptions, limits)
    assert isinstance(payload.options, ExplainOptions)
    png = wants_png(request, payload.options.format)
    if png and payload.count != 1:
        raise InvalidInputError(f"format=png explains one image; this request has {payload.count}")
    async with watching_client(request, deadline, active=payload.images is not None):
        result = await inference.explain(state, model, payload, deadline)
    with state.stage("serialize", model.name):
        if png:
            explanation = result.explanations[0]
            picture = await asyncio.to_thread(
                saliency_png, result.images[0, :, :, 0], explanation.saliency
            )
            headers = {"X-Explained-Label": model.card.labels[explanation.target]}
            return Response(picture, media_type="image/png", headers=headers)
        return FastJSONResponse(inference.explain_document(result, payload.options.top_k))


@router.post("/explain", **_DOCS)
async def explain_default(request: Request, state: Serving) -> Response:
    """Which pixels made the default model answer as it did (one image or a small batch)."""
    return await _explain(state, state.model(None), request)


@router.post("/models/{name}/explain", **_DOCS)
async def explain_named(name: str, request: Request, state: Serving) -> Response:
    """Which pixels made the named model answer as it did."""
    return await _explain(state, state.model(name), request)


@router.post("/models/{name}/versions/{version}/explain", **_DOCS)
async def explain_version(name: str, version: str, request: Request, state: Serving) -> Response:
    """Which pixels made one version of the named model answer as it did."""
    return await _explain(state, state.model(name, version), request)
