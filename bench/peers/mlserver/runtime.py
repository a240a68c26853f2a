"""The MLServer peer: the same model.onnx in a custom MLServer runtime (V2 protocol).

Started by ``bench/run_benchmarks.py`` from its own virtual environment with
``mlserver start bench/peers/mlserver``; adaptive batching is set in ``model-settings.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

MODEL = Path(__file__).resolve().parents[3] / "models" / "mnist-deep-cnn" / "model.onnx"


class OnnxMnist(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        (probabilities,) = self.session.run(["probabilities"], {"input": images})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("probabilities", probabilities)],
        )
