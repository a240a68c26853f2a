"""TensorFlow without its start-up noise on machines with no GPU.

Importing TensorFlow and creating its first device print 5-8 lines from its native code to the
process's stderr (file descriptor 2, below Python's ``sys.stderr``): "Could not find cuda
drivers", "failed call to cuInit", the CPU-instructions notice, the absl preamble. None of them
is actionable on a CPU machine, and ``TF_CPP_MIN_LOG_LEVEL`` cannot silence the ones written
before TensorFlow reads it. ``tensorflow_quietly`` captures file descriptor 2 while that happens
and passes on every line that is not one of those, so real errors still reach the user.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# Lines TensorFlow 2.21 prints on a CPU-only machine while importing and finding its devices.
START_UP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog"
    r"|cudart_stub\.cc|cuda_platform\.cc|cuda_executor\.cc|cuda_diagnostics\.cc"
    r"|failed call to cuInit"
    r"|cpu_feature_guard\.cc|To enable the following instructions"
    r"|oneDNN custom operations are on"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation_placer\.cc"
    r"|TF-TRT Warning"
)


@contextmanager
def native_stderr_filtered(noise: re.Pattern[str] = START_UP_NOISE) -> Iterator[None]:
    """Inside the block, lines written to file descriptor 2 that match ``noise`` are dropped;
    the others are written to stderr when the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not noise.search(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def tensorflow_quietly() -> None:
    """Import TensorFlow and list its devices once, without the CPU-machine start-up noise.

    ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 (warnings and errors only from then on) unless the
    user has set it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_filtered():
        import tensorflow as tf

        tf.config.list_physical_devices()
