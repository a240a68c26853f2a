"""Whether every worker process of this service is serving, read from their shared heartbeats.

With several workers each owns a ``SO_REUSEPORT`` socket, so the kernel hashes about 1 in N new
connections to each worker's socket: while one worker is still loading its models, or has
stalled and is being replaced, its share of connections waits in its queue. Readiness must
say so, or a load balancer sends traffic that waits seconds. Each worker's event loop writes
the monotonic clock (shared by every process) into its slot of a shared array twice a second;
a slot older than ``limit_s``, or never written (0.0), is a worker that is not serving.
"""

from __future__ import annotations

import time
from typing import Any

HEARTBEAT_INTERVAL_S = 0.5
# The freshness readiness asks for when stall detection is off (WORKER_STALL_TIMEOUT_S=0).
DEFAULT_LIMIT_S = 10.0


class WorkerHeartbeats:
    """This worker's heartbeat slot, beside its siblings', in shared memory (one process: none)."""

    beats: Any = None  # multiprocessing Array of doubles, one per worker; None: one process
    index = 0
    limit_s = DEFAULT_LIMIT_S

    @classmethod
    def attach(cls, beats: Any, index: int, limit_s: float) -> None:
        cls.beats, cls.index = beats, index
        cls.limit_s = limit_s or DEFAULT_LIMIT_S

    @classmethod
    def beat(cls) -> None:
        if cls.beats is not None:
            cls.beats[cls.index] = time.monotonic()  # Only this worker writes its own slot.

    @classmethod
    def not_serving(cls) -> int:
        """How many workers (this one included) have no heartbeat within ``limit_s``."""
        if cls.beats is None:
            return 0
        now = time.monotonic()
        return sum(1 for beat in list(cls.beats) if not beat or now - beat > cls.limit_s)


def workers_not_serving() -> str | None:
    """Why this service is not ready for lack of workers (None: every worker is serving)."""
    silent = WorkerHeartbeats.not_serving()
    if not silent:
        return None
    total = len(WorkerHeartbeats.beats)
    return f"{silent} of {total} workers {'is' if silent == 1 else 'are'} not serving yet"
