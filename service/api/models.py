"""/models and /models/{name}: what each model is, from its model.json."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import Serving
from service.api.responses import FastJSONResponse
from service.api.schemas import ERROR_RESPONSES
from service.runtime import ModelRuntime
from service.state import ServingState

router = APIRouter(tags=["models"], default_response_class=FastJSONResponse)


def _summary(model: ModelRuntime, state: ServingState) -> dict[str, Any]:
    card = model.card
    return {
        "name": card.name,
        "version": card.version,
        "versions": [str(version) for version in state.version_numbers(card.name)],
        "default": card.name == state.settings.default_model,
        "architecture": card.raw.get("architecture"),
        "dataset": card.raw.get("dataset"),
        "labels": card.labels,
        "input": card.input.model_dump(),
        "preprocessing": card.preprocessing.model_dump(),
        "feature_maps": [spec.model_dump() for spec in card.feature_maps],
        "explanations": model.explanation_methods,
        "test_accuracy": card.raw.get("metrics", {}).get("test_accuracy"),
        "sha256": card.files.sha256,
    }


@router.get("/models")
async def list_models(state: Serving) -> dict[str, Any]:
    """Every loaded model, with its labels, input, layers and test accuracy."""
    return {
        "default_model": state.settings.default_model,
        "models": [_summary(model, state) for model in state.models.values()],
    }


@router.get("/models/{name}", responses=ERROR_RESPONSES)
@router.get("/models/{name}/versions/{version}", responses=ERROR_RESPONSES)
async def get_model(name: str, state: Serving, version: str | None = None) -> dict[str, Any]:
    """One model's summary plus its full model.json (its default version, or the one named)."""
    model = state.model(name, version)
    return {**_summary(model, state), "model_card": model.card.raw}
