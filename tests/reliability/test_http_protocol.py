"""HTTP/1.1 as load balancers and clients use it, on the real server: HEAD on keep-alive
connections, pipelined requests followed by malformed ones, and numeric headers of any text."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from tests.conftest import make_settings
from tests.servers import LiveService, running_service

PROTOCOL_SETTINGS = settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("protocol") / "server.log"


@pytest.fixture(scope="module")
def live(log_file: Path) -> Iterator[LiveService]:
    with running_service(output=log_file, workers=1, log_level="info") as service:
        yield service


def exchange(port: int, data: bytes, timeout_s: float = 10) -> bytes:
    """Send ``data`` in one piece and read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as connection:
        connection.sendall(data)
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in STATUS_LINE.findall(answer)]


def get_paths() -> list[str]:
    """Every documented GET path, with the default model's name in place of {name}."""
    spec = create_app(make_settings()).openapi()
    paths = [path for path, item in spec["paths"].items() if "get" in item]
    filled = [path.replace("{name}", "mnist-deep-cnn").replace("{version}", "1") for path in paths]
    return sorted(set(filled) | {"/", "/docs", "/metrics"})


def test_head_keeps_the_connection_and_logs_nothing(live: LiveService, log_file: Path) -> None:
    """HEAD then GET on every GET route over one keep-alive connection: both answered, the
    HEAD without a body, the connection kept, and no error in the server's log."""
    requests = b"".join(
        f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode()
        for path in get_paths()
        for method in ("HEAD", "GET")
    )
    answer = exchange(live.port, requests + b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n", 5)
    assert statuses(answer) == [200] * (2 * len(get_paths()) + 1), answer[:2000]
    log = log_file.read_text()
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]


# (bytes that cannot be a request, the status that refuses them)
MALFORMED_TAILS = st.one_of(
    st.binary(min_size=1, max_size=64).map(lambda tail: (b"\x00" + tail, 400)),
    st.just((b"GET / HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n", 400)),
    st.just((b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000 + b"\r\n\r\n", 431)),
    st.just((b"GET / HTTP/9.9\r\n\r\n", 400)),
)


def predict_request() -> bytes:
    body = np.zeros((1, 28, 28), dtype=np.uint8).tobytes()
    head = (
        "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@PROTOCOL_SETTINGS
@given(
    valid=st.lists(st.sampled_from(["live", "predict"]), min_size=1, max_size=4),
    tail=MALFORMED_TAILS,
)
def test_pipelined_requests_are_answered_before_a_malformed_one_is_refused(
    live: LiveService, valid: list[str], tail: tuple[bytes, int]
) -> None:
    """Valid requests and a malformed one in the same packet: every valid one is answered, in
    order, then the malformed one gets its JSON 400 or 431 and the connection closes."""
    requests = {
        "live": b"GET /health/live HTTP/1.1\r\nhost: x\r\n\r\n",
        "predict": predict_request(),
    }
    malformed, refusal = tail
    answer = exchange(live.port, b"".join(requests[kind] for kind in valid) + malformed)
    assert statuses(answer) == [200] * len(valid) + [refusal], answer[-2000:]
    assert answer.rstrip().endswith(b"}")  # The JSON error shape, then the end.
