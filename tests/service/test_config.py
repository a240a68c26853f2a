"""Settings from the environment, and the automatic thread budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service import config
from service.config import Settings, available_cpus


def test_settings_read_the_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNN_SERVE_PORT", "9001")
    monkeypatch.setenv("CNN_SERVE_MAX_ITEMS_PER_REQUEST", "32")
    monkeypatch.setenv("CNN_SERVE_DEFAULT_MODEL", "fashion-deep-cnn")
    settings = Settings()
    assert (settings.port, settings.max_items_per_request, settings.default_model) == (
        9001,
        32,
        "fashion-deep-cnn",
    )


@pytest.mark.parametrize(
    "old, new, field",
    [
        ("CNN_SERVE_MAX_BATCH_SIZE", "CNN_SERVE_MAX_ITEMS_PER_REQUEST", "max_items_per_request"),
        ("CNN_SERVE_BATCH_MAX_SIZE", "CNN_SERVE_BATCH_MAX_ITEMS", "batch_max_items"),
    ],
)
def test_old_setting_names_still_work_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    old: str,
    new: str,
    field: str,
) -> None:
    monkeypatch.setenv(old, "17")
    with caplog.at_level("WARNING", logger="service.config"):
        assert getattr(Settings(), field) == 17
    assert f"{old} is deprecated: use {new}" in caplog.text
    monkeypatch.setenv(new, "18")  # The new name wins when both are set.
    assert getattr(Settings(), field) == 18


def test_settings_take_python_names_too() -> None:
    assert Settings(max_items_per_request=5, batch_max_items=6).batch_max_items == 6


def test_invalid_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNN_SERVE_MAX_ITEMS_PER_REQUEST", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_cgroup_quota_caps_the_cpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")  # One CPU's worth of time.
    monkeypatch.setattr(config, "CGROUP_CPU_MAX", quota)
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert available_cpus() == 1
    quota.write_text("max 100000\n")
    assert available_cpus() == 4


def test_threads_split_the_cpus_between_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(config, "CGROUP_CPU_MAX", tmp_path / "absent")
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert Settings().resolved_workers() == 4  # One worker per CPU by default...
    assert Settings().resolved_intra_op_threads() == 1  # ...each with one thread.
    assert Settings(workers=1).resolved_intra_op_threads() == 4
    assert Settings(workers=2).resolved_intra_op_threads() == 2
    assert Settings(workers=8).resolved_intra_op_threads() == 1
    assert Settings(workers=2, intra_op_threads=3).resolved_intra_op_threads() == 3
