"""Settings from the environment, and the automatic thread budget."""

from __future__ import annotations

import os
import subprocess
import sys
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


def bad_values(field: str) -> list[str]:
    """Values no setting of this field's type and bounds may take."""
    annotation = str(Settings.model_fields[field].annotation)
    if "int" in annotation:
        return ["abc", "-1", "1e999", "9" * 5000, "²"]
    if "float" in annotation:
        return ["abc", "inf", "nan", "-1", "1e999"]
    if "Literal" in annotation:
        return ["bogus"]
    if field == "api_keys_file":
        return ["/nonexistent/keys", "/"]
    return []


INVALID = [
    (field, value)
    for field in Settings.model_fields
    for value in bad_values(field)
    # 0 and -1 are fine for a few (0 = automatic); the bounds below are what is checked.
    if not (value == "-1" and (Settings.model_fields[field].metadata or []) == [])
]


@pytest.mark.parametrize("field, value", INVALID)
def test_every_bad_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    variable = f"CNN_SERVE_{field.upper()}"
    monkeypatch.setenv(variable, value)
    if field == "operator_port":  # Any valid port must differ from the API's.
        monkeypatch.setenv("CNN_SERVE_PORT", "8000")
    with pytest.raises(config.SettingsError) as caught:
        config.load_settings()
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message
    assert message.startswith(f"{variable}="), message


@pytest.mark.slow  # A real process each.
@pytest.mark.parametrize(
    "environment, expected",
    [
        (
            {"CNN_SERVE_WORKERS": "-1"},
            "CNN_SERVE_WORKERS=-1: Input should be greater than or equal to 0",
        ),
        (
            {"CNN_SERVE_HEADER_TIMEOUT_S": "inf"},
            "CNN_SERVE_HEADER_TIMEOUT_S=inf: Input should be a finite number",
        ),
        (
            {"CNN_SERVE_API_KEYS_FILE": "/nonexistent"},
            "CNN_SERVE_API_KEYS_FILE=/nonexistent: /nonexistent is not a readable file",
        ),
        (
            {"PROMETHEUS_MULTIPROC_DIR": "/nonexistent"},
            "PROMETHEUS_MULTIPROC_DIR=/nonexistent: not a writable directory",
        ),
        ({"CNN_SERVE_PORT": "abc"}, "CNN_SERVE_PORT=abc: Input should be a valid integer"),
    ],
)
def test_the_command_line_says_what_is_wrong_in_one_line(
    environment: dict[str, str], expected: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service"],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"cnn-serve: cannot start: {expected}"), result.stderr


@pytest.mark.slow  # A real process each.
@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--help"], "usage: cnn-serve"),
        (["--version"], "cnn-serve 0.1.0"),
    ],
)
def test_the_command_line_has_help_and_a_version_and_starts_nothing(
    arguments: list[str], expected: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", *arguments], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.startswith(expected), result


def test_command_line_options_become_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy of the environment for this test: parse_command_line writes into os.environ.
    monkeypatch.setattr(os, "environ", {**os.environ})
    from service.__main__ import parse_command_line

    parse_command_line(["--port", "8500", "--workers", "3", "--models-dir", "/srv/models"])
    settings = Settings()
    assert (settings.port, settings.workers, str(settings.models_dir)) == (8500, 3, "/srv/models")
    monkeypatch.setenv("CNN_SERVE_PORT", "abc")  # The same one-line error as a bad variable.
    with pytest.raises(config.SettingsError, match="CNN_SERVE_PORT=abc"):
        config.load_settings()
