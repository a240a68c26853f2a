"""The BentoML peer: the same model.onnx behind BentoML's adaptive batching.

Started by ``bench/run_benchmarks.py`` from its own virtual environment with
``bentoml serve bench.peers.bentoml_service:MnistOnnx``. The request body is the one /predict
takes: ``{"instances": [<28x28 numbers>, ...]}``; the answer is the probabilities.
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
import numpy as np
import onnxruntime as ort

MODEL = Path(__file__).resolve().parents[2] / "models" / "mnist-deep-cnn" / "model.onnx"
WORKERS = int(os.environ.get("PEER_WORKERS", "2"))


def _session() -> ort.InferenceSession:
    """One ONNX Runtime thread per worker, no spinning: the layout cnn-serve uses."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])


@bentoml.service(workers=WORKERS, traffic={"timeout": 30})
class MnistOnnx:
    def __init__(self) -> None:
        self.session = _session()

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=64, max_latency_ms=1000)
    def predict(self, instances: np.ndarray) -> np.ndarray:
        images = np.asarray(instances, dtype=np.float32).reshape(-1, 28, 28, 1)
        (probabilities,) = self.session.run(["probabilities"], {"input": images})
        return probabilities
