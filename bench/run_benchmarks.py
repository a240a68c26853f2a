"""Every throughput figure of the project, in one run on this machine.

1. The limit: ONNX Runtime in-process, images/s at batch 1, 32 and 256 (fp32 and int8), with
   1, 2 and 4 sessions in parallel (the layouts of 1, 2 and 4 workers).
2. The service (2 workers): single images as JSON, base64 PNG, raw binary, V2 JSON and V2 binary,
   at concurrency 8 and 32.
3. Batches of 256: the raw binary body and the V2 binary body, 2 connections per worker, with 1,
   2 and 4 workers, each against the in-process limit of the same layout.
4. Peers serving the same model.onnx, started here from their own virtual environments
   (``bench/.venvs``, made from ``bench/peers/*-requirements.txt`` when missing): BentoML with
   adaptive batching, MLServer with a custom ONNX Runtime runtime and adaptive batching (V2).
   Same single-image JSON bodies, concurrency 8 and 32, taking turns with 2. in each round.
5. A retry storm: 1,024 connections that resend at once whatever the answer; goodput with the
   default overload handling, and with refusals answered at once (``OVERLOAD_PAUSE_MS=0``).
6. Capacity: start-to-ready time, memory per worker, throughput per core.
7. The naive baseline: FastAPI calling Keras ``model.predict`` per request (``--naive``).

Load comes from ``wrk`` (Debian) with one thread, on the same CPUs; its CPU time is recorded.

Usage: ``python bench/run_benchmarks.py [--duration 8] [--naive]``; writes
``bench/results/latest.json``, ``docs/benchmarks.md`` and ``docs/benchmarks.png``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import write_report  # noqa: E402
from tests.servers import free_port, running_process, running_service  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "mnist-deep-cnn" / "model.onnx"
INT8_MODEL = ROOT / "models" / "mnist-deep-cnn-int8" / "model.onnx"
FIXTURE = ROOT / "tests" / "fixtures" / "mnist_test_500.npz"
LUA = ROOT / "bench" / "lua" / "post_file.lua"
RESULTS = ROOT / "bench" / "results" / "latest.json"
VENVS = ROOT / "bench" / ".venvs"
PEERS = ROOT / "bench" / "peers"
SINGLE_CONCURRENCIES = (8, 32)
BATCH_WORKERS = (1, 2, 4)
STORM_CONNECTIONS = 1024


@dataclass
class LoadResult:
    """One wrk run."""

    name: str
    concurrency: int
    requests_per_s: float
    images_per_s: float
    ok_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    wrk_cpu_s: float
    seconds: float
    # CPU seconds each of the server's processes used during the run, busiest first.
    server_cpu_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Body:
    """A request body in a file, with its headers and the images it carries."""

    path: Path
    content_type: str
    headers: str  # "Name: value|Name: value"
    images: int


def digits() -> np.ndarray:
    with np.load(FIXTURE) as archive:
        return np.asarray(archive["images"])


def _session(model: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def _images_per_s(session: ort.InferenceSession, batch: np.ndarray, seconds: float) -> float:
    session.run(["probabilities"], {"input": batch})
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(["probabilities"], {"input": batch})
        done += batch.shape[0]
    return done / (time.perf_counter() - started)


def in_process_limit(
    threads: int, seconds: float, model: Path = MODEL, sessions: int = 1
) -> dict[str, float]:
    """Images/s of bare ONNX Runtime at batch 1, 32 and 256.

    ``sessions`` > 1 runs that many sessions at once from Python threads (ONNX Runtime releases
    the GIL), the in-process equivalent of the service's worker processes.
    """
    images = (digits().astype(np.float32) / 255.0)[..., np.newaxis]
    runners = [_session(model, threads) for _ in range(sessions)]
    results = {}
    for batch_size in (1, 32, 256):
        batch = np.resize(images, (batch_size, 28, 28, 1))
        with ThreadPoolExecutor(sessions) as pool:
            rates = pool.map(_images_per_s, runners, [batch] * sessions, [seconds] * sessions)
            results[str(batch_size)] = sum(rates)
    return results


def v2_binary(images: np.ndarray) -> tuple[bytes, int]:
    """A V2 request with UINT8 images as a binary tensor, binary output: (body, header size)."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [images.shape[0], 28, 28, 1],
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": images.size},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + images.tobytes(), len(header)


