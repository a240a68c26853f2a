"""Shared fixtures: the committed MNIST digits, the committed models, and a live TestClient."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """500 real MNIST test digits: uint8 (500, 28, 28) and int64 labels (500,)."""
    with np.load(FIXTURES / "mnist_test_500.npz") as archive:
        return archive["images"], archive["labels"].astype(np.int64)


def make_settings(**overrides: object) -> Settings:
    """Settings for tests: the committed models, small limits unless overridden."""
    values: dict[str, object] = {"models_dir": MODELS_DIR, "intra_op_threads": 1}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    """A client of the app on the committed models, lifespan (model loading) included."""
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as test_client:
        yield test_client


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Poll ``url``/health/ready until it answers 200; fail if the server exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, "the service exited during start-up"
        time.sleep(0.2)
    raise AssertionError(f"{url} was not ready within {timeout_s} s")
