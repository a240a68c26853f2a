"""Real requests against a running server: an image upload to /predict and /feature-maps, the
model list, V2 inference over HTTP and gRPC, /metrics and a malformed request.

Usage: python scripts/smoke_requests.py URL [--default-model NAME] [--models NAME,NAME]
[--grpc HOST:PORT] (``--default-model`` and ``--models``: what the server must say it serves;
``--grpc``: where its V2 gRPC service listens)."""

from __future__ import annotations

import argparse
import io

import httpx
import numpy as np
import tritonclient.grpc as triton_grpc
from PIL import Image, ImageDraw


def drawn_one() -> bytes:
    """A photo-like drawing of a '1': dark ink on white paper, 300x400."""
    paper = Image.new("RGB", (300, 400), "white")
    ImageDraw.Draw(paper).line([(150, 60), (150, 340)], fill="black", width=28)
    buffer = io.BytesIO()
    paper.save(buffer, format="JPEG")
    return buffer.getvalue()


def grpc_requests(address: str) -> None:
    """Health, metadata and one inference over gRPC with NVIDIA's client."""
    client = triton_grpc.InferenceServerClient(address)
    assert client.is_server_ready() and client.is_model_ready("mnist-deep-cnn")
    pixels = np.asarray(Image.open(io.BytesIO(drawn_one())).convert("L").resize((28, 28)))
    digit = (255 - pixels.astype(np.float32)) / 255.0
    tensor = triton_grpc.InferInput("input", [1, 28, 28, 1], "FP32")
    tensor.set_data_from_numpy(digit[np.newaxis, :, :, np.newaxis])
    result = client.infer("mnist-deep-cnn", [tensor])
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (1, 10) and abs(float(probabilities.sum()) - 1) < 1e-4
    print(f"gRPC ModelInfer on {address}: top class {int(probabilities.argmax())}")
    client.close()


def main(
    base_url: str, default_model: str | None, model_names: list[str] | None, grpc: str | None
) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        prediction = client.post(
            "/predict", files={"files": ("one.jpg", drawn_one(), "image/jpeg")}
        )
        prediction.raise_for_status()
        label = prediction.json()["predictions"][0]["label"]
        assert label == "1", prediction.text
        print(f"/predict on an uploaded photo of a 1: {label}")
        maps = client.post(
            "/feature-maps?format=png&layers=conv1",
            files={"files": ("one.jpg", drawn_one(), "image/jpeg")},
        )
        maps.raise_for_status()
        picture = Image.open(io.BytesIO(maps.content))
        assert maps.headers["content-type"] == "image/png" and picture.width > 100
        print(f"/feature-maps PNG: {picture.width}x{picture.height}")
        models = client.get("/models").json()
        served = [model["name"] for model in models["models"]]
        print("models served:", served, "default:", models["default_model"])
        assert default_model is None or models["default_model"] == default_model, models
        assert model_names is None or sorted(served) == sorted(model_names), served
        assert client.get("/v2/health/ready").json() == {"ready": True}
        v2 = client.post(
            "/v2/models/mnist-deep-cnn/infer",
            json={
                "id": "smoke",
                "inputs": [
                    {"name": "input", "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784}
                ],
                "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}],
            },
        )
        v2.raise_for_status()
        print("V2 infer:", v2.json()["outputs"][0]["data"])
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert 'route="/predict",status="200"' in metrics.text, metrics.text[:500]
        print("/metrics counts the requests above")
        bad = client.post("/predict", content=b"{", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
        print("malformed JSON -> 400 JSON error")
    if grpc is not None:
        grpc_requests(grpc)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--default-model")
    parser.add_argument("--models", type=lambda text: text.split(","))
    parser.add_argument("--grpc")
    args = parser.parse_args()
    main(args.url, args.default_model, args.models, args.grpc)
