"""TensorFlow's CPU-machine start-up noise is dropped; every other line on stderr is kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from training.quiet import native_stderr_filtered

NOISE_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796127298.575641   22997 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n",
    "E0000 00:00:1796127302.168624   22997 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
]


def test_native_noise_is_dropped_and_real_errors_kept(capfd: pytest.CaptureFixture[str]) -> None:
    with native_stderr_filtered():
        for line in NOISE_LINES:
            os.write(2, line.encode())
        os.write(2, b"E0000 op_kernel.cc:1] a real kernel error\n")
        print("python-level warning", file=sys.stderr)
    err = capfd.readouterr().err
    assert "cuInit" not in err and "cudart_stub" not in err and "absl" not in err
    assert "a real kernel error" in err and "python-level warning" in err


def test_stderr_is_restored_when_the_block_raises(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), native_stderr_filtered():
        os.write(2, b"kept before the error\n")
        raise RuntimeError
    os.write(2, b"written after the block\n")
    err = capfd.readouterr().err
    assert "kept before the error" in err and "written after the block" in err


def test_training_help_lists_every_command_without_tensorflow_noise() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"},
        timeout=120,
        check=True,
    )
    for command in ("train", "evaluate", "export", "all", "quantize", "drawings", "reliability"):
        assert f"    {command}" in result.stdout
    assert result.stderr == ""
