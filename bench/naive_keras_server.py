"""The naive baseline: a model served the way tutorials do it.

FastAPI parses a pydantic body and calls Keras ``model.predict`` once per request. The model is the
deep CNN architecture (``training.architectures``); its weights are untrained, which changes
nothing about speed. Run: ``uvicorn bench.naive_keras_server:app --port 8100``.
"""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from training.architectures import build_model

app = FastAPI()
model = build_model("deep_cnn")


class Instances(BaseModel):
    instances: list[list[list[float]]]


@app.post("/predict")
def predict(request: Instances) -> dict[str, list[int]]:
    images = np.asarray(request.instances, dtype=np.float32)[..., np.newaxis]
    probabilities = model.predict(images, verbose=0)
    return {"classes": probabilities.argmax(axis=1).tolist()}
