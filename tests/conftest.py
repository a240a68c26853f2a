"""Shared fixtures: the committed MNIST digits, the committed models, and a live TestClient."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.runtime import ModelRuntime, Scored
from tests.servers import free_port, running_service, wait_until_ready

__all__ = ["free_port", "running_service", "wait_until_ready"]

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
# What makes a test slow (pytest -m "not slow" is the fast loop): the real server process, a
# browser, the drawings corpus, training, the container and manifest tools.
SLOW_DIRECTORIES = {"reliability", "web", "training", "deploy", "clients"}
SLOW_MODULES = {"test_drawings.py", "test_photos.py", "test_explain_faithfulness.py"}
REAL_PROCESS_FIXTURES = {"live", "triton_client"}
MODELS_DIR = ROOT / "models"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark as ``slow`` every test that the rules above call slow."""
    for item in items:
        top = item.path.relative_to(TESTS).parts[0]
        if (
            top in SLOW_DIRECTORIES
            or item.path.name in SLOW_MODULES
            or REAL_PROCESS_FIXTURES & set(getattr(item, "fixturenames", ()))
        ):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """500 real MNIST test digits: uint8 (500, 28, 28) and int64 labels (500,)."""
    with np.load(FIXTURES / "mnist_test_500.npz") as archive:
        return archive["images"], archive["labels"].astype(np.int64)


def make_settings(**overrides: object) -> Settings:
    """Settings for tests: the committed models, small limits, gRPC off, unless overridden."""
    values: dict[str, object] = {"models_dir": MODELS_DIR, "intra_op_threads": 1, "grpc_port": 0}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    """A client of the app on the committed models, lifespan (model loading) included."""
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as test_client:
        yield test_client


def slow_model(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make every model run take ``seconds`` longer (to fill queues and in-flight slots)."""
    real_predict = ModelRuntime.predict_scored

    def slow_predict(self: ModelRuntime, images: np.ndarray) -> Scored:
        time.sleep(seconds)
        return real_predict(self, images)

    monkeypatch.setattr(ModelRuntime, "predict_scored", slow_predict)
