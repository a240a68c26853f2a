"""Readiness from the workers' shared heartbeats."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from service.siblings import DEFAULT_LIMIT_S, WorkerHeartbeats, workers_not_serving


@pytest.fixture
def two_workers() -> Iterator[list[float]]:
    beats = [0.0, 0.0]
    WorkerHeartbeats.attach(beats, 0, 2.0)
    yield beats
    WorkerHeartbeats.attach(None, 0, 0)


def test_one_process_is_always_serving() -> None:
    assert WorkerHeartbeats.beats is None
    assert WorkerHeartbeats.not_serving() == 0 and workers_not_serving() is None


def test_a_worker_that_never_beat_or_beat_too_long_ago_is_not_serving(
    two_workers: list[float],
) -> None:
    WorkerHeartbeats.beat()
    assert two_workers[0] > 0
    assert workers_not_serving() == "1 of 2 workers is not serving yet"
    two_workers[1] = time.monotonic() - 1.0
    assert workers_not_serving() is None
    two_workers[1] = time.monotonic() - 2.5
    two_workers[0] = time.monotonic() - 3.0
    assert workers_not_serving() == "2 of 2 workers are not serving yet"


def test_stall_detection_off_still_bounds_freshness(two_workers: list[float]) -> None:
    WorkerHeartbeats.attach(two_workers, 0, 0)
    assert WorkerHeartbeats.limit_s == DEFAULT_LIMIT_S
