"""Starting real servers on free local ports: ``python -m service`` and others (bench peers).

Shared by the tests and by ``bench/``: one way to start a process, wait until it answers, and
stop it, whatever the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Poll ``url`` until it answers 200; fail if the process exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"the server exited ({process.returncode}) during start-up")
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout_s} s")


@contextmanager
def running_process(
    command: list[str],
    ready_url: str,
    environment: Mapping[str, str] | None = None,
    timeout_s: float = 120,
    output: Path | None = None,
    cwd: Path = ROOT,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the block ends (SIGTERM, then SIGKILL after 30 s).

    Args:
        ready_url: answers 200 once the server is ready.
        output: file for the process's stdout and stderr (default: discarded).
    """
    sink = output.open("wb") if output is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **(environment or {})},
        stdout=sink,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_ready(ready_url, process, timeout_s)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if output is not None and not isinstance(sink, int):
            sink.close()


@dataclass(frozen=True)
class LiveService:
    """A running ``python -m service``."""

    url: str
    process: subprocess.Popen[bytes]
    port: int


@contextmanager
def running_service(
    output: Path | None = None, timeout_s: float = 120, **settings: object
) -> Iterator[LiveService]:
    """``python -m service`` on a free local port; ``settings`` become CNN_SERVE_* variables.

    Defaults: the committed models, log level warning, bound to 127.0.0.1, gRPC off.
    """
    port = free_port()
    environment = {
        "CNN_SERVE_HOST": "127.0.0.1",
        "CNN_SERVE_MODELS_DIR": str(MODELS_DIR),
        "CNN_SERVE_LOG_LEVEL": "warning",
        "CNN_SERVE_GRPC_PORT": "0",  # gRPC on a port of its own only where a test asks.
        **{f"CNN_SERVE_{name.upper()}": str(value) for name, value in settings.items()},
        "CNN_SERVE_PORT": str(port),
    }
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "service"]
    with running_process(command, f"{url}/health/ready", environment, timeout_s, output) as process:
        yield LiveService(url, process, port)
