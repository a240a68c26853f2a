"""Worker processes that heal, die with their supervisor, and leave nothing behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from model_card import sha256_of
from tests.servers import MODELS_DIR, ROOT, free_port, running_service

DIGIT = {"instances": [np.zeros((28, 28)).tolist()]}


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (the supervisor's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def workers_of(pid: int, count: int, timeout_s: float = 30) -> list[int]:
    """Wait until ``pid`` has ``count`` worker children (started, not necessarily ready)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # multiprocessing's resource tracker is a child too; workers run "-c from multiprocessing".
        found = [child for child in children(pid) if _is_worker(child)]
        if len(found) == count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{pid} did not have {count} workers within {timeout_s} s")


def _is_worker(pid: int) -> bool:
    try:
        return "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def answers_every_request(url: str, seconds: float) -> tuple[int, int]:
    """(ok, failed) for a steady stream of new-connection requests during ``seconds``."""
    ok = failed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            response = httpx.post(f"{url}/predict", json=DIGIT, timeout=10)
            ok += response.status_code == 200
            failed += response.status_code != 200
        except httpx.TransportError:
            failed += 1
    return ok, failed


def until_every_worker_answers(url: str, streak_needed: int = 8) -> None:
    """Poll readiness on new connections (hashed over the workers' sockets) until
    ``streak_needed`` in a row answer 200 within 0.2 s: a replacement still starting holds the
    connections hashed to it, so a streak means every worker serves (1 - 2**-8 with two)."""
    deadline, streak = time.monotonic() + 60, 0
    while streak < streak_needed:
        assert time.monotonic() < deadline, "the workers did not all answer within 60 s"
        started = time.monotonic()
        ready = httpx.get(f"{url}/health/ready", timeout=5).status_code == 200
        streak = streak + 1 if ready and time.monotonic() - started < 0.2 else 0


def wait_for_replacement(supervisor: int, dead: int, count: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        current = workers_of(supervisor, count)
        if dead not in current:
            return current
        time.sleep(0.1)
    raise AssertionError("the dead worker was not replaced")


@pytest.mark.parametrize("moment_s", [0.0, 0.5, 3.0])
def test_a_worker_killed_at_any_moment_is_replaced(moment_s: float) -> None:
    """kill -9 right after start, during start-up or later: the service keeps answering."""
    port = free_port()
    environment = {
        **os.environ,
        "CNN_SERVE_PORT": str(port),
        "CNN_SERVE_HOST": "127.0.0.1",
        "CNN_SERVE_WORKERS": "2",
        "CNN_SERVE_MODELS_DIR": str(MODELS_DIR),
        "CNN_SERVE_LOG_LEVEL": "warning",
    }
    supervisor = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        victim = workers_of(supervisor.pid, 2)[0]
        time.sleep(moment_s)
        os.kill(victim, signal.SIGKILL)
        replacements = wait_for_replacement(supervisor.pid, victim, 2)
        assert victim not in replacements and supervisor.poll() is None
        until_every_worker_answers(url)
        ok, failed = answers_every_request(url, 2.0)
        assert ok > 20 and failed == 0
    finally:
        supervisor.terminate()
        supervisor.wait(timeout=30)


def test_a_worker_killed_under_load_loses_at_most_its_own_requests() -> None:
    with running_service(workers=2) as service:
        victim = workers_of(service.process.pid, 2)[0]
        os.kill(victim, signal.SIGKILL)
        ok, failed = answers_every_request(service.url, 4.0)
        # Connections queued on the dead worker's socket wait for its replacement: none fail.
        assert ok > 20 and failed == 0
        assert victim not in workers_of(service.process.pid, 2)


def test_a_stalled_worker_is_replaced_and_no_connection_hangs(tmp_path: Path) -> None:
    """SIGSTOP a worker: its heartbeat stops, the supervisor kills and replaces it within the
    stall timeout, and every new connection meanwhile is answered (about half were hashed to
    the stopped worker's socket, and hung forever)."""
    log = tmp_path / "server.log"
    with running_service(output=log, workers=2, worker_stall_timeout_s=2) as service:
        victim = workers_of(service.process.pid, 2)[0]
        os.kill(victim, signal.SIGSTOP)
        started = time.monotonic()
        statuses = [
            httpx.post(f"{service.url}/predict", json=DIGIT, timeout=20).status_code
            for _ in range(24)
        ]
        assert statuses == [200] * 24
        assert time.monotonic() - started < 20
        assert victim not in wait_for_replacement(service.process.pid, victim, 2)
    assert re.search(rf"worker {victim} stalled: no heartbeat for [0-9.]+ s", log.read_text())


def test_a_worker_stuck_while_starting_is_restarted_and_readiness_waits_for_it(
    tmp_path: Path,
) -> None:
    """SIGSTOP a worker as soon as it is spawned: the other one serves, but /health/ready says
    503 (its share of connections would wait), until the start timeout restarts the stuck one."""
    log = tmp_path / "server.log"
    environment = {
        **os.environ,
        "CNN_SERVE_PORT": str(port := free_port()),
        "CNN_SERVE_HOST": "127.0.0.1",
        "CNN_SERVE_WORKERS": "2",
        "CNN_SERVE_MODELS_DIR": str(MODELS_DIR),
        "CNN_SERVE_LOG_LEVEL": "warning",
        "CNN_SERVE_WORKER_START_TIMEOUT_S": "8",
    }
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as output:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=ROOT, env=environment, stderr=output
        )
    try:
        victim = workers_of(supervisor.pid, 2)[0]
        os.kill(victim, signal.SIGSTOP)
        reasons = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:  # About half of these connections land on the stopped worker and time out.
                response = httpx.get(f"{url}/health/ready", timeout=0.5)
            except httpx.TransportError:
                continue
            if response.status_code == 200:
                break
            reasons.add(response.json()["reason"])
        assert response.status_code == 200
        assert "1 of 2 workers is not serving yet" in reasons
        assert victim not in workers_of(supervisor.pid, 2)
    finally:
        supervisor.terminate()
        supervisor.wait(timeout=30)
    assert re.search(rf"worker {victim} not serving [0-9.]+ s after its start", log.read_text())


