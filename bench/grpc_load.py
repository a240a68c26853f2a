"""The V2 protocol over gRPC beside HTTP, and beside Triton's own gRPC front end, in one run.

One cnn-serve (2 workers, gRPC on) and, when its environment exists, one Triton Inference
Server through PyTriton (``bench/peers/pytriton_server.py``: Triton's C++ HTTP/gRPC front ends
and dynamic batcher, the same model.onnx in ONNX Runtime, 2 instances) take turns, for
``--rounds`` rounds, under the same loads:

- ``single``: one UINT8 28x28 image per request, 8 in flight;
- ``batch256``: 256 images per request, 4 in flight (2 per worker).

gRPC load comes from this process: asyncio tasks, each with its own channel (its own HTTP/2
connection, so that connections spread over the workers as HTTP's do), sending one ModelInfer
request serialised once. HTTP load comes from ``wrk`` (the same bodies as
``bench/run_benchmarks.py``: ``binary`` on /predict and ``v2-binary`` on V2). The two load
generators cost different CPU on the same 2 cores, so each row says what its client used;
cnn-serve's gRPC against Triton's gRPC is the like-for-like comparison (same client, same
bytes). Each figure is the median over the rounds, and each ratio the median of the rounds'
ratios.

Usage: ``python bench/grpc_load.py [--rounds 3] [--duration 5]`` (Triton is skipped without
``bench/.venvs/pytriton``; make it with ``python -m venv bench/.venvs/pytriton`` and
``bench/.venvs/pytriton/bin/pip install "nvidia-pytriton==0.7.*" "numpy<2" onnxruntime``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import statistics
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as triton_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run_benchmarks import (  # noqa: E402
    MODEL,
    VENVS,
    Body,
    digits,
    request_bodies,
    run_wrk,
)
from service.grpc_api import inference_pb2 as pb  # noqa: E402
from service.grpc_api.messages import SERVICE  # noqa: E402
from tests.servers import free_port, running_process, running_service  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PYTRITON = VENVS / "pytriton"
# Where this Python's libpython lives (the venvs share its base interpreter).
PYTHON_LIBRARIES = str(sysconfig.get_config_var("LIBDIR"))
LOADS = {"single": (1, 8), "batch256": (256, 4)}  # images a request, requests in flight
HTTP_BODIES = {
    "single": ("binary", "v2-binary"),
    "batch256": ("binary-batch256", "v2-binary-batch256"),
}
HTTP_PATHS = {"binary": "/predict", "v2-binary": "/v2/models/mnist-deep-cnn/infer"}


@dataclass(frozen=True)
class Run:
    """One load run: requests/s, images/s, latency percentiles and the client's CPU."""

    target: str
    load: str
    requests_per_s: float
    images_per_s: float
    p50_ms: float
    p99_ms: float
    failures: int
    client_cpu_s: float


def infer_request(images: np.ndarray) -> bytes:
    """A serialised ModelInferRequest: UINT8 images (N, 28, 28) as one raw input."""
    request = pb.ModelInferRequest(
        model_name="mnist-deep-cnn",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="input", datatype="UINT8", shape=[len(images), 28, 28, 1]
            )
        ],
        raw_input_contents=[images.astype(np.uint8).tobytes()],
    )
    return bytes(request.SerializeToString())


async def _grpc_load(
    address: str, payload: bytes, in_flight: int, seconds: float
) -> tuple[list[float], int]:
    """(latencies in seconds, failures) of ``in_flight`` clients calling until time is up."""
    latencies: list[float] = []
    failures = 0
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal failures
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1)]
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            call = channel.unary_unary(f"/{SERVICE}/ModelInfer")
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    await call(payload, timeout=30)
                except grpc.aio.AioRpcError:
                    failures += 1
                    continue
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(client() for _ in range(in_flight)))
    return latencies, failures


def grpc_run(target: str, load: str, address: str, payload: bytes, seconds: float) -> Run:
    images, in_flight = LOADS[load]
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    latencies, failures = asyncio.run(_grpc_load(address, payload, in_flight, seconds))
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    rate = len(latencies) / elapsed
    ordered = np.sort(np.asarray(latencies)) * 1000
    run = Run(
        target,
        load,
        rate,
        rate * images,
        float(np.percentile(ordered, 50)),
        float(np.percentile(ordered, 99)),
        failures,
        cpu,
    )
    print(describe(run), flush=True)
    return run


def http_run(url: str, body_name: str, load: str, bodies: dict[str, Body], seconds: float) -> Run:
    _, in_flight = LOADS[load]
    path = HTTP_PATHS[body_name.removesuffix("-batch256")]
    result = run_wrk(url + path, bodies[body_name], body_name, in_flight, seconds)
    return Run(
        f"cnn-serve HTTP {body_name.removesuffix('-batch256')}",
        load,
        result.requests_per_s,
        result.images_per_s,
        result.p50_ms,
        result.p99_ms,
        result.non_2xx + result.socket_errors,
        result.wrk_cpu_s,
    )


