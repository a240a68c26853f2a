"""The V2 gRPC service in the real process: every worker serves it, a stopped worker's calls
move on, and SIGTERM ends it cleanly."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import grpc
import httpx
import numpy as np

from service.grpc_api import inference_pb2 as pb
from service.grpc_api.messages import Stub
from tests.servers import free_port, running_service

MODEL = "mnist-deep-cnn"


def infer_request(mnist_digits: tuple[np.ndarray, np.ndarray], count: int) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="input", datatype="UINT8", shape=[count, 28, 28, 1]
            )
        ],
        raw_input_contents=[mnist_digits[0][:count].tobytes()],
    )


def fresh_stub(address: str) -> tuple[grpc.Channel, Stub]:
    """A stub on a connection of its own (no subchannel shared with other channels)."""
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    return channel, Stub(channel)


def test_every_worker_serves_grpc_and_sigterm_ends_it_cleanly(
    tmp_path: Path, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    port = free_port()
    log = tmp_path / "service.log"
    request = infer_request(mnist_digits, 4)
    with running_service(output=log, workers=2, grpc_port=port, log_level="info") as service:
        for _ in range(24):  # New connections: the kernel spreads them over both workers.
            channel, stub = fresh_stub(f"127.0.0.1:{port}")
            answer = stub.ModelInfer(request, timeout=20)  # type: ignore[attr-defined]
            values = np.frombuffer(answer.raw_output_contents[0], dtype="<f4").reshape(4, 10)
            assert list(values.argmax(axis=1)) == list(mnist_digits[1][:4])
            channel.close()
        metrics = httpx.get(f"{service.url}/metrics").text
        served = re.search(
            r'cnn_serve_grpc_requests_total\{code="OK",method="ModelInfer"\} ([\d.]+)', metrics
        )
        assert served is not None and float(served.group(1)) == 24  # Summed over the workers.
        service.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert service.process.wait(timeout=20) == 0
        assert time.monotonic() - started < 15
    text = log.read_text()
    assert text.count("serving the V2 protocol over gRPC") == 2  # One per worker.
    assert "Traceback" not in text


def test_a_stopped_worker_does_not_take_grpc_calls_down_with_it(
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    port = free_port()
    request = infer_request(mnist_digits, 1)
    with running_service(workers=2, grpc_port=port, worker_stall_timeout_s=2) as service:
        workers = [
            int(pid)
            for pid in Path(f"/proc/{service.process.pid}/task/{service.process.pid}/children")
            .read_text()
            .split()
        ]
        os.kill(workers[0], signal.SIGSTOP)  # Replaced by the supervisor after 2 s of silence.
        try:
            answered = 0
            deadline = time.monotonic() + 30
            while answered < 8 and time.monotonic() < deadline:
                channel, stub = fresh_stub(f"127.0.0.1:{port}")
                try:
                    stub.ModelInfer(request, timeout=5)  # type: ignore[attr-defined]
                    answered += 1
                except grpc.RpcError as error:  # A call that hashed to the stopped worker.
                    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                finally:
                    channel.close()
            assert answered == 8
        finally:
            try:
                os.kill(workers[0], signal.SIGCONT)
            except ProcessLookupError:
                pass  # Already replaced.
