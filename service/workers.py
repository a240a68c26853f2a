"""Serving processes: a supervisor, and uvicorn workers that each own a ``SO_REUSEPORT`` socket.

uvicorn's own multi-worker mode shares one listening socket: each event loop accepts every
pending connection when it wakes, so a burst of connections (a load balancer's pool, a
benchmark's clients) often lands on one worker and leaves the other CPU idle. With one socket per
worker and ``SO_REUSEPORT``, the kernel spreads new connections across the workers by hash.

The supervisor makes those sockets itself, after checking that nothing else serves the port, and
keeps them: a worker that dies is replaced on the same socket, so connections that arrive
meanwhile wait in its queue instead of being refused. Workers report when their models are
loaded; one that exits with an error before that is a start-up failure (the service stops),
one that dies later, or is killed, is replaced. Workers die with the supervisor.

A worker's event loop writes a heartbeat (the monotonic clock, shared by every process) into
shared memory twice a second. One whose heartbeat is older than ``WORKER_STALL_TIMEOUT_S``
(stopped by SIGSTOP, a debugger, a stuck loop) keeps its socket but answers nothing: the
supervisor kills it and starts a replacement on the same socket, so the connections queued
there are answered by the replacement instead of hanging. One that is not serving within
``WORKER_START_TIMEOUT_S`` of its start is killed and started again. Readiness waits for every
worker's heartbeat (``service/siblings.py``).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from types import FrameType
from typing import Any

import uvicorn

from service.app import create_app
from service.config import Settings
from service.request_ids import JsonLogFormatter, RequestIdLogFilter
from service.siblings import HEARTBEAT_INTERVAL_S, WorkerHeartbeats
from service.transport import ConnectionShare, guarded_protocol

logger = logging.getLogger("service.workers")
RESTART_PAUSE_S = 0.5
SUPERVISE_INTERVAL_S = 0.2
PARENT_CHECK_INTERVAL_S = 1.0
# Workers killed by a signal before they are ready are restarted, up to this many times in a row.
MAX_EARLY_DEATHS = 5
STARTUP_FAILURE = 3  # uvicorn's own exit status when the app fails to start.
INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C.
_PR_SET_PDEATHSIG = 1


class PortInUseError(OSError):
    """Something already listens on the service's address."""


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    """The uvicorn settings shared by the single- and multi-process modes (one app each)."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # JSON: uvicorn's own lines go through the root handler and its JSON formatter.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        access_log=False,
        proxy_headers=False,
        http=guarded_protocol(settings),
    )


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_port_free(host: str, port: int) -> None:
    """Bind without ``SO_REUSEPORT`` once: that fails if any process serves the address.

    Raises:
        PortInUseError: the address is taken, by another cnn-serve or any other program.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    errno.EADDRINUSE, f"{host}:{port} is already in use by another process"
                ) from None
            raise


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket that the other workers' sockets share the address with."""
    listener = socket.socket(_family(host), socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


def configure_logging(settings: Settings) -> None:
    """The service's own log lines, in the parent and in each spawned worker."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s%(request)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:  # " [<request id>]" while serving a request
        handler.addFilter(RequestIdLogFilter())
        if settings.log_format == "json":
            handler.setFormatter(JsonLogFormatter())


def service_url(settings: Settings) -> str:
    """The URL to print: a wildcard bind address is reachable on localhost."""
    host = {"0.0.0.0": "localhost", "::": "localhost"}.get(settings.host, settings.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}"


class _Server(uvicorn.Server):
    """uvicorn, plus: say when the app has started, and stop if the supervisor disappears.

    Args:
        ready: set once the models are loaded (workers tell the supervisor this way).
        supervisor_pid: the process to outlive never (None when there is no supervisor).
        announce: a line to log once serving (the single-process mode's "serving <url>").
        heartbeat: whether to write this worker's heartbeat (``WorkerHeartbeats``).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        ready: Event | None = None,
        supervisor_pid: int | None = None,
        announce: str | None = None,
        heartbeat: bool = False,
    ) -> None:
        super().__init__(config)
        self._ready = ready
        self._supervisor_pid = supervisor_pid
        self._announce = announce
        self._heartbeat = heartbeat
        self.interrupted = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        if self._heartbeat:
            WorkerHeartbeats.beat()  # Before ready: the supervisor checks from then on.
            asyncio.get_running_loop().create_task(self._beat())
        if self._ready is not None:
            self._ready.set()
        if self._announce:
            logger.info("%s", self._announce)
        if self._supervisor_pid is not None:
            asyncio.get_running_loop().create_task(self._watch_supervisor(self._supervisor_pid))

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn's signal handler, except that a Ctrl-C is not raised again after shutdown.

        uvicorn re-raises each signal it handled once it has shut down; for SIGINT that is a
        KeyboardInterrupt traceback after a clean stop (and, on a second Ctrl-C, the lifespan's
        cancellation logged as an error). ``interrupted`` records it instead.
        """
        super().handle_exit(sig, frame)
        if sig == signal.SIGINT:
            self.interrupted = True
            self._captured_signals.remove(sig)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if self.force_exit:
            # A second Ctrl-C skips uvicorn's wait for open connections, and the app's own
            # shutdown with it; run the latter (it stops the batchers, in milliseconds), so the
            # lifespan ends instead of being cancelled and logged as an error.
            await self.lifespan.shutdown()

    async def _beat(self) -> None:
        while not self.should_exit:
            WorkerHeartbeats.beat()
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)

    async def _watch_supervisor(self, supervisor_pid: int) -> None:
        # PR_SET_PDEATHSIG covers a supervisor killed outright; this covers the moment between
        # spawn and prctl, and systems without prctl.
        while not self.should_exit:
            if os.getppid() != supervisor_pid:
                logger.error("the supervisor is gone; worker %d stops", os.getpid())
                self.should_exit = True
            await asyncio.sleep(PARENT_CHECK_INTERVAL_S)


# glibc mallopt parameters (malloc.h).
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def configure_allocator() -> None:
    """Make freed image buffers go back to the system, so that RSS follows the decode budget.

    glibc otherwise raises its mmap threshold after the first large free and keeps later large
    buffers in per-thread arenas: decodes in a few threads, one after the other, then leave the
    process holding several images' worth of memory.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):  # Not glibc: nothing to tune.
        pass


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the supervisor dies, even by SIGKILL (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _worker_main(
    settings: Settings,
    sockets: list[socket.socket],
    ready: Event,
    supervisor_pid: int,
    connection_counts: Any,
    heartbeats: Any,
    index: int,
) -> None:
    _die_with_parent()
    if os.getppid() != supervisor_pid:  # The supervisor died before prctl took effect.
        sys.exit(1)
    configure_allocator()
    ConnectionShare.attach(connection_counts, index)
    WorkerHeartbeats.attach(heartbeats, index, settings.worker_stall_timeout_s)
    configure_logging(settings)
    server = _Server(uvicorn_config(settings), ready, supervisor_pid, heartbeat=True)
    server.run(sockets=sockets)


def listeners(settings: Settings) -> list[socket.socket]:
    """One worker's sockets: the service port, and the operator port if there is one."""
    ports = [settings.port] + ([settings.operator_port] if settings.operator_port else [])
    return [reuse_port_socket(settings.host, port) for port in ports]


@dataclass
class _Slot:
    """One worker position: its sockets live as long as the supervisor, workers come and go."""

    sockets: list[socket.socket]
    process: BaseProcess | None = None
    ready: Event | None = None
    started_at: float = 0.0
    early_deaths: int = 0
    was_ready: bool = field(default=False)


class WorkerSupervisor:
    """Starts the workers, replaces those that die, and stops them all on SIGTERM/SIGINT."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")
        self.slots = [_Slot(listeners(settings)) for _ in range(workers)]
        # Open connections per worker, shared so that workers can even them out.
        self.connection_counts = self.context.Array("i", workers, lock=False)
        # Each worker's last heartbeat (time.monotonic()), written by the worker.
        self.heartbeats = self.context.Array("d", workers, lock=False)
        self.stopping = False
        self.failed = False
        self.reported_ready = False

    def _start(self, slot: _Slot) -> None:
        slot.ready = self.context.Event()
        slot.was_ready = False
        slot.started_at = time.monotonic()
        index = self.slots.index(slot)
        self.heartbeats[index] = 0.0  # Not serving until the new worker's first beat.
        slot.process = self.context.Process(
            target=_worker_main,
            args=(
                self.settings,
                slot.sockets,
                slot.ready,
                os.getpid(),
                self.connection_counts,
                self.heartbeats,
                index,
            ),
            daemon=False,
        )
        slot.process.start()

    def _check(self, slot: _Slot) -> None:
        """Note readiness; replace a dead worker, or stop on a start-up failure."""
        assert slot.process is not None and slot.ready is not None
        if slot.ready.is_set() and not slot.was_ready:
            slot.was_ready, slot.early_deaths = True, 0
        if slot.process.is_alive() and not self.stopping:
            self._kill_if_unresponsive(slot)
        if slot.process.is_alive() or self.stopping:
            return
        code, pid = slot.process.exitcode, slot.process.pid
        _forget_metrics_of(pid)
        if not slot.was_ready:
            killed = code is not None and code < 0
            slot.early_deaths += 1
            if not killed or slot.early_deaths >= MAX_EARLY_DEATHS:
                logger.error("worker %s failed at start-up (exit %s); stopping", pid, code)
                self.stopping = self.failed = True
                return
            logger.warning("worker %s was killed while starting (%s); restarting", pid, code)
        else:
            logger.error("worker %s died (exit %s); starting a replacement", pid, code)
        time.sleep(RESTART_PAUSE_S)
        self._start(slot)

    def _kill_if_unresponsive(self, slot: _Slot) -> None:
        """SIGKILL a ready worker whose heartbeat is older than the stall timeout, or a starting
        one not serving within the start timeout; ``_check`` then replaces it."""
        assert slot.process is not None
        now = time.monotonic()
        if slot.was_ready:
            limit = self.settings.worker_stall_timeout_s
            elapsed = now - self.heartbeats[self.slots.index(slot)]
            reason = "stalled: no heartbeat for %.1f s (limit %g s); killing and replacing it"
        else:
            limit = self.settings.worker_start_timeout_s
            elapsed = now - slot.started_at
            reason = "not serving %.1f s after its start (limit %g s); killing it"
        if not limit or elapsed <= limit:
            return
        logger.error("worker %s " + reason, slot.process.pid, elapsed, limit)
        slot.process.kill()
        slot.process.join()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        """Supervise until a stop signal; returns the exit code."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for slot in self.slots:
            self._start(slot)
        while not self.stopping:
            for slot in self.slots:
                self._check(slot)
            if not self.reported_ready and all(slot.was_ready for slot in self.slots):
                self.reported_ready = True
                logger.info(
                    "serving %s with %d workers", service_url(self.settings), len(self.slots)
                )
            time.sleep(SUPERVISE_INTERVAL_S)
        clean = self._shutdown()
        return 0 if clean and not self.failed else 1

    def _shutdown(self) -> bool:
        """Stop every worker: SIGTERM, then SIGKILL past the grace period. True if all clean."""
        processes = [slot.process for slot in self.slots if slot.process is not None]
        logger.info("stopping %d workers", len(processes))
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: each uvicorn finishes its requests first.
        deadline = time.monotonic() + self.settings.graceful_shutdown_s + 5
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for slot in self.slots:
            for listener in slot.sockets:
                listener.close()
        # uvicorn re-raises the SIGTERM it handled, so a clean worker ends by that signal.
        clean = all(process.exitcode in (0, -signal.SIGTERM) for process in processes)
        logger.info("all workers stopped%s", "" if clean else " (some uncleanly)")
        return clean


def _forget_metrics_of(pid: int | None) -> None:
    """Drop a dead worker's live gauges from the shared metrics directory."""
    if pid is None or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def serve(settings: Settings, workers: int) -> int:
    """Serve with one process (plain uvicorn) or several (``WorkerSupervisor``); exit code.

    Raises:
        PortInUseError: the address is already served.
    """
    check_port_free(settings.host, settings.port)
    if settings.operator_port:
        check_port_free(settings.host, settings.operator_port)
    if workers > 1:
        return WorkerSupervisor(settings, workers).run()
    configure_allocator()
    announce = f"serving {service_url(settings)} with 1 worker"
    server = _Server(uvicorn_config(settings), announce=announce)
    server.run(sockets=listeners(settings))
    if server.interrupted:
        return INTERRUPTED
    return 0 if server.started else STARTUP_FAILURE
