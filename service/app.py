"""``create_app(settings)``: wires routers, middleware, error handlers and the model lifespan."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fastapi_offline
import grpc
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.routing import APIRoute, APIRouter
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import FileResponse, HTMLResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.admission import Admission
from service.api import explain, feature_maps, health, models, predict, v2
from service.api.lean import inference_requests
from service.batching import DynamicBatcher
from service.config import Settings, get_settings
from service.edge import EdgeMiddleware
from service.errors import ModelLoadError, install_error_handlers, is_v2_path
from service.grpc_api.server import GrpcContext, start_grpc_server
from service.lifecycle import BatcherFactory, ModelLifecycle, RepositoryControl
from service.limits import MemoryBudget
from service.metrics import ServiceMetrics
from service.runtime import ModelRuntime, Scored
from service.security import ApiKeys, ExposureRules, OriginPolicy, load_api_keys
from service.shared_memory import SharedMemoryRegistry
from service.state import ServingState
from service.tracing import Tracing

logger = logging.getLogger("service")
WEB_DIR = Path(__file__).parent / "web"
SWAGGER_ASSETS = Path(fastapi_offline.__file__).parent / "static"
# Calls in flight when the service stops get this long to finish (HTTP has drained by then).
GRPC_STOP_GRACE_S = 5.0


def _batcher_factory(
    settings: Settings,
    executor: ThreadPoolExecutor,
    metrics: ServiceMetrics,
    admission: Admission,
) -> BatcherFactory:
    """How each loaded model version gets its dynamic batcher (and its metrics)."""

    def new_batcher(runtime: ModelRuntime) -> DynamicBatcher[Scored]:
        name = runtime.name

        def observe(items: int, seconds: float, waits: list[float]) -> None:
            metrics.observe_batch(name, items, seconds, batcher.queued_items, waits)
            admission.throughput.observe(items, seconds)

        batcher = DynamicBatcher(
            runtime.predict_scored,
            executor,
            max_batch_items=settings.batch_max_items,
            max_delay_s=settings.batch_max_delay_ms / 1000.0,
            max_queue_items=settings.batch_max_queue,
            concurrency=settings.inference_threads,
            timeout_s=settings.request_timeout_s,
            observer=observe,
            retry_after_s=admission.retry_after_s,
            max_alone_items=settings.feature_map_queue_items,
        )
        return batcher

    return new_batcher


def _lifespan(  # type: ignore[no-untyped-def]
    settings: Settings,
    metrics: ServiceMetrics,
    admission: Admission,
    tracing: Tracing,
    api_keys: ApiKeys,
):
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="onnx")
        lifecycle = ModelLifecycle(
            settings,
            metrics,
            _batcher_factory(settings, executor, metrics, admission),
            RepositoryControl.for_this_process(),
        )
        try:
            loaded = lifecycle.load_at_start()
        except ModelLoadError as error:
            logger.error("cannot start: %s", error)
            executor.shutdown(wait=False)
            raise
        app.state.serving = lifecycle.state = ServingState(
            settings,
            loaded,
            executor,
            observe_request=metrics.observe_request,
            decode_budget=MemoryBudget(settings.decode_memory_mb * 2**20),
            observe_outcome=metrics.observe_outcome,
            observe_stage=metrics.observe_stage,
            tracing=tracing,
        )
        # Everything allocated so far lives as long as the process: keep it out of the garbage
        # collector's generations so that collections under load stay short.
        gc.collect()
        gc.freeze()
        logger.info("ready: %s (default %s)", ", ".join(loaded), settings.default_model)
        app.state.lifecycle = lifecycle
        watcher = asyncio.create_task(lifecycle.watch(), name="repository-watch")
        grpc_server = await _start_grpc(app, settings, admission, metrics, api_keys, tracing)
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(GRPC_STOP_GRACE_S)
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            app.state.serving = None
            await lifecycle.stop()
            executor.shutdown(wait=True)
            tracing.shutdown()

    return lifespan


async def _start_grpc(
    app: FastAPI,
    settings: Settings,
    admission: Admission,
    metrics: ServiceMetrics,
    api_keys: ApiKeys,
    tracing: Tracing,
) -> grpc.aio.Server | None:
    """The V2 protocol over gRPC on ``CNN_SERVE_GRPC_PORT`` (None when it is 0)."""
    if not settings.grpc_port:
        return None
    context = GrpcContext(
        settings=settings,
        admission=admission,
        metrics=metrics,
        api_keys=api_keys,
        serving=lambda: app.state.serving,
        lifecycle=lambda: app.state.lifecycle,
        title=app.title,
        version=app.version,
        tracing=tracing,
    )
    return await start_grpc_server(context)


def create_app(settings: Settings | None = None, tracing: Tracing | None = None) -> FastAPI:
    """Build the application; models load when its lifespan starts.

    Args:
        tracing: where spans go (default: as the ``OTEL_*`` variables say; off without them).
    """
    settings = settings or get_settings()
    tracing = tracing or Tracing.from_environment()
    metrics = ServiceMetrics()
    admission = Admission(
        max_requests=settings.max_inflight_requests,
        max_body_bytes=settings.inflight_body_mb * 2**20,
        max_pause_s=settings.overload_pause_ms / 1000.0,
    )
    keys = load_api_keys(settings)
    api_keys = ApiKeys(keys, settings.operator_port)
    app = FastAPI(
        docs_url=None,  # Served below from packaged assets: /docs works offline.
        redoc_url=None,
        title="cnn-serve",
        summary="Classify digits with CNNs exported from Keras to ONNX, and look inside them.",
        version="0.1.0",
        lifespan=_lifespan(settings, metrics, admission, tracing, api_keys),
        # /predict/ must not redirect: Starlette builds the redirect from the Host header.
        redirect_slashes=False,
    )
    app.state.serving = None
    app.state.lifecycle = None
    app.state.metrics = metrics
    app.state.shared_memory = (
        SharedMemoryRegistry.for_this_process() if settings.shared_memory else None
    )
    install_error_handlers(app)
    # Routes are matched in this order: the inference routes first.
    routers = [
        predict.router,
        v2.infer_router,
        feature_maps.router,
        explain.router,
        models.router,
        health.router,
        v2.router,
        v2.repository_router,
        *([v2.shared_memory_router] if settings.shared_memory else []),
    ]
    for router in routers:
        _summaries_from_docstrings(router)
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    _add_offline_docs(app)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(WEB_DIR / "favicon.ico", media_type="image/x-icon")

    if keys:
        _document_bearer_auth(app)

    # Every check runs before anything reads the body (service/edge.py).
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        admission=admission,
        api_keys=api_keys,
        origins=OriginPolicy(settings.allowed_origins, settings.trusted_host_names),
        exposure=ExposureRules(settings, api_keys=bool(keys)),
        is_inference=inference_requests(routers),
        access_log=settings.access_log,
        tracing=tracing,
    )
    app.add_middleware(V2ResponseCompression)
    # Added last = outermost: refusals from the edge (401, 413, 503) carry CORS headers too,
    # so a page of an allowed origin can read them.
    if settings.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST"],
            allow_headers=[
                "authorization",
                "content-type",
                "content-encoding",
                "x-dtype",
                "x-shape",
                "inference-header-content-length",
                "x-request-id",
                "traceparent",
                "tracestate",
            ],
            expose_headers=["retry-after", "inference-header-content-length", "x-request-id"],
        )
    return app


class V2ResponseCompression:
    """gzip for responses under /v2 when the client asks for it (``Accept-Encoding: gzip``, as
    tritonclient's ``response_compression_algorithm="gzip"`` sends), as Triton does; the
    service's own routes are left as they are.

    Level 1: most of the saving on JSON numbers for a fraction of level 9's CPU time; bodies
    under 1 KiB (one image's probabilities) are sent as they are.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.compressing = GZipMiddleware(app, minimum_size=1024, compresslevel=1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_v2_path(scope["path"]):
            await self.compressing(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _summaries_from_docstrings(router: APIRouter) -> None:
    """The API docs title each operation by its route's one-line docstring ("Classify a batch
    of digits with the default model."), not by its function name ("Predict Default"); the
    docstring's further lines, if any, stay its description."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.summary is None and route.endpoint.__doc__:
            first, _, rest = inspect.cleandoc(route.endpoint.__doc__).partition("\n")
            route.summary = first.strip()
            route.description = rest.strip()


def _add_offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the assets packaged in fastapi-offline: no CDN needed."""
    app.mount("/docs/static", StaticFiles(directory=SWAGGER_ASSETS), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="cnn-serve API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon.png",
        )


def _document_bearer_auth(app: FastAPI) -> None:
    """With API keys on, the schema says so, and /docs offers an Authorize button."""
    plain_openapi = app.openapi

    def openapi_with_auth() -> dict[str, Any]:
        schema = plain_openapi()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer"}
        }
        schema["security"] = [{"bearerAuth": []}]
        return schema

    app.openapi = openapi_with_auth  # type: ignore[method-assign]
