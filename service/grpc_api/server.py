"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), beside HTTP.

Each worker process serves it on ``CNN_SERVE_GRPC_PORT`` (``SO_REUSEPORT``: the kernel spreads
connections over the workers, as it does for HTTP) from the worker's own event loop. A call
goes through what a V2 HTTP request goes through: the API-key check (``authorization:
Bearer <key>`` in the call's metadata), admission, the request deadline (the shorter of
``REQUEST_TIMEOUT_S`` and the call's gRPC deadline), the same parsing and checks
(``service.protocols.v2``), the dynamic batcher and the metrics. Only the framing differs;
errors map to gRPC status codes as Triton maps them (``STATUS_CODES``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format  # type: ignore[import-untyped]

from service import inference
from service.admission import Admission
from service.config import Settings
from service.errors import (
    BadRequestError,
    ClientGoneError,
    InferenceTimeoutError,
    InvalidInputError,
    ModelNotFoundError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    ServiceError,
)
from service.grpc_api import inference_pb2 as pb
from service.grpc_api.convert import infer_response, parse_infer_request
from service.grpc_api.messages import SERVICE, service_handler
from service.lifecycle import ModelLifecycle
from service.limits import Deadline
from service.metrics import ServiceMetrics
from service.protocols import v2
from service.request_ids import CURRENT, request_id
from service.security import ApiKeys
from service.siblings import workers_not_serving
from service.state import ServingState
from service.tracing import Tracing

logger = logging.getLogger("service")
Message = TypeVar("Message")
Context = grpc.aio.ServicerContext[Any, Any]

# Triton's mapping of its errors to gRPC codes: every invalid request is INVALID_ARGUMENT.
STATUS_CODES: dict[type[ServiceError], grpc.StatusCode] = {
    BadRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidInputError: grpc.StatusCode.INVALID_ARGUMENT,
    PayloadTooLargeError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFoundError: grpc.StatusCode.NOT_FOUND,
    NotReadyError: grpc.StatusCode.UNAVAILABLE,
    OverloadedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    InferenceTimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Calls that need no API key: what a load balancer or kubelet probes.
OPEN_METHODS = ("ServerLive", "ServerReady")
# How much longer than the request body limit a message may be (its framing and metadata).
MESSAGE_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class GrpcContext:
    """What the calls share with the HTTP side of the same worker."""

    settings: Settings
    admission: Admission
    metrics: ServiceMetrics
    api_keys: ApiKeys
    serving: Callable[[], ServingState | None]
    lifecycle: Callable[[], ModelLifecycle | None]
    title: str
    version: str
    tracing: Tracing


class InferenceService:
    """The calls of ``inference.GRPCInferenceService`` that this service implements."""

    def __init__(self, context: GrpcContext) -> None:
        self.shared = context

    async def ServerLive(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._call(
            "ServerLive", context, lambda: _ready_now(pb.ServerLiveResponse(live=True))
        )

    async def ServerReady(self, request: Any, context: Context) -> Any:  # noqa: N802
        ready = self.shared.serving() is not None and not workers_not_serving()
        return await self._call(
            "ServerReady", context, lambda: _ready_now(pb.ServerReadyResponse(ready=ready))
        )

    async def ModelReady(self, request: Any, context: Context) -> Any:  # noqa: N802
        async def answer() -> Any:
            try:
                v2.served_model(self._state(), request.name, request.version or None)
            except ModelNotFoundError:
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=True)

        return await self._call("ModelReady", context, answer)

    async def ServerMetadata(self, request: Any, context: Context) -> Any:  # noqa: N802
        response = pb.ServerMetadataResponse(
            name=self.shared.title, version=self.shared.version, extensions=v2.SERVER_EXTENSIONS
        )
        return await self._call("ServerMetadata", context, lambda: _ready_now(response))

    async def ModelMetadata(self, request: Any, context: Context) -> Any:  # noqa: N802
        async def answer() -> Any:
            state = self._state()
            runtime, published = v2.served_model(state, request.name, request.version or None)
            document = v2.model_metadata(published, state.version_numbers(runtime.name))
            response = pb.ModelMetadataResponse(
                name=document["name"], versions=document["versions"], platform=document["platform"]
            )
            for tensor in document["inputs"]:
                response.inputs.add(**tensor)
            for tensor in document["outputs"]:
                response.outputs.add(**tensor)
            return response

        return await self._call("ModelMetadata", context, answer)

    async def ModelInfer(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._call("ModelInfer", context, lambda: self._infer(request, context))

    async def ModelStatistics(self, request: Any, context: Context) -> Any:  # noqa: N802
        async def answer() -> Any:
            document = v2.statistics(
                self._state(),
                self.shared.metrics,
                request.name or None,
                request.version or None,
            )
            return json_format.ParseDict(document, pb.ModelStatisticsResponse())

        return await self._call("ModelStatistics", context, answer)

    async def RepositoryIndex(self, request: Any, context: Context) -> Any:  # noqa: N802
        async def answer() -> Any:
            lifecycle = self._lifecycle()
            response = pb.RepositoryIndexResponse()
            for entry in await asyncio.to_thread(lifecycle.index, request.ready):
                response.models.add(**entry)
            return response

        return await self._call("RepositoryIndex", context, answer)

    async def RepositoryModelLoad(self, request: Any, context: Context) -> Any:  # noqa: N802
        async def answer() -> Any:
            await self._lifecycle().load(request.model_name, list(request.parameters))
            return pb.RepositoryModelLoadResponse()

        return await self._call("RepositoryModelLoad", context, answer)

    async def RepositoryModelUnload(self, request: Any, context: Context) -> Any:  # noqa: N802
        async def answer() -> Any:
            await self._lifecycle().unload(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await self._call("RepositoryModelUnload", context, answer)

    def _state(self) -> ServingState:
        state = self.shared.serving()
        if state is None:
            raise NotReadyError("the service is starting or stopping")
        return state

    def _lifecycle(self) -> ModelLifecycle:
        lifecycle = self.shared.lifecycle()
        if lifecycle is None or lifecycle.state is None:
            raise NotReadyError("the service is starting or stopping")
        if not self.shared.api_keys.keys:  # Changes what is served: never anonymous.
            raise _Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                "the model repository API needs API keys on gRPC (CNN_SERVE_API_KEYS); "
                "over HTTP it is also served on the operator port",
            )
        return lifecycle

    async def _infer(self, request: Any, context: Context) -> Any:
        state = self._state()
        size = request.ByteSize()
        admission, metrics = self.shared.admission, self.shared.metrics
        await admission.enter(size, lambda: state.queued_items, metrics)
        try:
            runtime, published = v2.served_model(
                state, request.model_name, request.model_version or None
            )
            deadline = _deadline(state, context)
            limits = state.payload_limits(runtime)
            with state.stage("preprocess", runtime.name):
                parsed = parse_infer_request(request, published, state, limits.max_items)
            tensors = await inference.v2_infer(state, runtime, parsed, deadline)
            with state.stage("serialize", runtime.name):
                return infer_response(published, parsed, tensors)
        finally:
            admission.leave(size, metrics)

    async def _call(
        self,
        method: str,
        context: Context,
        answer: Callable[[], Awaitable[Message]],
    ) -> Message:
        """Run one call: its request ID, trace span, API key, error mapping and metrics."""
        started = time.perf_counter()
        metadata = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)  # Binary (-bin) metadata carries nothing read here.
        }
        offered = metadata.get("x-request-id")
        token = CURRENT.set(request_id(offered.encode() if offered is not None else None))
        outcome = _Outcome()
        attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method}
        try:
            with self.shared.tracing.server_span(
                f"{SERVICE}/{method}", metadata, attributes
            ) as span:
                try:
                    return await self._answer(method, context, metadata, answer, outcome)
                finally:
                    if span is not None:
                        span.set_attribute("rpc.grpc.status_code", outcome.code.value[0])
                        span.set_attribute("request.id", CURRENT.get())
        finally:
            self.shared.metrics.observe_grpc(
                method, outcome.code.name, time.perf_counter() - started
            )
            CURRENT.reset(token)

    async def _answer(
        self,
        method: str,
        context: Context,
        metadata: dict[str, str],
        answer: Callable[[], Awaitable[Message]],
        outcome: _Outcome,
    ) -> Message:
        """``answer()``, or the call aborted with the status its error maps to (in
        ``outcome``)."""
        try:
            await context.send_initial_metadata((("x-request-id", CURRENT.get()),))
            if method not in OPEN_METHODS and not self.shared.api_keys.matches(
                metadata.get("authorization")
            ):
                raise _Refusal(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "this call needs an API key: send 'authorization: Bearer <key>' metadata",
                )
            return await answer()
        except _Refusal as refusal:
            outcome.code = refusal.code
            await context.abort(refusal.code, refusal.message)
        except ServiceError as error:
            outcome.code = STATUS_CODES.get(type(error), grpc.StatusCode.INTERNAL)
            if outcome.code == grpc.StatusCode.INTERNAL:
                logger.error("%s failed: %s", method, error.message)
            retry_after = error.headers.get("Retry-After")
            if retry_after is not None:  # A full queue, like a full admission, says when.
                context.set_trailing_metadata((("retry-after", retry_after),))
            await context.abort(outcome.code, error.message)
        except ClientGoneError:
            outcome.code = grpc.StatusCode.CANCELLED
            await context.abort(outcome.code, "the client went away")
        except asyncio.CancelledError:
            outcome.code = grpc.StatusCode.CANCELLED
            raise
        except Exception:  # A defect here: logged in full, the client told nothing more.
            outcome.code = grpc.StatusCode.INTERNAL
            logger.exception("%s failed", method)
            await context.abort(outcome.code, "internal error")
        raise AssertionError("context.abort returns only by raising")  # pragma: no cover


@dataclass
class _Outcome:
    """The status a call ends with (OK unless an error maps to another)."""

    code: grpc.StatusCode = grpc.StatusCode.OK


class _Refusal(Exception):
    """A call refused before it reaches the service (no key, a forbidden call)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def _ready_now(message: Message) -> Message:
    return message


def _deadline(state: ServingState, context: Context) -> Deadline:
    """The request's deadline: the service's time limit, or the call's, whichever is sooner."""
    deadline = state.deadline()
    remaining = context.time_remaining()
    if remaining is not None and remaining < deadline.remaining():
        return Deadline.after(max(remaining, 0.0))
    return deadline


async def start_grpc_server(context: GrpcContext) -> grpc.aio.Server:
    """Serve ``GRPCInferenceService`` on ``CNN_SERVE_GRPC_PORT`` from this event loop.

    Raises:
        RuntimeError: the port cannot be bound.
    """
    settings = context.settings
    limit = settings.max_body_bytes + MESSAGE_OVERHEAD_BYTES
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
        ]
    )
    server.add_generic_rpc_handlers((service_handler(InferenceService(context)),))
    address = f"{_host_for_grpc(settings.host)}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as error:
        raise RuntimeError(f"cannot serve gRPC on {address}: {error}") from None
    await server.start()
    logger.info("serving the V2 protocol over gRPC on port %d", settings.grpc_port)
    return server


def _host_for_grpc(host: str) -> str:
    """gRPC's address form: ``[::]`` for IPv6 literals, as is for the rest."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
