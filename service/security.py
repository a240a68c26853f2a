"""Who may call what: API keys, cross-origin requests, and the operator-only routes.

The policies; ``service.edge.EdgeMiddleware`` applies them to every request.

- ``ApiKeys``: with keys configured, every route but health, the web page and the API docs
  needs ``Authorization: Bearer <key>`` (401 otherwise; keys compared in constant time);
- ``OriginPolicy``: a browser request from another origin is refused (403) unless that origin is
  allowed, so a web page cannot make its visitors' browsers post to this service;
- ``ExposureRules``: /metrics and the API docs can be public, served only on a separate
  operator port, or off.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.types import Scope

from service.config import Exposure, Settings

OPEN_PREFIXES = ("/health/", "/v2/health/")
REPOSITORY_PREFIX = "/v2/repository/"
# Public even with API keys: the web page and the API docs hold no data, and ask for the key.
PAGE_PATHS = ("/", "/favicon.ico", "/openapi.json", "/docs")
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


def _on_port(scope: Scope, port: int) -> bool:
    """Whether the request arrived on ``port`` (never, for port 0)."""
    server = scope.get("server")
    return bool(port) and bool(server) and server[1] == port  # type: ignore[index]


class ApiKeys:
    """The configured keys; with none, every request is admitted."""

    def __init__(self, keys: list[bytes], operator_port: int = 0) -> None:
        self.keys = keys
        self.operator_port = operator_port

    def admits(self, scope: Scope, authorization: str | None) -> bool:
        """Health, the page, the docs, CORS preflights and the operator port need no key."""
        if not self.keys:
            return True
        path: str = scope["path"]
        if (
            path.startswith(OPEN_PREFIXES + PAGE_PREFIXES)
            or path in PAGE_PATHS
            or scope["method"] == "OPTIONS"
            or _on_port(scope, self.operator_port)
        ):
            return True
        return self.matches(authorization)

    def matches(self, authorization: str | None) -> bool:
        """Whether ``Authorization: Bearer <key>`` offers a configured key (True with none)."""
        if not self.keys:
            return True
        if authorization is None or not authorization.lower().startswith("bearer "):
            return False
        offered = authorization[len("bearer ") :].strip().encode()
        # Compare with every key, whatever matches, so the time taken says nothing about which.
        matches = [hmac.compare_digest(offered, key) for key in self.keys]
        return any(matches)


class OriginPolicy:
    """Refuse requests that browsers send from pages of other origins, unless allowed.

    Browsers send ``Origin`` with cross-origin requests, and a multipart or text POST needs no
    CORS preflight: without this check, any web page could make its visitors' browsers post to
    a deployment on their internal network. Clients that are not browsers send no ``Origin``.

    A page whose origin equals the ``Host`` it calls is the service's own page, but only for a
    host the service knows: a local name, an IP literal, or one of ``trusted_hosts``. Otherwise
    DNS rebinding (``evil.example`` re-pointed at this address, so its page is "same-origin")
    would pass. Jupyter's server checks ``Host`` the same way.
    """

    def __init__(self, allowed_origins: list[str], trusted_hosts: list[str] | None = None) -> None:
        self.allowed = {origin.rstrip("/") for origin in allowed_origins}
        self.trusted_hosts = {host.lower() for host in trusted_hosts or []}

    def refuses(self, origin: str | None, host: str | None) -> bool:
        if origin is None or "*" in self.allowed or origin.rstrip("/") in self.allowed:
            return False
        try:
            same_origin = host is not None and urlsplit(origin).netloc == host
        except ValueError:  # Not a URL (an unclosed IPv6 bracket, say): not ours.
            return True
        return not (same_origin and host is not None and self.knows(host))

    def knows(self, host: str) -> bool:
        """Whether ``host`` (a Host header: name or address, optional port) is the service's."""
        try:
            name = (urlsplit(f"//{host}").hostname or "").lower()
        except ValueError:  # A malformed port or IPv6 literal.
            return False
        if name == "localhost" or name.endswith(".localhost") or name in self.trusted_hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True


def _is_docs(path: str) -> bool:
    return path in DOCS_PATHS or path.startswith("/docs/")


def _is_metrics(path: str) -> bool:
    return path in METRICS_PATHS


class ExposureRules:
    """Serve /metrics and the docs publicly, only on the operator port, or not at all.

    The operator port serves only those routes and health; the main port serves everything else.
    """

    def __init__(self, settings: Settings, api_keys: bool = False) -> None:
        self.operator_port = settings.operator_port
        self.api_keys = api_keys
        self.rules: list[tuple[Callable[[str], bool], Exposure]] = [
            (_is_docs, settings.docs),
            (_is_metrics, settings.metrics),
        ]

    @staticmethod
    def refusal(path: str) -> str:
        """What a refused path's 404 says."""
        if path.startswith(REPOSITORY_PREFIX):
            return (
                "the model repository API is served on the operator port "
                "(CNN_SERVE_OPERATOR_PORT), or on this port when API keys are set"
            )
        return "Not Found"

    def allowed(self, scope: Scope) -> bool:
        path: str = scope["path"]
        on_operator_port = _on_port(scope, self.operator_port)
        if path.startswith(REPOSITORY_PREFIX):  # Changes what is served: never anonymous.
            return on_operator_port or self.api_keys
        for matches, exposure in self.rules:
            if matches(path):
                if exposure == "off":
                    return False
                return on_operator_port if exposure == "operator" else not on_operator_port
        return not on_operator_port or path.startswith(OPEN_PREFIXES)