def v2_json(images: np.ndarray) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [images.shape[0], 28, 28, 1],
                    "datatype": "FP32",
                    "data": (images / 255.0).round(4).ravel().tolist(),
                }
            ]
        }
    ).encode()


def request_bodies(directory: Path) -> dict[str, Body]:
    """Every body the runs post, written to files for wrk."""
    images = digits()
    png = io.BytesIO()
    Image.fromarray(images[0]).save(png, format="PNG")
    batch = np.resize(images, (256, 28, 28))
    single_v2, single_header = v2_binary(images[:1])
    batch_v2, batch_header = v2_binary(batch)
    raw: dict[str, tuple[bytes, str, str, int]] = {
        "json": (
            json.dumps({"instances": [(images[0] / 255.0).round(4).tolist()]}).encode(),
            "application/json",
            "",
            1,
        ),
        "base64-png": (
            json.dumps({"images": [base64.b64encode(png.getvalue()).decode()]}).encode(),
            "application/json",
            "",
            1,
        ),
        "binary": (images[0].tobytes(), "application/octet-stream", "X-Shape: 1,28,28", 1),
        "v2-json": (v2_json(images[:1]), "application/json", "", 1),
        "v2-binary": (
            single_v2,
            "application/octet-stream",
            f"Inference-Header-Content-Length: {single_header}",
            1,
        ),
        "binary-batch256": (
            batch.tobytes(),
            "application/octet-stream",
            "X-Shape: 256,28,28",
            256,
        ),
        "v2-binary-batch256": (
            batch_v2,
            "application/octet-stream",
            f"Inference-Header-Content-Length: {batch_header}",
            256,
        ),
    }
    bodies = {}
    for name, (content, content_type, headers, count) in raw.items():
        path = directory / f"{name}.body"
        path.write_bytes(content)
        bodies[name] = Body(path, content_type, headers, count)
    return bodies


