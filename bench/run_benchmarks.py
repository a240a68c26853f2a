"""The whole throughput comparison in one run, on this machine.

1. The limit: ONNX Runtime in-process, images/s at batch 1, 32 and 256.
2. The service (``python -m service``): single-image ``/predict`` req/s and p50/p99 latency at
   concurrency 1, 8, 32, 64 for JSON, base64 PNG and binary bodies; batch-256 images/s for JSON
   and binary bodies. Load comes from ``wrk`` (Debian) with one thread; its CPU time is recorded.
3. The naive baseline: FastAPI calling Keras ``model.predict`` per request, concurrency 8.

Usage: ``python bench/run_benchmarks.py [--duration 5] [--workers 1 2]``; writes
``bench/results/latest.json``, ``docs/benchmarks.md`` and ``docs/benchmarks.png``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import write_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "mnist-deep-cnn" / "model.onnx"
INT8_MODEL = ROOT / "models" / "mnist-deep-cnn-int8" / "model.onnx"
FIXTURE = ROOT / "tests" / "fixtures" / "mnist_test_500.npz"
LUA = ROOT / "bench" / "lua" / "post_file.lua"
RESULTS = ROOT / "bench" / "results" / "latest.json"
CONCURRENCIES = (1, 8, 32, 64)
BATCH_CONCURRENCIES = (2, 4, 8)


@dataclass
class LoadResult:
    """One wrk run."""

    name: str
    concurrency: int
    requests_per_s: float
    images_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    wrk_cpu_s: float
    seconds: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


def json_decode_ms(body: bytes, repeats: int = 20) -> float:
    """Milliseconds to turn a JSON batch body into a float32 array (orjson + NumPy), no model."""
    import orjson

    started = time.perf_counter()
    for _ in range(repeats):
        np.asarray(orjson.loads(body)["instances"], dtype=np.float32)
    return (time.perf_counter() - started) / repeats * 1000


def request_bodies(directory: Path) -> dict[str, tuple[Path, str, str, int]]:
    """name -> (body file, content type, extra headers, images per request)."""
    images = digits()
    png = io.BytesIO()
    Image.fromarray(images[0]).save(png, format="PNG")
    batch = np.resize(images, (256, 28, 28))
    bodies: dict[str, tuple[bytes, str, str, int]] = {
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
        "binary": (
            images[0].tobytes(),
            "application/octet-stream",
            "X-Dtype: uint8|X-Shape: 1,28,28",
            1,
        ),
        "json-batch256": (
            json.dumps({"instances": (batch / 255.0).round(4).tolist()}).encode(),
            "application/json",
            "",
            256,
        ),
        "binary-batch256": (
            batch.tobytes(),
            "application/octet-stream",
            "X-Dtype: uint8|X-Shape: 256,28,28",
            256,
        ),
    }
    written = {}
    for name, (body, content_type, headers, count) in bodies.items():
        path = directory / f"{name}.body"
        path.write_bytes(body)
        written[name] = (path, content_type, headers, count)
    return written


def parse_duration_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    url: str, body: tuple[Path, str, str, int], name: str, concurrency: int, seconds: float
) -> LoadResult:
    path, content_type, headers, images_per_request = body
    environment = {
        **os.environ,
        "BODY_FILE": str(path),
        "CONTENT_TYPE": content_type,
        "EXTRA_HEADERS": headers,
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds:g}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
        ],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests_per_s = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return LoadResult(
        name=name,
        concurrency=concurrency,
        requests_per_s=requests_per_s,
        images_per_s=requests_per_s * images_per_request,
        p50_ms=parse_duration_ms(percentiles["50"]),
        p99_ms=parse_duration_ms(percentiles["99"]),
        non_2xx=int(re.search(r"NON2XX (\d+)", output).group(1)),  # type: ignore[union-attr]
        socket_errors=sum(int(count) for count in errors.groups()) if errors else 0,
        wrk_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        seconds=seconds,
    )


@contextmanager
def running(command: list[str], environment: dict[str, str], ready_url: str) -> Iterator[None]:
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **environment},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not become ready")
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        process.wait(timeout=60)


def bench_service(
    workers: int, bodies: dict[str, tuple[Path, str, str, int]], seconds: float
) -> list[LoadResult]:
    port = free_port()
    environment = {
        "CNN_SERVE_PORT": str(port),
        "CNN_SERVE_HOST": "127.0.0.1",
        "CNN_SERVE_WORKERS": str(workers),
        "CNN_SERVE_LOG_LEVEL": "warning",
    }
    url = f"http://127.0.0.1:{port}"
    results = []
    with running([sys.executable, "-m", "service"], environment, f"{url}/health/ready"):
        for name in ("json", "base64-png", "binary"):
            run_wrk(f"{url}/predict", bodies[name], name, 8, 1)  # Warm-up.
            for concurrency in CONCURRENCIES:
                results.append(run_wrk(f"{url}/predict", bodies[name], name, concurrency, seconds))
                print(format_result(results[-1]), flush=True)
        for name in ("json-batch256", "binary-batch256"):
            run_wrk(f"{url}/predict", bodies[name], name, 4, 1)  # Warm-up.
            for concurrency in BATCH_CONCURRENCIES:
                results.append(run_wrk(f"{url}/predict", bodies[name], name, concurrency, seconds))
                print(format_result(results[-1]), flush=True)
    return results


def bench_naive(bodies: dict[str, tuple[Path, str, str, int]], seconds: float) -> LoadResult:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.naive_keras_server:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    probe = httpx.post  # The naive server has no health route: wait for a real answer.
    process_ready = f"{url}/docs"
    with running(command, {"TF_CPP_MIN_LOG_LEVEL": "3"}, process_ready):
        probe(
            f"{url}/predict",
            content=bodies["json"][0].read_bytes(),
            headers={"content-type": "application/json"},
            timeout=60,
        )
        result = run_wrk(f"{url}/predict", bodies["json"], "naive-keras-json", 8, seconds)
    print(format_result(result), flush=True)
    return result


def format_result(result: LoadResult) -> str:
    return (
        f"{result.name:16s} c={result.concurrency:<3d} {result.requests_per_s:9.0f} req/s "
        f"{result.images_per_s:9.0f} img/s p50 {result.p50_ms:6.2f} ms p99 "
        f"{result.p99_ms:6.2f} ms non-2xx {result.non_2xx} wrk cpu {result.wrk_cpu_s:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {cpus} CPUs",
        "onnxruntime": ort.__version__,
        "command": "python bench/run_benchmarks.py " + " ".join(sys.argv[1:]),
    }
    print("== in-process ONNX Runtime (the limit)", flush=True)
    layouts = {f"1 session x {threads} thread(s)": (1, threads) for threads in sorted({1, cpus})}
    layouts[f"{cpus} sessions x 1 thread, in parallel"] = (cpus, 1)
    for key, model in (("in_process", MODEL), ("in_process_int8", INT8_MODEL)):
        report[key] = {
            name: in_process_limit(threads, 3.0, model, sessions)
            for name, (sessions, threads) in layouts.items()
        }
    print(json.dumps({"fp32": report["in_process"], "int8": report["in_process_int8"]}), flush=True)
    with tempfile.TemporaryDirectory() as directory:
        bodies = request_bodies(Path(directory))
        report["json_batch256_decode_ms"] = json_decode_ms(bodies["json-batch256"][0].read_bytes())
        report["json_batch256_bytes"] = bodies["json-batch256"][0].stat().st_size
        report["service"] = {}
        for workers in args.workers:
            print(f"== service, {workers} worker(s)", flush=True)
            report["service"][str(workers)] = [
                asdict(result) for result in bench_service(workers, bodies, args.duration)
            ]
        print("== naive baseline: FastAPI + Keras model.predict", flush=True)
        report["naive"] = asdict(bench_naive(bodies, args.duration))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))

    write_report(report)


if __name__ == "__main__":
    main()
