"""Domain errors with an HTTP status, and the handlers that turn every error into one JSON shape.

Every error response looks like ``{"error": {"code": ..., "message": ..., "details": ...}}``.
Nothing else (no stack trace, no file path) ever reaches the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

logger = logging.getLogger("service")


class ServiceError(Exception):
    """Base of every error the service reports on purpose."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class BadRequestError(ServiceError):
    status_code = 400
    code = "bad_request"


class InvalidInputError(ServiceError):
    """Well-formed request whose content cannot be used (wrong shape, NaN, unknown layer...)."""

    status_code = 422
    code = "invalid_input"


class ModelNotFoundError(ServiceError):
    status_code = 404
    code = "model_not_found"


class PayloadTooLargeError(ServiceError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class OverloadedError(ServiceError):
    status_code = 503
    code = "overloaded"


class NotReadyError(ServiceError):
    status_code = 503
    code = "not_ready"


class InferenceTimeoutError(ServiceError):
    status_code = 504
    code = "timeout"


class InferenceError(ServiceError):
    """The model itself failed on a batch: not the client's fault, but never a bare 500."""

    status_code = 500
    code = "inference_failed"


class ClientGoneError(Exception):
    """The client disconnected: its request's remaining work is dropped, nothing is answered."""


class ModelLoadError(RuntimeError):
    """A model cannot be loaded at start-up; the service refuses to start."""


V2_PREFIX = "/v2"
# Under /v2, the status Triton answers with, so that clients, tests and alerts written for
# Triton hold: every invalid request is a 400 (body or batch too large, unsupported encoding,
# wrong input or output). The service's own routes keep their richer 413, 415 and 422.
V2_STATUS = {413: 400, 415: 400, 422: 400}


def is_v2_path(path: str) -> bool:
    """Whether a request path belongs to the Open Inference Protocol's routes."""
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
    path: str = "",
) -> Response:
    """The one JSON error shape; under /v2, the Open Inference Protocol's ``{"error": "..."}``.

    Args:
        path: the request's path, which decides the shape (V2 clients such as tritonclient read
            the message from a string ``error`` field) and, under /v2, the status
            (``V2_STATUS``).
    """
    body: dict[str, Any] = {"error": {"code": code, "message": message, "details": details}}
    if is_v2_path(path):
        body = {"error": message}
        status_code = V2_STATUS.get(status_code, status_code)
    return Response(
        orjson.dumps(body),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


async def _service_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ServiceError)  # Registered for ServiceError only.
    return error_response(
        error.status_code, error.code, error.message, error.details, error.headers, request.url.path
    )


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    details = [
        {"location": list(item.get("loc", ())), "message": item.get("msg", "")}
        for item in error.errors()
    ]
    message = "the request does not match the API"
    if is_v2_path(request.url.path):
        message += ": " + "; ".join(
            f"{'.'.join(map(str, d['location']))}: {d['message']}" for d in details
        )
    return error_response(422, "invalid_request", message, details, path=request.url.path)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    code = _HTTP_CODES.get(error.status_code, "http_error")
    return error_response(
        error.status_code, code, str(error.detail), None, error.headers, request.url.path
    )


# nginx's code for "client closed request": the response is never delivered, but the metrics and
# the log say what happened instead of counting a server error.
CLIENT_CLOSED_REQUEST = 499


async def _client_gone(request: Request, error: Exception) -> Response:
    logger.info(
        "client went away during %s %s; its work was dropped", request.method, request.url.path
    )
    return Response(status_code=CLIENT_CLOSED_REQUEST)


# A bug's answer, from the edge (service/edge.py), which catches it inside the request's context;
# the handler below only answers for what fails outside the edge.
INTERNAL_ERROR = (500, "internal_error", "the server failed to handle this request")


async def _unexpected_error(request: Request, error: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(*INTERNAL_ERROR, path=request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception the app can raise onto the JSON error shape."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientGoneError, _client_gone)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected_error)