def parse_duration_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, body: Body, name: str, concurrency: int, seconds: float) -> LoadResult:
    environment = {
        **os.environ,
        "BODY_FILE": str(body.path),
        "CONTENT_TYPE": body.content_type,
        "EXTRA_HEADERS": body.headers,
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
        + ["-s", str(LUA), url],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests_per_s = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    elapsed = parse_duration_ms(re.search(r"requests in ([\d.]+\w+),", output).group(1)) / 1000  # type: ignore[union-attr]
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = int(re.search(r"NON2XX (\d+)", output).group(1))  # type: ignore[union-attr]
    result = LoadResult(
        name=name,
        concurrency=concurrency,
        requests_per_s=requests_per_s,
        images_per_s=requests_per_s * body.images,
        ok_per_s=(total - non_2xx) / elapsed,
        p50_ms=parse_duration_ms(percentiles["50"]),
        p99_ms=parse_duration_ms(percentiles["99"]),
        non_2xx=non_2xx,
        socket_errors=sum(int(count) for count in errors.groups()) if errors else 0,
        wrk_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        seconds=seconds,
    )
    print(format_result(result), flush=True)
    return result


def format_result(result: LoadResult) -> str:
    return (
        f"{result.name:22s} c={result.concurrency:<5d} {result.requests_per_s:8.0f} req/s "
        f"{result.images_per_s:8.0f} img/s ok {result.ok_per_s:8.0f}/s p50 {result.p50_ms:7.2f} "
        f"ms p99 {result.p99_ms:7.2f} ms non-2xx {result.non_2xx} wrk cpu {result.wrk_cpu_s:.1f}s"
    )


SINGLE_PATHS = {
    "json": "/predict",
    "base64-png": "/predict",
    "binary": "/predict",
    "v2-json": "/v2/models/mnist-deep-cnn/infer",
    "v2-binary": "/v2/models/mnist-deep-cnn/infer",
}


ROUNDS = 3


@dataclass(frozen=True)
class Target:
    """A server under load: a name for the tables, where to post, what, and its processes."""

    name: str
    url: str
    body: str
    pid: int


def process_table() -> dict[int, tuple[int, float]]:
    """Every live process: its parent's pid and the CPU seconds it has used so far."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        table[int(entry.name)] = (int(fields[1]), cpu_s)
    return table


def tree_cpu_s(table: dict[int, tuple[int, float]], pid: int) -> dict[int, float]:
    """CPU seconds used so far by a process and by each live descendant of it, by pid."""
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, (of, _) in table.items() if of == parent]
        tree.update(children)
        frontier += children
    return {member: table[member][1] for member in tree if member in table}


def _cpu_used(before: dict[int, float], after: dict[int, float]) -> list[float]:
    """CPU seconds each process used between two ``tree_cpu_s`` readings, busiest first."""
    return sorted((after[pid] - before.get(pid, 0.0) for pid in after), reverse=True)


def servers_cpu_s(pids: set[int]) -> dict[int, dict[int, float]]:
    """``tree_cpu_s`` of each server, from one reading of /proc."""
    table = process_table()
    return {pid: tree_cpu_s(table, pid) for pid in pids}


def bench_single(
    bodies: dict[str, Body], seconds: float, peers: bool
) -> tuple[list[LoadResult], list[Any], dict[str, float]]:
    """Single images in every form, 2 workers (one per CPU here), and the peers beside them.

    Every server runs from the start; the forms and the peers take turns, ``ROUNDS`` times over.
    On a shared, noisy machine a ratio between two servers or two forms means something only
    if they were measured under the same conditions, so ratios are taken within each round.
    The servers not under load sit idle; the CPU they use meanwhile is recorded.

    Returns each (server and form, concurrency)'s median run, every round's runs, and the
    idle servers' CPU seconds during the runs (total, and the largest in one run).
    """
    runs: dict[tuple[str, int], list[LoadResult]] = {}
    idle_cpu = {"total_s": 0.0, "max_in_one_run_s": 0.0}
    with contextlib.ExitStack() as stack:
        service = stack.enter_context(running_service(workers=2))
        targets = [
            Target(name, f"{service.url}{path}", name, service.process.pid)
            for name, path in SINGLE_PATHS.items()
        ]
        if peers:
            targets += [stack.enter_context(peer()) for peer in (bentoml_server, mlserver_server)]
        for target in targets:
            run_wrk(target.url, bodies[target.body], target.name, 8, 1)  # Warm-up.
        pids = {target.pid for target in targets}
        for _ in range(ROUNDS):
            for concurrency in SINGLE_CONCURRENCIES:
                for target in targets:
                    before = servers_cpu_s(pids)
                    result = run_wrk(
                        target.url, bodies[target.body], target.name, concurrency, seconds / ROUNDS
                    )
                    after = servers_cpu_s(pids)
                    used = {pid: _cpu_used(before[pid], after[pid]) for pid in pids}
                    result.server_cpu_s = used[target.pid]
                    idle = sum(sum(used[pid]) for pid in pids - {target.pid})
                    idle_cpu["total_s"] += idle
                    idle_cpu["max_in_one_run_s"] = max(idle_cpu["max_in_one_run_s"], idle)
                    runs.setdefault((target.name, concurrency), []).append(result)
    medians = [
        sorted(results, key=lambda result: result.requests_per_s)[len(results) // 2]
        for results in runs.values()
    ]
    rounds = [[asdict(results[index]) for results in runs.values()] for index in range(ROUNDS)]
    return medians, rounds, idle_cpu


def bench_batches(bodies: dict[str, Body], seconds: float) -> dict[str, list[LoadResult]]:
    """Batches of 256 at 2 connections per worker, with 1, 2 and 4 workers."""
    results: dict[str, list[LoadResult]] = {}
    for workers in BATCH_WORKERS:
        runs = []
        with running_service(workers=workers) as service:
            for name, path in (
                ("binary-batch256", "/predict"),
                ("v2-binary-batch256", "/v2/models/mnist-deep-cnn/infer"),
            ):
                url = f"{service.url}{path}"
                run_wrk(url, bodies[name], name, 2 * workers, 1)  # Warm-up.
                runs.append(run_wrk(url, bodies[name], name, 2 * workers, seconds))
        results[str(workers)] = runs
    return results


def peer_python(peer: str) -> Path:
    """The peer's virtual environment's Python, made from its requirements file if missing."""
    python = VENVS / peer / "bin" / "python"
    if not python.exists():
        print(f"== making {VENVS / peer} (one time)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENVS / peer)], check=True)
        requirements = PEERS / f"{peer}-requirements.txt"
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True
        )
    return python


@contextlib.contextmanager
def bentoml_server() -> Iterator[Target]:
    """BentoML serving model.onnx (bench/peers/bentoml_service.py), 2 workers."""
    python = peer_python("bentoml")
    port = free_port()
    command = [str(python), "-m", "bentoml", "serve", "bench.peers.bentoml_service:MnistOnnx"]
    command += ["--port", str(port), "--host", "127.0.0.1"]
    environment = {"BENTOML_DO_NOT_TRACK": "True", "PEER_WORKERS": "2"}
    url = f"http://127.0.0.1:{port}"
    with running_process(command, f"{url}/readyz", environment, timeout_s=180) as process:
        yield Target("bentoml-json", f"{url}/predict", "json", process.pid)


@contextlib.contextmanager
def mlserver_server() -> Iterator[Target]:
    """MLServer serving model.onnx (bench/peers/mlserver/), 2 parallel workers, V2."""
    python = peer_python("mlserver")
    port, grpc_port = free_port(), free_port()
    mlserver = python.parent / "mlserver"
    environment = {
        "MLSERVER_HTTP_PORT": str(port),
        "MLSERVER_GRPC_PORT": str(grpc_port),
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_METRICS_PORT": str(free_port()),
    }
    url = f"http://127.0.0.1:{port}/v2/models/mnist-deep-cnn"
    with running_process(
        [str(mlserver), "start", str(PEERS / "mlserver")],
        f"{url}/ready",
        environment,
        timeout_s=180,
        cwd=PEERS / "mlserver",
    ) as process:
        yield Target("mlserver-v2-json", f"{url}/infer", "v2-json", process.pid)


def bench_storm(bodies: dict[str, Body], seconds: float) -> dict[str, Any]:
    """Goodput when 1,024 connections resend at once, whatever the answer."""
    results: dict[str, Any] = {}
    for label, settings in (("default", {}), ("pause 0", {"overload_pause_ms": 0})):
        with running_service(workers=2, **settings) as service:
            url = f"{service.url}/predict"
            run_wrk(url, bodies["binary"], "binary", 32, 1)
            calm = run_wrk(url, bodies["binary"], "binary", 32, seconds)
            storm = run_wrk(url, bodies["binary"], f"storm ({label})", STORM_CONNECTIONS, seconds)
            results[label] = {"calm": asdict(calm), "storm": asdict(storm)}
    return results


def worker_rss_mib(supervisor: int) -> list[float]:
    """Resident memory of each worker process of a supervisor."""
    sizes = []
    for pid, (parent, _) in process_table().items():
        if parent != supervisor:
            continue
        try:
            if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text():
                status = Path(f"/proc/{pid}/status").read_text()
                sizes.append(int(status.split("VmRSS:")[1].split()[0]) / 1024)
        except OSError:
            continue
    return sizes


def bench_capacity(bodies: dict[str, Body]) -> dict[str, Any]:
    """Start-to-ready time and memory per worker after warm-up, for 1 and 2 workers."""
    capacity: dict[str, Any] = {}
    for workers in (1, 2):
        started = time.monotonic()
        with running_service(workers=workers, timeout_s=120) as service:
            ready_s = time.monotonic() - started
            run_wrk(f"{service.url}/predict", bodies["binary"], "binary", 32, 2)
            run_wrk(f"{service.url}/predict", bodies["binary-batch256"], "binary-batch256", 4, 2)
            rss = worker_rss_mib(service.process.pid) if workers > 1 else [
                int(Path(f"/proc/{service.process.pid}/status").read_text()
                    .split("VmRSS:")[1].split()[0]) / 1024
            ]  # fmt: skip
        capacity[str(workers)] = {"ready_s": ready_s, "worker_rss_mib": rss}
        print(f"capacity, {workers} worker(s): ready in {ready_s:.1f} s, RSS {rss}", flush=True)
    return capacity


def bench_naive(bodies: dict[str, Body], seconds: float) -> LoadResult:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "bench.naive_keras_server:app"]
    command += ["--port", str(port), "--log-level", "warning"]
    with running_process(command, f"{url}/docs", {"TF_CPP_MIN_LOG_LEVEL": "3"}):
        httpx.post(
            f"{url}/predict",
            content=bodies["json"].path.read_bytes(),
            headers={"content-type": "application/json"},
            timeout=60,
        )
        return run_wrk(f"{url}/predict", bodies["json"], "naive-keras-json", 8, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load run")
    parser.add_argument("--naive", action="store_true", help="also the FastAPI + Keras baseline")
    parser.add_argument("--skip-peers", action="store_true", help="no BentoML or MLServer")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {cpus} CPUs",
        "onnxruntime": ort.__version__,
        "command": "python bench/run_benchmarks.py " + " ".join(sys.argv[1:]),
        "duration_s": args.duration,
    }
    print("== in-process ONNX Runtime (the limit)", flush=True)
    layouts = {f"1 session x {threads} thread(s)": (1, threads) for threads in sorted({1, cpus})}
    layouts.update({f"{count} sessions x 1 thread": (count, 1) for count in (2, 4)})
    for key, model in (("in_process", MODEL), ("in_process_int8", INT8_MODEL)):
        report[key] = {
            name: in_process_limit(threads, 3.0, model, sessions)
            for name, (sessions, threads) in layouts.items()
        }
    print(json.dumps({"fp32": report["in_process"], "int8": report["in_process_int8"]}), flush=True)
    with tempfile.TemporaryDirectory() as directory:
        bodies = request_bodies(Path(directory))
        print("== single images: the service (2 workers) and its peers, in turns", flush=True)
        medians, rounds, idle_cpu = bench_single(bodies, args.duration, not args.skip_peers)
        report["single"] = [asdict(result) for result in medians]
        report["single_rounds"] = rounds
        report["idle_servers_cpu"] = idle_cpu
        print("== batches of 256, 2 connections per worker", flush=True)
        report["batches"] = {
            workers: [asdict(result) for result in runs]
            for workers, runs in bench_batches(bodies, args.duration).items()
        }
        print("== a retry storm", flush=True)
        report["storm"] = bench_storm(bodies, args.duration)
        print("== capacity", flush=True)
        report["capacity"] = bench_capacity(bodies)
        if args.naive:
            print("== naive baseline: FastAPI + Keras model.predict", flush=True)
            report["naive"] = asdict(bench_naive(bodies, args.duration))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    write_report(report)


if __name__ == "__main__":
    main()
