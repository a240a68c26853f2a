"""Dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.errors import NotReadyError
from service.inference import ServingState


def serving_state(request: Request) -> ServingState:
    """The state built by the lifespan; 503 while the service is not ready.

    The prediction routes call this directly instead of declaring a dependency: FastAPI's
    dependency resolution costs more per request than the rest of a one-image prediction.
    """
    state: ServingState | None = getattr(request.app.state, "serving", None)
    if state is None:
        raise NotReadyError("the service is starting or stopping")
    return state


async def get_serving_state(request: Request) -> ServingState:
    """Dependency form of ``serving_state`` (async, so FastAPI runs it without a thread)."""
    return serving_state(request)


Serving = Annotated[ServingState, Depends(get_serving_state)]
