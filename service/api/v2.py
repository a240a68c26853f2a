"""The Open Inference Protocol (KServe V2) routes, with Triton's binary tensor extension.

Errors use the protocol's own shape, ``{"error": "<message>"}``, with Triton's status codes
(``service.errors.V2_STATUS``): 400 for every invalid request, 404 only for an unknown model or
version, 503 when not ready or at capacity. Inference goes through the same admission, limits,
deadlines, dynamic batcher and metrics as /predict.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import Response

from service import inference
from service.api.deps import Serving
from service.api.lean import InferenceRoute
from service.api.responses import FastJSONResponse
from service.errors import (
    BadRequestError,
    NotReadyError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from service.lifecycle import ModelLifecycle
from service.payloads import check_json_value_count, json_value_count
from service.protocols import v2
from service.shared_memory import SharedMemoryRegistry
from service.siblings import workers_not_serving
from service.state import ServingState

router = APIRouter(prefix="/v2", tags=["open inference protocol (V2)"])
# The infer routes run lean (service/api/lean.py); the app matches them before the others.
infer_router = APIRouter(
    prefix="/v2", tags=["open inference protocol (V2)"], route_class=InferenceRoute
)
# Triton's system shared-memory extension: included only with CNN_SERVE_SHARED_MEMORY.
shared_memory_router = APIRouter(prefix="/v2", tags=["open inference protocol (V2)"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]
    }}}}
    for status, description in {
        400: "Every invalid request, as Triton answers it: malformed JSON, header or binary "
        "data; wrong input name, shape, datatype or values; unknown output; bad parameters; "
        "body or batch over its limit; unsupported Content-Encoding.",
        401: "API key needed.",
        404: "Unknown model or version.",
        503: "Not ready, or at capacity (see Retry-After).",
        504: "No result in time.",
    }.items()
}  # fmt: skip


@router.get("", responses=_ERRORS)
@router.get("/", responses=_ERRORS, include_in_schema=False)  # The spec's OpenAPI file's path.
async def server_metadata(request: Request, state: Serving) -> dict[str, Any]:
    """Server name, version and supported extensions."""
    app = request.app
    extensions = list(v2.SERVER_EXTENSIONS)
    if app.state.shared_memory is not None:
        extensions.append("system_shared_memory")
    return {"name": app.title, "version": app.version, "extensions": extensions}


@router.get("/health/live")
async def server_live() -> dict[str, bool]:
    """The server answers."""
    return {"live": True}


@router.get("/health/ready", responses={503: _ERRORS[503]})
async def server_ready(request: Request) -> Response:
    """Every model is loaded and warmed up."""
    ready = getattr(request.app.state, "serving", None) is not None and not workers_not_serving()
    return FastJSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/models/stats", responses=_ERRORS)
async def all_model_statistics(request: Request, state: Serving) -> dict[str, Any]:
    """Triton's statistics for every served model."""
    return v2.statistics(state, request.app.state.metrics, None, None)


@router.get("/models/{name}/stats", responses=_ERRORS)
@router.get("/models/{name}/versions/{version}/stats", responses=_ERRORS)
async def model_statistics(
    name: str, request: Request, state: Serving, version: str | None = None
) -> dict[str, Any]:
    """Triton's statistics for one model: request, queue and compute counts and durations."""
    return v2.statistics(state, request.app.state.metrics, name, version)


@router.get("/models/{name}", responses=_ERRORS)
@router.get("/models/{name}/versions/{version}", responses=_ERRORS)
async def model_metadata(name: str, state: Serving, version: str | None = None) -> dict[str, Any]:
    """The model's input and outputs (``<model>-features``: every feature map too)."""
    runtime, published = v2.served_model(state, name, version)
    return v2.model_metadata(published, state.version_numbers(runtime.name))


@router.get("/models/{name}/config", responses=_ERRORS)
@router.get("/models/{name}/versions/{version}/config", responses=_ERRORS)
async def model_config(name: str, state: Serving, version: str | None = None) -> dict[str, Any]:
    """Triton's model configuration: batch size, inputs, outputs, dynamic batching."""
    settings = state.settings
    limits = v2.BatchingLimits(
        max_batch_size=settings.max_items_per_request,
        max_queue_delay_microseconds=int(settings.batch_max_delay_ms * 1000),
        preferred_batch_size=settings.batch_max_items,
        instances=settings.resolved_workers(),
    )
    runtime, published = v2.served_model(state, name, version)
    return v2.model_config(published, limits, state.version_numbers(runtime.name))


