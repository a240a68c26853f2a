"""Clients that are slow, that leave, and that are cut off by shutdown, against the real server."""

from __future__ import annotations

import io
import re
import signal
import socket
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

from tests.servers import running_service


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def read_all(connection: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return answer


def until_in_flight(url: str, requests: int = 1) -> None:
    """Wait until ``requests`` inference requests are admitted (/metrics says so)."""
    deadline = time.monotonic() + 10
    while f"cnn_serve_inflight_requests {float(requests)}" not in httpx.get(f"{url}/metrics").text:
        assert time.monotonic() < deadline, "the request never reached the server"
        time.sleep(0.02)


def status_and_code(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    code = re.search(rb'"code":"([a-z_]+)"', body)
    return int(head.split(b" ", 2)[1]), code.group(1).decode() if code else ""


def test_slow_headers_slow_bodies_and_huge_headers_are_cut_off() -> None:
    with running_service(header_timeout_s=1, body_timeout_s=1) as service:
        started = time.monotonic()
        silent = connect(service.port)  # Connects and says nothing.
        dribbling = connect(service.port)
        dribbling.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\n")  # Never ends its headers.
        stalled = connect(service.port)
        stalled.sendall(
            b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 1000\r\n\r\n{"instances": ['
        )
        for connection, expected in (
            (silent, "timeout"),
            (dribbling, "timeout"),
            (stalled, "timeout"),
        ):
            assert status_and_code(read_all(connection)) == (408, expected)
            connection.close()
        assert time.monotonic() - started < 5
        huge = connect(service.port)
        huge.sendall(
            b"GET /health/live HTTP/1.1\r\nhost: x\r\nx-padding: " + b"a" * 40_000 + b"\r\n\r\n"
        )
        assert status_and_code(read_all(huge)) == (431, "headers_too_large")
        huge.close()
        assert httpx.get(f"{service.url}/health/live").status_code == 200


def big_png(index: int) -> bytes:
    """A 2000x2000 drawing: about 50 ms to decode and preprocess."""
    image = Image.new("L", (2000, 2000), 255)
    ImageDraw.Draw(image).line([(600 + index, 300), (1300, 1700)], fill=0, width=40)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def multipart(files: list[bytes]) -> tuple[bytes, str]:
    boundary = "reliability"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
        f'filename="{index}.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
        + data
        + b"\r\n"
        for index, data in enumerate(files)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), boundary


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks.


def test_work_stops_when_the_client_leaves() -> None:
    """60 big images, then the client hangs up: the server does not decode the other 59."""
    body, boundary = multipart([big_png(index) for index in range(60)])
    with running_service(log_level="info") as service:
        pid = service.process.pid
        alone = cpu_seconds(pid)
        connection = connect(service.port)
        connection.sendall(
            f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n"
            f"content-type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.5)  # The body is in and decoding has started.
        connection.close()
        time.sleep(3.0)
        spent = cpu_seconds(pid) - alone
        # All 60 would take about 3 CPU-seconds; stopping costs the one in progress.
        assert spent < 1.5, spent
        assert httpx.get(f"{service.url}/health/ready").status_code == 200


def test_deadline_covers_decoding_not_only_the_queue() -> None:
    body, boundary = multipart([big_png(index) for index in range(60)])
    with running_service(request_timeout_s=0.5) as service:
        started = time.monotonic()
        response = httpx.post(
            f"{service.url}/predict",
            content=body,
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            timeout=30,
        )
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
        assert time.monotonic() - started < 2.0


def test_a_request_cut_off_by_shutdown_gets_the_json_error(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with running_service(graceful_shutdown_s=1, body_timeout_s=30, output=log) as service:
        connection = connect(service.port)
        connection.sendall(  # Headers and half a body: the request is in progress.
            b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 1000\r\n\r\n{"instances": ['
        )
        until_in_flight(service.url)  # The server has the request, not only the bytes.
        service.process.send_signal(signal.SIGTERM)
        status, code = status_and_code(read_all(connection))
        connection.close()
        assert (status, code) == (503, "shutting_down")
    assert "Traceback" not in log.read_text()


def test_a_client_leaving_mid_body_is_logged_as_such(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with running_service(log_level="info", output=log) as service:
        connection = connect(service.port)
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 1000\r\n\r\n{"instances": ['
        )
        time.sleep(0.3)
        connection.close()
        time.sleep(0.5)
        metrics = httpx.get(f"{service.url}/metrics").text
    text = log.read_text()
    assert "client went away" in text
    assert "Traceback" not in text and "ERROR" not in text
    assert 'status="500"' not in metrics
    assert 'route="/predict",status="499"' in metrics
