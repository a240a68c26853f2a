"""HTTP/1.1 as load balancers and clients use it, on the real server: HEAD on keep-alive
connections, pipelined requests followed by malformed ones, and numeric headers of any text."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.numbers import whole_number
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


# Text where a whole number is expected: Unicode digits ('²', '٣'), thousands of digits, signs,
# spaces, and plain numbers.
NUMBER_TEXT = st.one_of(
    st.text(st.characters(categories=["Nd", "No", "Zs"]), min_size=1, max_size=8),
    st.integers(19, 6000).map(lambda digits: "9" * digits),
    st.sampled_from(
        ["²", "-1", "+5", " 7 ", "0x10", "1e3", "1_000", "١٢", "", "18446744073709551616"]
    ),
    st.integers(0, 10**6).map(str),
)


def raw_request(method: str, target: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """A request with header values sent as UTF-8, byte for byte."""
    lines = [f"{method} {target} HTTP/1.1", "host: 127.0.0.1", "connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def v2_body() -> bytes:
    return (
        b'{"inputs":[{"name":"input","shape":[1,784],"datatype":"UINT8","data":['
        + b",".join([b"0"] * 784)
        + b"]}]}"
    )


@PROTOCOL_SETTINGS
@given(
    text=NUMBER_TEXT, where=st.sampled_from(["content-length", "header-length", "x-shape", "top_k"])
)
def test_numbers_in_headers_and_queries_are_never_a_server_error(
    live: LiveService, text: str, where: str
) -> None:
    """Every place a number is read from request text answers 2xx or a 4xx JSON error."""
    # A real Content-Length other than the body's makes the server wait for the rest.
    assume(where != "content-length" or whole_number(text) is None)
    pixels = bytes(784)
    if where == "content-length":
        request = (
            raw_request(
                "POST",
                "/predict",
                {"content-type": "application/octet-stream", "content-length": text},
            )
            + pixels
        )
    elif where == "header-length":
        body = v2_body()
        request = raw_request(
            "POST",
            "/v2/models/mnist-deep-cnn/infer",
            {"inference-header-content-length": text, "content-length": str(len(body))},
            body,
        )
    elif where == "x-shape":
        request = raw_request(
            "POST",
            "/predict",
            {"content-type": "application/octet-stream", "x-shape": text, "content-length": "784"},
            pixels,
        )
    else:
        request = raw_request(
            "POST",
            f"/predict?top_k={quote(text)}",
            {"content-type": "application/octet-stream", "content-length": "784"},
            pixels,
        )
    answer = exchange(live.port, request)
    (status,) = statuses(answer)
    assert 200 <= status < 500, answer[:500]
    if status >= 400:
        assert answer.rstrip().endswith(b"}") and b'"error"' in answer, answer[:500]


def error_body(answer: bytes) -> object:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize(
    ("refused", "expected"),
    [
        pytest.param(b"Bad Header\r\n\r\n", 400, id="malformed header"),
        pytest.param(b"x-padding: " + b"a" * 20_000 + b"\r\n\r\n", 431, id="headers too large"),
        pytest.param(
            b"content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
            id="both framings",
        ),
    ],
)
def test_what_the_http_layer_refuses_has_the_v2_shape_under_v2(
    live: LiveService, refused: bytes, expected: int
) -> None:
    """The parser's refusals, like the app's, take the protocol's shape under /v2 and the
    service's own elsewhere."""
    for path, v2 in (("/v2/models/mnist-deep-cnn/infer", True), ("/predict", False)):
        answer = exchange(live.port, f"POST {path} HTTP/1.1\r\nhost: x\r\n".encode() + refused, 5)
        (status,) = statuses(answer)
        body = error_body(answer)
        assert isinstance(body, dict) and set(body) == {"error"}
        assert isinstance(body["error"], str if v2 else dict), (path, body)
        assert status == expected


@pytest.mark.parametrize("order", ["content-length first", "transfer-encoding first"])
def test_both_content_length_and_chunked_is_a_400_that_says_why(
    live: LiveService, order: str
) -> None:
    framing = [b"content-length: 5\r\n", b"transfer-encoding: chunked\r\n"]
    if order != "content-length first":
        framing.reverse()
    request = (
        b"POST /v2/models/mnist-deep-cnn/infer HTTP/1.1\r\nhost: x\r\n"
        + b"".join(framing)
        + b"\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    answer = exchange(live.port, request, 5)
    assert statuses(answer) == [400]
    assert "both Content-Length and Transfer-Encoding" in str(error_body(answer))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_65536_one_byte_chunks_are_reassembled_with_bounded_memory(live: LiveService) -> None:
    """Triton's many-chunks test: a V2 request sent as 65,536 chunks of one byte each is read
    whole (it is answered 200) and costs the process no more than a few MB."""
    document = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784}]}
    ).encode()
    body = document + b" " * (65_536 - len(document))  # JSON allows trailing whitespace
    chunked = b"".join(b"1\r\n" + body[index : index + 1] + b"\r\n" for index in range(len(body)))
    request = (
        b"POST /v2/models/mnist-deep-cnn/infer HTTP/1.1\r\nhost: x\r\n"
        b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n" + chunked + b"0\r\n\r\n"
    )
    before = rss_bytes(live.process.pid)
    for _ in range(5):
        answer = exchange(live.port, request, 30)
        assert statuses(answer) == [200], answer[:300]
        assert b'"model_name":"mnist-deep-cnn"' in answer
    grown = rss_bytes(live.process.pid) - before
    assert grown < 16 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB"