@router.get("/models/{name}/ready", responses=_ERRORS)
@router.get("/models/{name}/versions/{version}/ready", responses=_ERRORS)
async def model_ready(name: str, state: Serving, version: str | None = None) -> dict[str, Any]:
    """The model is loaded and can serve."""
    return {"name": v2.served_model(state, name, version)[1].name, "ready": True}


class RegionRegistration(BaseModel):
    """Triton's ``$system_shared_memory_register_request``."""

    key: str = Field(description="The shm_open name of the region's file, e.g. /input0.")
    offset: int = Field(0, ge=0)
    byte_size: int = Field(ge=1)


def _registry(request: Request) -> SharedMemoryRegistry:
    registry: SharedMemoryRegistry | None = request.app.state.shared_memory
    assert registry is not None  # These routes are included only with CNN_SERVE_SHARED_MEMORY.
    return registry


@shared_memory_router.get("/systemsharedmemory/status", responses=_ERRORS)
@shared_memory_router.get("/systemsharedmemory/region/{region}/status", responses=_ERRORS)
async def shared_memory_status(request: Request, region: str | None = None) -> list[Any]:
    """The registered system shared-memory regions (Triton's extension)."""
    return [asdict(found) for found in _registry(request).status(region)]


@shared_memory_router.post(
    "/systemsharedmemory/region/{region}/register",
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RegionRegistration.model_json_schema()}},
        }
    },
)
async def shared_memory_register(region: str, request: Request) -> dict[str, Any]:
    """Register a region of /dev/shm for tensors to pass through (Triton's extension)."""
    registry = _registry(request)
    # Read by hand: tritonclient sends this JSON without a Content-Type.
    try:
        registration = RegionRegistration.model_validate_json(await request.body())
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadRequestError(f"invalid registration at {where}: {first['msg']}") from None
    registry.register(region, registration.key, registration.offset, registration.byte_size)
    return {}


@shared_memory_router.post("/systemsharedmemory/unregister", responses=_ERRORS)
@shared_memory_router.post("/systemsharedmemory/region/{region}/unregister", responses=_ERRORS)
async def shared_memory_unregister(request: Request, region: str | None = None) -> dict[str, Any]:
    """Unregister one region, or all of them (Triton's extension)."""
    _registry(request).unregister(region)
    return {}


_INFER_DOCS: dict[str, Any] = {
    "responses": {
        **_ERRORS,
        200: {
            "description": "$inference_response; with binary outputs, the JSON header "
            "(Inference-Header-Content-Length bytes) followed by the tensors' raw bytes.",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
    },
    "openapi_extra": {
        "parameters": [
            {
                "name": "Inference-Header-Content-Length",
                "in": "header",
                "required": False,
                "description": "Length of the JSON header when binary tensors follow it; 0 for "
                "a raw binary request (one FP32 image).",
                "schema": {"type": "string", "pattern": "^[0-9]{1,10}$"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": v2.InferenceRequest.model_json_schema(),
                    "example": {
                        "id": "42",
                        "inputs": [
                            {
                                "name": "input",
                                "shape": [1, 28, 28, 1],
                                "datatype": "UINT8",
                                "data": [0] * 784,
                            }
                        ],
                        "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}],
                    },
                },
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "description": "JSON header, then binary tensors (Triton's extension).",
                },
            },
        },
    },
}


async def _body(request: Request, state: ServingState) -> bytes:
    """The request body, decompressed (within the body limit) if it says it is compressed."""
    body = await request.body()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaTypeError(f"Content-Encoding {encoding!r} is not supported")
    limit = state.settings.max_body_bytes
    decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        inflated = decompressor.decompress(body, limit + 1)
    except zlib.error:
        raise BadRequestError(f"the body is not valid {encoding} data") from None
    if len(inflated) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLargeError(f"the decompressed body exceeds the limit of {limit} bytes")
    # Exactly one whole stream: a truncated one, trailing bytes or a second gzip member would
    # otherwise pass as a shorter body.
    if not decompressor.eof:
        raise BadRequestError(f"the {encoding} body is truncated")
    if decompressor.unused_data:
        raise BadRequestError(
            f"the {encoding} body has {len(decompressor.unused_data)} bytes after its end"
        )
    return inflated


