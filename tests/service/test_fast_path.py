"""The inference routes run lean: request, state and path values, no dependency solving."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.deps import Serving, get_serving_state
from service.api.lean import InferenceRoute
from service.app import create_app
from service.errors import NotReadyError
from service.state import ServingState
from tests.conftest import make_settings


def _app_with(router: APIRouter) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    app.state.serving = "the serving state"
    return app


def test_a_lean_route_passes_the_request_the_state_and_path_values() -> None:
    router = APIRouter(prefix="/v", route_class=InferenceRoute)

    @router.post("/things/{name}/versions/{version}")
    async def endpoint(name: str, version: str, request: Request, state: Serving) -> Response:
        return JSONResponse(
            {"name": name, "version": version, "path": request.url.path, "state": state}
        )

    response = TestClient(_app_with(router)).post("/v/things/a%20b/versions/7")
    assert response.json() == {
        "name": "a b",
        "version": "7",
        "path": "/v/things/a b/versions/7",
        "state": "the serving state",
    }


def test_a_lean_route_answers_503_before_the_state_exists() -> None:
    router = APIRouter(route_class=InferenceRoute)

    @router.post("/work")
    async def endpoint(state: Serving) -> Response:
        raise AssertionError("called without a state")

    app = create_app(make_settings())  # Its error handlers; the lifespan never runs.
    app.include_router(router)
    response = TestClient(app).post("/work")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_ready"


def test_a_lean_route_refuses_what_it_would_not_pass() -> None:
    router = APIRouter(route_class=InferenceRoute)

    async def with_query(name: str, limit: int, state: Serving) -> Response:
        return Response()

    async def returning_a_dict(state: Serving) -> dict[str, str]:
        return {}

    with pytest.raises(TypeError, match=r"with_query\(limit\)"):
        router.add_api_route("/things/{name}", with_query, methods=["POST"])
    with pytest.raises(TypeError, match="returning_a_dict must be declared to return a Response"):
        router.add_api_route("/things", returning_a_dict, methods=["POST"])


def test_the_inference_routes_are_lean_and_documented_as_before() -> None:
    app = create_app(make_settings())  # No lifespan: each request is routed, then 503.
    routed: list[object] = []

    class RouteSpy:
        def __init__(self, inner: ASGIApp) -> None:
            self.inner = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.inner(scope, receive, send)
            routed.append(scope.get("route"))

    app.add_middleware(RouteSpy)
    client = TestClient(app)
    inference = [
        "/predict",
        "/models/mnist-deep-cnn/predict",
        "/feature-maps",
        "/models/mnist-deep-cnn/feature-maps",
        "/v2/models/mnist-deep-cnn/infer",
        "/v2/models/mnist-deep-cnn/versions/1/infer",
    ]
    for path in inference:
        assert client.post(path, content=b"{}").status_code == 503
    client.get("/models/mnist-deep-cnn")
    assert [type(route) for route in routed] == [InferenceRoute] * len(inference) + [APIRoute]
    paths = app.openapi()["paths"]
    parameters = paths["/v2/models/{name}/versions/{version}/infer"]["post"]["parameters"]
    assert {p["name"] for p in parameters if p["in"] == "path"} == {"name", "version"}
    assert paths["/models/{name}/predict"]["post"]["requestBody"]["content"]


@pytest.mark.parametrize(
    "path",
    [
        "/predict",
        "/models/mnist-deep-cnn/predict",
        "/feature-maps",
        "/v2/models/mnist-deep-cnn/infer",
        "/v2/models/mnist-deep-cnn/versions/1/infer",
    ],
)
def test_dependency_overrides_reach_the_inference_routes(client: TestClient, path: str) -> None:
    """FastAPI's testing idiom: overriding the serving state changes what the lean routes use."""
    app = client.app
    assert isinstance(app, FastAPI)

    def not_ready() -> ServingState:
        raise NotReadyError("overridden for this test")

    app.dependency_overrides[get_serving_state] = not_ready
    try:
        response = client.post(path, content=b"{}", headers={"content-type": "application/json"})
    finally:
        app.dependency_overrides.clear()
    assert response.status_code == 503, response.text
    assert "overridden for this test" in response.text