def describe(run: Run) -> str:
    return (
        f"{run.target:28s} {run.load:9s} {run.requests_per_s:8.0f} req/s "
        f"{run.images_per_s:8.0f} img/s p50 {run.p50_ms:6.2f} ms p99 {run.p99_ms:6.2f} ms "
        f"failures {run.failures} client cpu {run.client_cpu_s:.1f}s"
    )


@contextlib.contextmanager
def triton_server() -> Iterator[str | None]:
    """Triton through PyTriton on free ports: its gRPC address, or None without its venv."""
    python = PYTRITON / "bin" / "python"
    if not python.exists():
        print(f"no {PYTRITON}: Triton is skipped (see this script's docstring)")
        yield None
        return
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    # PyTriton's Python-backend stub loads libpython: the one the venv's Python links to must
    # come first on the library path, or the stub dies at load.
    library_path = ":".join(filter(None, [PYTHON_LIBRARIES, os.environ.get("LD_LIBRARY_PATH")]))
    environment = {"LD_LIBRARY_PATH": library_path, "PYTHONUNBUFFERED": "1"}
    command = [
        str(python),
        str(ROOT / "bench" / "peers" / "pytriton_server.py"),
        str(MODEL),
        str(http),
        str(grpc_port),
        str(metrics),
    ]
    ready = f"http://127.0.0.1:{http}/v2/models/mnist-deep-cnn/ready"
    with running_process(command, ready, environment, 180, None):
        yield f"127.0.0.1:{grpc_port}"


def check_answers(address: str, images: np.ndarray) -> None:
    """Both servers classify the same digits the same way (so the race is a fair one)."""
    client = triton_grpc.InferenceServerClient(address)
    tensor = triton_grpc.InferInput("input", [len(images), 28, 28, 1], "UINT8")
    tensor.set_data_from_numpy(images[..., np.newaxis].astype(np.uint8))
    probabilities = client.infer("mnist-deep-cnn", [tensor]).as_numpy("probabilities")
    client.close()
    assert probabilities.shape == (len(images), 10)
    print(f"{address}: classes {probabilities.argmax(axis=1).tolist()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    images = digits()
    payloads = {
        "single": infer_request(images[:1]),
        "batch256": infer_request(np.resize(images, (256, 28, 28))),
    }
    grpc_port = free_port()
    runs: list[Run] = []
    with (
        tempfile.TemporaryDirectory() as directory,
        running_service(workers=2, grpc_port=grpc_port) as service,
        triton_server() as triton_address,
    ):
        bodies = request_bodies(Path(directory))
        ours = f"127.0.0.1:{grpc_port}"
        for address in (ours, triton_address):
            if address is not None:
                check_answers(address, images[:8])
        for round_index in range(args.rounds):
            print(f"== round {round_index + 1} of {args.rounds}")
            for load in LOADS:
                runs.append(grpc_run("cnn-serve gRPC", load, ours, payloads[load], args.duration))
                for body_name in HTTP_BODIES[load]:
                    runs.append(http_run(service.url, body_name, load, bodies, args.duration))
                if triton_address is not None:
                    runs.append(
                        grpc_run(
                            "Triton gRPC (PyTriton)",
                            load,
                            triton_address,
                            payloads[load],
                            args.duration,
                        )
                    )
    print_table(runs)


def print_table(runs: list[Run]) -> None:
    """The Markdown table of docs/benchmarks.md: medians, and ratios to cnn-serve's gRPC."""
    print()
    print(
        "| load | target | req/s | img/s | p50 ms | p99 ms | failures | client CPU s a run "
        "| vs cnn-serve gRPC |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for load in LOADS:
        ours = [run for run in runs if run.load == load and run.target == "cnn-serve gRPC"]
        for target in dict.fromkeys(run.target for run in runs if run.load == load):
            mine = [run for run in runs if run.load == load and run.target == target]
            ratio = statistics.median(
                theirs.requests_per_s / base.requests_per_s
                for theirs, base in zip(mine, ours, strict=True)
            )
            print(
                f"| {load} | {target} | {statistics.median(r.requests_per_s for r in mine):,.0f} "
                f"| {statistics.median(r.images_per_s for r in mine):,.0f} "
                f"| {statistics.median(r.p50_ms for r in mine):.2f} "
                f"| {statistics.median(r.p99_ms for r in mine):.2f} "
                f"| {sum(r.failures for r in mine)} "
                f"| {statistics.median(r.client_cpu_s for r in mine):.1f} | {ratio:.2f}x |"
            )


if __name__ == "__main__":
    main()