async def _infer(state: ServingState, name: str, version: str | None, request: Request) -> Response:
    model, published = v2.served_model(state, name, version)
    deadline = state.deadline()
    header, tail = v2.split_body(await _body(request, state), request.headers.get(v2.HEADER_LENGTH))
    limits = state.payload_limits(model)
    check_json_value_count(json_value_count(header), limits)
    shared_memory = request.app.state.shared_memory
    with state.stage("preprocess", model.name):
        parsed = v2.parse_request(
            header,
            tail,
            published,
            limits.max_items,
            state.settings.max_feature_map_items,
            shared_memory,
            state.settings.max_explain_items,
        )
    # Tensors need no decoding: the batcher's deadline bounds the wait, no client watcher needed.
    tensors = await inference.v2_infer(state, model, parsed, deadline)
    with state.stage("serialize", model.name):
        body, header_length = v2.encode_response(published, parsed, tensors, shared_memory)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header_length)},
    )


@infer_router.post("/models/{name}/infer", **_INFER_DOCS)
async def infer(name: str, request: Request, state: Serving) -> Response:
    """Run inference (JSON or binary tensors)."""
    return await _infer(state, name, None, request)


@infer_router.post("/models/{name}/versions/{version}/infer", **_INFER_DOCS)
async def infer_version(name: str, version: str, request: Request, state: Serving) -> Response:
    """Run inference on a given model version (JSON or binary tensors)."""
    return await _infer(state, name, version, request)


# Triton's model repository extension (docs/protocol/extension_model_repository.md): on the
# operator port, or on the main one with an API key (service/security.py, ExposureRules).
repository_router = APIRouter(prefix="/v2/repository", tags=["model repository (V2)"])


class RepositoryIndexRequest(BaseModel):
    """``$repository_index_request``: ``ready`` true lists only the versions serving."""

    ready: bool = False


class RepositoryModelRequest(BaseModel):
    """``$repository_load_request`` / ``$repository_unload_request``: no parameters are used
    (a model is loaded from its files on disk, never from a request)."""

    parameters: dict[str, Any] | None = None


def _lifecycle(request: Request) -> ModelLifecycle:
    lifecycle: ModelLifecycle | None = request.app.state.lifecycle
    if lifecycle is None or lifecycle.state is None:
        raise NotReadyError("the service is starting or stopping")
    return lifecycle


async def _optional_body(request: Request, model: type[BaseModel]) -> BaseModel:
    body = await request.body()
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as error:
        raise BadRequestError(f"invalid repository request: {error.errors()[0]['msg']}") from None


@repository_router.post("/index", responses=_ERRORS)
async def repository_index(request: Request) -> list[dict[str, str]]:
    """Every model version in the repository: READY, or UNAVAILABLE and why."""
    lifecycle = _lifecycle(request)
    options = await _optional_body(request, RepositoryIndexRequest)
    assert isinstance(options, RepositoryIndexRequest)
    return await asyncio.to_thread(lifecycle.index, options.ready)


@repository_router.post("/models/{name}/load", responses=_ERRORS)
async def repository_load(name: str, request: Request) -> Response:
    """Load a model's versions from disk (again), checked and warmed up, in every worker."""
    lifecycle = _lifecycle(request)
    options = await _optional_body(request, RepositoryModelRequest)
    assert isinstance(options, RepositoryModelRequest)
    await lifecycle.load(name, list(options.parameters or {}))
    return Response(status_code=200)


@repository_router.post("/models/{name}/unload", responses=_ERRORS)
async def repository_unload(name: str, request: Request) -> Response:
    """Stop serving a model in every worker (requests in flight finish), until loaded again."""
    lifecycle = _lifecycle(request)
    await _optional_body(request, RepositoryModelRequest)
    await lifecycle.unload(name)
    return Response(status_code=200)
