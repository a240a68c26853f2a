"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from service.api.deps import Serving
from service.api.responses import FastJSONResponse
from service.api.schemas import HealthResponse, LiveResponse
from service.metrics import ServiceMetrics
from service.siblings import workers_not_serving
from service.state import batcher_of

router = APIRouter(tags=["operations"])


@router.get("/health/live", response_model=LiveResponse)
async def live() -> dict[str, object]:
    """The process is up and answering."""
    return {"status": "ok"}


@router.get(
    "/health/ready", response_model=HealthResponse, responses={503: {"model": HealthResponse}}
)
async def ready(request: Request) -> Response:
    """Every model is loaded and warmed up, in every worker process."""
    state = getattr(request.app.state, "serving", None)
    if state is None:
        body = {"status": "not_ready", "models": [], "reason": "loading the models"}
        return FastJSONResponse(body, status_code=503)
    loaded = {
        "models": sorted(state.models),
        "versions": {name: state.version_numbers(name) for name in sorted(state.models)},
    }
    if reason := workers_not_serving():
        return FastJSONResponse(
            {"status": "not_ready", **loaded, "reason": reason}, status_code=503
        )
    return FastJSONResponse({"status": "ok", **loaded})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, state: Serving) -> Response:
    """Prometheus metrics in the text exposition format."""
    service_metrics: ServiceMetrics = request.app.state.metrics
    for name, by_version in state.versions.items():
        queued = sum(batcher_of(runtime).queued_items for runtime in by_version.values())
        service_metrics.queued_items.labels(name).set(queued)
    return Response(service_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
