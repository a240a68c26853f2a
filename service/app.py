"""``create_app(settings)``: wires routers, middleware, error handlers and the model lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse

from service.api import feature_maps, health, models, predict
from service.batching import DynamicBatcher
from service.config import Settings, get_settings
from service.errors import ModelLoadError, install_error_handlers
from service.limits import BodySizeLimitMiddleware
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.repository import discover_models
from service.runtime import ModelRuntime
from service.state import ServingState

logger = logging.getLogger("service")
WEB_DIR = Path(__file__).parent / "web"


def load_models(settings: Settings) -> dict[str, ModelRuntime]:
    """Load, check (sha256, signature) and warm up every model; fail on the first problem.

    Raises:
        ModelLoadError: no models, the default model missing, or a model that fails to load.
    """
    model_dirs = discover_models(settings.models_dir)
    if settings.default_model not in model_dirs:
        raise ModelLoadError(
            f"default model {settings.default_model!r} not found in {settings.models_dir} "
            f"(found: {sorted(model_dirs) or 'none'})"
        )
    threads = settings.resolved_intra_op_threads()
    loaded = {}
    for name, model_dir in model_dirs.items():
        runtime = ModelRuntime(model_dir, threads)
        if runtime.name != name:
            raise ModelLoadError(f"{model_dir}/model.json names the model {runtime.name!r}")
        loaded[name] = runtime
        logger.info("loaded model %s v%s (%d threads)", name, runtime.card.version, threads)
    return loaded


def _batchers(
    settings: Settings,
    loaded: dict[str, ModelRuntime],
    executor: ThreadPoolExecutor,
    metrics: ServiceMetrics,
) -> dict[str, DynamicBatcher]:
    return {
        name: DynamicBatcher(
            runtime.predict,
            executor,
            max_batch_items=settings.batch_max_items,
            max_delay_s=settings.batch_max_delay_ms / 1000.0,
            max_queue_items=settings.batch_max_queue,
            concurrency=settings.inference_threads,
            timeout_s=settings.request_timeout_s,
            observer=partial(metrics.observe_batch, name),
        )
        for name, runtime in loaded.items()
    }


def _lifespan(settings: Settings, metrics: ServiceMetrics):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            loaded = load_models(settings)
        except ModelLoadError as error:
            logger.error("cannot start: %s", error)
            raise
        executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="onnx")
        batchers = _batchers(settings, loaded, executor, metrics)
        for batcher in batchers.values():
            batcher.start()
        metrics.models_loaded.set(len(loaded))
        app.state.serving = ServingState(
            settings, loaded, batchers, executor, observe_request=metrics.observe_request
        )
        # Everything allocated so far lives as long as the process: keep it out of the garbage
        # collector's generations so that collections under load stay short.
        gc.collect()
        gc.freeze()
        logger.info("ready: %s (default %s)", ", ".join(loaded), settings.default_model)
        try:
            yield
        finally:
            app.state.serving = None
            for batcher in batchers.values():
                await batcher.stop()
            executor.shutdown(wait=True)

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; models load when its lifespan starts."""
    settings = settings or get_settings()
    metrics = ServiceMetrics()
    app = FastAPI(
        title="cnn-serve",
        summary="Classify digits with CNNs exported from Keras to ONNX, and look inside them.",
        version="0.1.0",
        lifespan=_lifespan(settings, metrics),
    )
    app.state.serving = None
    app.state.metrics = metrics
    install_error_handlers(app)
    for router in (predict.router, feature_maps.router, models.router, health.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    # Added last = outermost: the size limit applies before anything reads the body.
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    return app
