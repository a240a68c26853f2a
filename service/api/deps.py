"""Dependencies shared by the routes: the one way a route reaches the serving state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.errors import NotReadyError
from service.state import ServingState


async def get_serving_state(request: Request) -> ServingState:
    """The state built by the lifespan; 503 while the service is starting or stopping.

    Async, so that FastAPI calls it on the event loop instead of in a thread.
    """
    state: ServingState | None = getattr(request.app.state, "serving", None)
    if state is None:
        raise NotReadyError("the service is starting or stopping")
    return state


Serving = Annotated[ServingState, Depends(get_serving_state)]