def test_workers_die_with_their_supervisor() -> None:
    with running_service(workers=2) as service:
        workers = workers_of(service.process.pid, 2)
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{pid}").exists() and _is_worker(pid) for pid in workers):
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            time.sleep(0.1)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{service.url}/health/live", timeout=2)


def test_a_worker_that_cannot_start_stops_the_service(tmp_path: Path) -> None:
    """A start-up failure (not a kill) is not retried forever: one clear exit."""
    model_dir = tmp_path / "mnist-deep-cnn"
    shutil.copytree(MODELS_DIR / "mnist-deep-cnn", model_dir)
    # A file whose sha256 matches its card (the supervisor's check passes) but that ONNX Runtime
    # cannot load (each worker fails while loading its models).
    (model_dir / "model.onnx").write_bytes(b"not an onnx model")
    card = json.loads((model_dir / "model.json").read_text())
    card["files"]["sha256"] = sha256_of(model_dir / "model.onnx")
    (model_dir / "model.json").write_text(json.dumps(card))
    environment = {
        **os.environ,
        "CNN_SERVE_PORT": str(free_port()),
        "CNN_SERVE_HOST": "127.0.0.1",
        "CNN_SERVE_WORKERS": "2",
        "CNN_SERVE_MODELS_DIR": str(tmp_path),
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "failed at start-up" in result.stderr
    assert time.monotonic() - started < 60


def test_metrics_files_of_dead_workers_are_cleaned_and_removed_at_exit() -> None:
    with running_service(workers=2) as service:
        supervisor = service.process.pid
        environ = Path(f"/proc/{workers_of(supervisor, 2)[0]}/environ").read_bytes()
        variables = dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)
        metrics_dir = Path(variables[b"PROMETHEUS_MULTIPROC_DIR"].decode())
        for _ in range(10):
            httpx.post(f"{service.url}/predict", json=DIGIT)
        victim = workers_of(supervisor, 2)[0]
        assert any(str(victim) in path.name for path in metrics_dir.iterdir())
        os.kill(victim, signal.SIGKILL)
        wait_for_replacement(supervisor, victim, 2)
        live_gauges = [p.name for p in metrics_dir.iterdir() if p.name.startswith("gauge_live")]
        assert not any(str(victim) in name for name in live_gauges)
        text = httpx.get(f"{service.url}/metrics").text
        assert "cnn_serve_requests_total" in text
    assert not metrics_dir.exists()


def established_connections_by_worker(supervisor: int, port: int) -> dict[int, int]:
    """Worker pid -> its established server-side connections on ``port`` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    counts = {}
    for worker in workers_of(supervisor, 2):
        sockets = []
        for link in Path(f"/proc/{worker}/fd").iterdir():
            try:
                sockets.append(os.readlink(link))
            except OSError:
                continue
        counts[worker] = sum(f"socket:[{inode}]" in sockets for inode in inodes)
    return counts


def test_a_few_keep_alive_connections_end_up_even_across_workers() -> None:
    """4 long-lived connections to 2 workers: hashing alone splits them 3-1 or 4-0 five times
    out of eight; workers over their share close one and the clients' reconnects even it out."""
    with running_service(workers=2) as service:
        for _ in range(5):
            clients = [httpx.Client() for _ in range(4)]
            for _ in range(20):
                for client in clients:
                    assert client.post(f"{service.url}/predict", json=DIGIT).status_code == 200
            counts = established_connections_by_worker(service.process.pid, service.port)
            assert sorted(counts.values()) == [2, 2], counts
            for client in clients:
                client.close()
            time.sleep(0.2)
