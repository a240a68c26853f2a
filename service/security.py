"""Who may call what: API keys, cross-origin requests, and the operator-only routes.

- ``ApiKeyMiddleware``: with keys configured, every route but health, the web page and the API
  docs needs ``Authorization: Bearer <key>`` (401 otherwise; keys compared in constant time);
- ``OriginGuardMiddleware``: a browser request from another origin is refused (403) unless that
  origin is allowed, so a web page cannot make its visitors' browsers post to this service;
- ``ExposureMiddleware``: /metrics and the API docs can be public, served only on a separate
  operator port, or off.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import Exposure, Settings
from service.errors import error_response

OPEN_PREFIXES = ("/health/", "/v2/health/")
# Public even with API keys: the web page and the API docs hold no data, and ask for the key.
PAGE_PATHS = ("/", "/openapi.json", "/docs")
PAGE_PREFIXES = ("/static/", "/docs/static/")
DOCS_PATHS = ("/docs", "/openapi.json", "/docs/")
METRICS_PATHS = ("/metrics",)


def load_api_keys(settings: Settings) -> list[bytes]:
    """The configured keys: ``api_keys`` (comma-separated) plus one per line of ``api_keys_file``.

    Raises:
        OSError: the keys file cannot be read.
    """
    texts = settings.api_keys.get_secret_value().split(",")
    if settings.api_keys_file is not None:
        texts += Path(settings.api_keys_file).read_text().splitlines()
    return [text.strip().encode() for text in texts if text.strip()]


async def _refuse(
    scope: Scope, send: Send, status: int, code: str, message: str, **headers: str
) -> None:
    response = error_response(status, code, message, headers=headers, path=scope["path"])
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class ApiKeyMiddleware:
    """Require a known bearer key on every route except the health checks."""

    def __init__(self, app: ASGIApp, keys: list[bytes], operator_port: int = 0) -> None:
        self.app = app
        self.keys = keys
        self.operator_port = operator_port

    def _authorised(self, header: str | None) -> bool:
        if header is None or not header.lower().startswith("bearer "):
            return False
        offered = header[len("bearer ") :].strip().encode()
        # Compare with every key, whatever matches, so the time taken says nothing about which.
        matches = [hmac.compare_digest(offered, key) for key in self.keys]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"].startswith(OPEN_PREFIXES + PAGE_PREFIXES)
            or scope["path"] in PAGE_PATHS
            or _on_port(scope, self.operator_port)  # Operators' own port, not the public one.
            or scope["method"] == "OPTIONS"  # CORS preflights carry no credentials.
            or self._authorised(Headers(scope=scope).get("authorization"))
        ):
            await self.app(scope, receive, send)
            return
        await _refuse(
            scope,
            send,
            401,
            "unauthorized",
            "this route needs an API key: send 'Authorization: Bearer <key>'",
            **{"WWW-Authenticate": 'Bearer realm="cnn-serve"'},
        )


class OriginGuardMiddleware:
    """Refuse requests that browsers send from pages of other origins, unless allowed.

    Browsers send ``Origin`` with cross-origin requests, and a multipart or text POST needs no
    CORS preflight: without this check, any web page could make its visitors' browsers post to
    a deployment on their internal network. Clients that are not browsers send no ``Origin``.
    """

    def __init__(self, app: ASGIApp, allowed_origins: list[str]) -> None:
        self.app = app
        self.allowed = {origin.rstrip("/") for origin in allowed_origins}

    def _same_origin(self, origin: str, headers: Headers) -> bool:
        host = headers.get("host")
        return host is not None and urlsplit(origin).netloc == host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if (
                origin is not None
                and "*" not in self.allowed
                and origin.rstrip("/") not in self.allowed
                and not self._same_origin(origin, headers)
            ):
                await _refuse(
                    scope,
                    send,
                    403,
                    "forbidden_origin",
                    f"requests from pages of {origin} are not allowed "
                    "(see CNN_SERVE_CORS_ALLOW_ORIGINS)",
                )
                return
        await self.app(scope, receive, send)


def _on_port(scope: Scope, port: int) -> bool:
    """Whether the request arrived on ``port`` (never, for port 0)."""
    server = scope.get("server")
    return bool(port) and bool(server) and server[1] == port  # type: ignore[index]


def _is_docs(path: str) -> bool:
    return path in DOCS_PATHS or path.startswith("/docs/")


def _is_metrics(path: str) -> bool:
    return path in METRICS_PATHS


class ExposureMiddleware:
    """Serve /metrics and the docs publicly, only on the operator port, or not at all.

    The operator port serves only those routes and health; the main port serves everything else.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.operator_port = settings.operator_port
        self.rules: list[tuple[Callable[[str], bool], Exposure]] = [
            (_is_docs, settings.docs),
            (_is_metrics, settings.metrics),
        ]

    def _allowed(self, path: str, on_operator_port: bool) -> bool:
        for matches, exposure in self.rules:
            if matches(path):
                if exposure == "off":
                    return False
                return on_operator_port if exposure == "operator" else not on_operator_port
        return not on_operator_port or path.startswith(OPEN_PREFIXES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if not self._allowed(scope["path"], _on_port(scope, self.operator_port)):
                await _refuse(scope, send, 404, "not_found", "Not Found")
                return
        await self.app(scope, receive, send)
