"""``InferenceRoute``: the route class of every inference endpoint (predict, feature maps,
explain, V2 infer), and the one place that says what an inference request is: the edge admits
(``service/admission.py``) exactly the requests that match an ``InferenceRoute``
(``inference_requests``). It runs its endpoint without FastAPI's per-request dependency solving.

For every request FastAPI solves the endpoint's dependencies: it walks the parameters, validates
path and query values with pydantic and runs each ``Depends``. For a single image that was about
11 % of a worker's event loop, more than the model's own share of it. The inference endpoints
need none of it: they take the ``Request``, the ``ServingState`` and path parameters (plain
strings), parse their bodies and options themselves with pydantic models, and return a
``Response``. A ``InferenceRoute`` hands them exactly those.

With dependency overrides set, the route runs FastAPI's full handler. Everything else stays
FastAPI's: the OpenAPI schema is built from the same signatures and
decorator arguments, and errors raised by the endpoint reach the same exception handlers. The
route refuses, when it is declared, an endpoint that wants anything else (a query parameter, a
body model, another dependency) or returns anything but a ``Response``, so nothing can be
silently left unset.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute, APIRouter
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from service.api.deps import serving_state
from service.state import ServingState

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class InferenceRoute(APIRoute):
    """An ``APIRoute`` whose handler passes the endpoint its request, state and path values.

    While the app has ``dependency_overrides`` (FastAPI's testing idiom), requests take
    FastAPI's own handler instead, which solves the endpoint's dependencies and so honours
    them; the lean path costs one check of that dict.
    """

    def get_route_handler(self) -> Handler:
        lean = lean_handler(self.endpoint, set(self.param_convertors))
        standard = super().get_route_handler()

        async def handle(request: Request) -> Response:
            # The app's overrides, read per request: tests set them after the app is built.
            if getattr(request.app, "dependency_overrides", None):
                return await standard(request)
            return await lean(request)

        return handle


def lean_handler(endpoint: Callable[..., Awaitable[Response]], path_params: set[str]) -> Handler:
    """The request handler for ``endpoint``, checked once here rather than on every request.

    Raises:
        TypeError: the endpoint takes a parameter that is neither the request, the serving
            state nor a path parameter, or is not declared to return a ``Response``.
    """
    hints = typing.get_type_hints(endpoint)
    returned = hints.get("return")
    if not (inspect.isclass(returned) and issubclass(returned, Response)):
        raise TypeError(f"{endpoint.__qualname__} must be declared to return a Response")
    request_name = state_name = None
    for name in inspect.signature(endpoint).parameters:
        kind = hints.get(name)
        if kind is Request:
            request_name = name
        elif kind is ServingState:
            state_name = name
        elif name not in path_params:
            raise TypeError(
                f"{endpoint.__qualname__}({name}): a lean route passes only the request, "
                "the serving state and path parameters"
            )

    async def handle(request: Request) -> Response:
        arguments: dict[str, Any] = dict(request.path_params)
        if request_name:
            arguments[request_name] = request
        if state_name:
            arguments[state_name] = serving_state(request)
        return await endpoint(**arguments)

    return handle


def inference_requests(routers: list[APIRouter]) -> Callable[[Scope], bool]:
    """Whether a request's scope is for an inference endpoint: a POST that an
    ``InferenceRoute`` of ``routers`` (as the app includes them, without a further prefix)
    matches fully."""
    routes = [
        route for router in routers for route in router.routes if isinstance(route, InferenceRoute)
    ]

    def is_inference(scope: Scope) -> bool:
        if scope["method"] != "POST":
            return False
        return any(route.matches(scope)[0] is Match.FULL for route in routes)

    return is_inference
