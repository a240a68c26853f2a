"""The uvicorn internals that ``service/transport.py`` builds on, checked against the installed
uvicorn. ``pyproject.toml`` pins the range these were checked for; when a new uvicorn moves a
hook, this test names it before any request meets it."""

from __future__ import annotations

import inspect

import pytest
from uvicorn import Server
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.transport import _GuardedHttpToolsProtocol
from service.workers import _Server

# Methods the guarded protocol overrides, with the parameters uvicorn calls them with.
OVERRIDDEN = {
    "connection_made": ["transport"],
    "connection_lost": ["exc"],
    "data_received": ["data"],
    "send_400_response": ["msg"],
    "on_message_begin": [],
    "on_url": ["url"],
    "on_header": ["name", "value"],
    "on_headers_complete": [],
    "on_message_complete": [],
    "on_response_complete": [],
}
# Attributes of uvicorn's protocol and cycle the guarded protocol reads or sets.
PROTOCOL_ATTRIBUTES = ["cycle", "pipeline", "flow", "transport", "loop"]
CYCLE_ATTRIBUTES = ["response_started", "response_complete", "keep_alive"]


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_each_overridden_hook_still_exists_with_its_parameters(name: str) -> None:
    hook = getattr(HttpToolsProtocol, name)
    parameters = list(inspect.signature(hook).parameters)[1:]
    assert parameters == OVERRIDDEN[name], f"uvicorn's {name}{parameters} changed"
    assert getattr(_GuardedHttpToolsProtocol, name) is not hook  # Still overridden here.


def test_the_parser_error_path_still_ends_in_send_400_response() -> None:
    """A parse error (and the 431 raised as one) reaches send_400_response from data_received."""
    source = inspect.getsource(HttpToolsProtocol.data_received)
    assert "HttpParserError" in source and "send_400_response" in source


def test_the_attributes_read_here_are_still_set_by_uvicorn() -> None:
    protocol_source = inspect.getsource(HttpToolsProtocol)
    for attribute in PROTOCOL_ATTRIBUTES:
        assert f"self.{attribute} " in protocol_source or f"self.{attribute}:" in protocol_source, (
            attribute
        )
    cycle_source = inspect.getsource(RequestResponseCycle)
    for attribute in CYCLE_ATTRIBUTES:
        assert f"self.{attribute} =" in cycle_source, attribute


def test_the_server_hooks_for_ctrl_c_are_still_uvicorns() -> None:
    """``service.workers._Server`` drops SIGINT from the signals uvicorn raises again after
    shutdown, and runs the lifespan's shutdown after a forced one."""
    for name, parameters in {"handle_exit": ["sig", "frame"], "shutdown": ["sockets"]}.items():
        assert list(inspect.signature(getattr(Server, name)).parameters)[1:] == parameters
        assert getattr(_Server, name) is not getattr(Server, name)
    assert "self._captured_signals.append(sig)" in inspect.getsource(Server.handle_exit)
    assert "signal.raise_signal(captured_signal)" in inspect.getsource(Server.capture_signals)
    assert "if not self.force_exit:" in inspect.getsource(Server.shutdown)
