"""Dependencies shared by the routes: the one way a route reaches the serving state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, Request

from service.errors import NotReadyError
from service.limits import Deadline
from service.state import ServingState


def serving_state(request: Request) -> ServingState:
    """The state built by the lifespan.

    Raises:
        NotReadyError: the service is starting or stopping (503).
    """
    state: ServingState | None = getattr(request.app.state, "serving", None)
    if state is None:
        raise NotReadyError("the service is starting or stopping")
    return state


async def get_serving_state(request: Request) -> ServingState:
    """``serving_state`` as a dependency; async, so FastAPI calls it on the event loop."""
    return serving_state(request)


Serving = Annotated[ServingState, Depends(get_serving_state)]


@asynccontextmanager
async def watching_client(
    request: Request, deadline: Deadline, active: bool = True
) -> AsyncIterator[None]:
    """While the block runs, mark ``deadline`` as soon as the client disconnects.

    Call after the body has been read: the next ASGI message is then the disconnect. Watching
    costs a task per request, so it is ``active`` only where the work is long (decoding images).
    """
    if not active:
        yield
        return

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        deadline.client_gone = True

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()
