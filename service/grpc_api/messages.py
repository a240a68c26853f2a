"""The V2 gRPC methods as the wire names them, with their message classes.

The messages are generated under a package of their own (see ``inference.proto``); the methods
are registered here under ``inference.GRPCInferenceService``, which is what clients call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from service.grpc_api import inference_pb2

SERVICE = "inference.GRPCInferenceService"


def method_table() -> dict[str, tuple[Any, Any]]:
    """Method name -> (request class, response class), as the .proto declares them."""
    service = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    return {
        method.name: (
            getattr(inference_pb2, method.input_type.name),
            getattr(inference_pb2, method.output_type.name),
        )
        for method in service.methods
    }


def service_handler(servicer: Any) -> grpc.GenericRpcHandler:
    """``servicer``'s methods (one per name in ``method_table``) as the service's handler.

    Requests arrive as bytes and are parsed here, so that one that is not a valid message
    is INVALID_ARGUMENT (gRPC's own parsing would answer INTERNAL).
    """
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_unary_rpc_method_handler(
            _parsing(getattr(servicer, name), request),
            response_serializer=response.SerializeToString,
        )
        for name, (request, response) in method_table().items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def _parsing(
    handler: Callable[[Any, Any], Awaitable[Any]], request_class: Any
) -> Callable[[bytes, Any], Awaitable[Any]]:
    async def parse_then_handle(raw: bytes, context: Any) -> Any:
        try:
            request = request_class.FromString(raw)
        except DecodeError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the message is not a valid {request_class.DESCRIPTOR.name}",
            )
        return await handler(request, context)

    return parse_then_handle


class Stub:
    """A client of the service over ``channel``: ``Stub(channel).ModelInfer(request)``, each
    method a ``grpc.UnaryUnaryMultiCallable`` (for clients without tritonclient)."""

    def __init__(self, channel: grpc.Channel) -> None:
        for name, (request, response) in method_table().items():
            setattr(
                self,
                name,
                channel.unary_unary(
                    f"/{SERVICE}/{name}",
                    request_serializer=request.SerializeToString,
                    response_deserializer=response.FromString,
                ),
            )

    def __getattr__(self, name: str) -> grpc.UnaryUnaryMultiCallable[Any, Any]:
        raise AttributeError(f"{SERVICE} has no method {name}")
