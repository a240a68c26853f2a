"""Several uvicorn worker processes, each with its own ``SO_REUSEPORT`` listening socket.

uvicorn's own multi-worker mode shares one listening socket: each event loop accepts every
pending connection when it wakes, so a burst of connections (a load balancer's pool, a
benchmark's clients) often lands on one worker and leaves the other CPU idle. With one socket per
worker and ``SO_REUSEPORT``, the kernel spreads new connections across the workers by hash.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

from service.config import Settings

logger = logging.getLogger("service.workers")
APP = "service.app:create_app_from_environment"
RESTART_PAUSE_S = 1.0
# A worker that dies this soon after starting will die again: stop instead of looping.
CRASH_LOOP_S = 15.0
STARTUP_FAILURE = 3  # uvicorn's own exit status when the app fails to start.


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    """The uvicorn settings shared by the single- and multi-process modes."""
    return uvicorn.Config(
        APP,
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        access_log=False,
        proxy_headers=False,
    )


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket that other processes may bind to the same address too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    listener.listen(2048)
    return listener


def configure_logging(settings: Settings) -> None:
    """The service's own log lines, in the parent and in each spawned worker."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _worker_main(settings: Settings) -> None:
    configure_logging(settings)
    config = uvicorn_config(settings)
    uvicorn.Server(config).run(sockets=[reuse_port_socket(settings.host, settings.port)])


class WorkerSupervisor:
    """Starts the workers, restarts one that dies, and stops them all on SIGTERM/SIGINT."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[BaseProcess] = []
        self.started_at: dict[int | None, float] = {}
        self.stopping = False
        self.failed = False

    def _start_one(self) -> BaseProcess:
        process = self.context.Process(target=_worker_main, args=(self.settings,), daemon=False)
        process.start()
        self.started_at[process.pid] = time.monotonic()
        return process

    def _replace_dead_workers(self) -> None:
        for index, process in enumerate(self.processes):
            if process.is_alive() or self.stopping:
                continue
            if time.monotonic() - self.started_at[process.pid] < CRASH_LOOP_S:
                logger.error(
                    "worker %s failed at start-up (%s); stopping", process.pid, process.exitcode
                )
                self.stopping = self.failed = True
                return
            logger.error("worker %s exited (%s); restarting", process.pid, process.exitcode)
            time.sleep(RESTART_PAUSE_S)
            self.processes[index] = self._start_one()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        """Supervise until a stop signal; returns the exit code."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.processes = [self._start_one() for _ in range(self.workers)]
        logger.info("started %d workers with SO_REUSEPORT sockets", self.workers)
        while not self.stopping:
            self._replace_dead_workers()
            time.sleep(0.2)
        clean = self._shutdown()
        return 0 if clean and not self.failed else 1

    def _shutdown(self) -> bool:
        """Stop every worker: SIGTERM, then SIGKILL past the grace period. True if all clean."""
        logger.info("stopping %d workers", len(self.processes))
        for process in self.processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: each uvicorn finishes its requests first.
        deadline = time.monotonic() + self.settings.graceful_shutdown_s + 5
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        # uvicorn re-raises the SIGTERM it handled, so a clean worker ends by that signal.
        clean = all(process.exitcode in (0, -signal.SIGTERM) for process in self.processes)
        logger.info("all workers stopped%s", "" if clean else " (some uncleanly)")
        return clean


def serve(settings: Settings, workers: int) -> int:
    """Serve with one process (plain uvicorn) or several (``WorkerSupervisor``); exit code."""
    if workers > 1:
        return WorkerSupervisor(settings, workers).run()
    server = uvicorn.Server(uvicorn_config(settings))
    server.run()
    return 0 if server.started else STARTUP_FAILURE
