"""Triton Inference Server (through NVIDIA's PyTriton) serving the same model.onnx, for
``bench/grpc_load.py``: Triton's own C++ HTTP and gRPC front ends and dynamic batcher, with the
model run by ONNX Runtime in PyTriton's Python backend (the only backend PyTriton offers).

Two model instances (one per CPU here), each with one ONNX Runtime thread and spinning off, as
cnn-serve runs its two workers; UINT8 28x28x1 in (as the benchmark sends), probabilities out.

Run from its own environment (``bench/.venvs/pytriton``: nvidia-pytriton 0.7, numpy<2):
``python bench/peers/pytriton_server.py MODEL.onnx HTTP_PORT GRPC_PORT METRICS_PORT``.
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

INSTANCES = 2
MAX_BATCH = 256
QUEUE_DELAY_US = 2000  # cnn-serve's default CNN_SERVE_BATCH_MAX_DELAY_MS is 2.


def session(model: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def infer_function(model: str):  # type: ignore[no-untyped-def]
    runtime = session(model)

    @batch
    def infer(input: np.ndarray) -> dict[str, np.ndarray]:  # noqa: A002 (the tensor's name)
        images = input.astype(np.float32) / np.float32(255.0)
        (probabilities,) = runtime.run(["probabilities"], {"input": images})
        return {"probabilities": probabilities}

    return infer


def main(model: str, http_port: int, grpc_port: int, metrics_port: int) -> None:
    config = TritonConfig(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    with Triton(config=config) as triton:
        triton.bind(
            model_name="mnist-deep-cnn",
            infer_func=[infer_function(model) for _ in range(INSTANCES)],
            inputs=[Tensor(name="input", dtype=np.uint8, shape=(28, 28, 1))],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(10,))],
            config=ModelConfig(
                max_batch_size=MAX_BATCH,
                batcher=DynamicBatcher(max_queue_delay_microseconds=QUEUE_DELAY_US),
            ),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
