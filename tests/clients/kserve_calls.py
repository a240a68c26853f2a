"""Run inside the kserve SDK's own virtual environment (see test_kserve_sdk.py): KServe's
``InferenceRESTClient`` and ``InferenceGRPCClient`` with ``InferRequest``, as KServe's docs call
them, against a running cnn-serve. Prints one JSON object with what each call returned.

Usage: python kserve_calls.py BASE_URL GRPC_ADDRESS IMAGES.npy
(IMAGES.npy: float32 (N, 28, 28, 1) in [0, 1])
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

MODEL = "mnist-deep-cnn"


def image_input(images: np.ndarray, binary: bool) -> InferInput:
    tensor = InferInput("input", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=binary)
    return tensor


async def calls(base_url: str, images: np.ndarray) -> dict[str, object]:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    found: dict[str, object] = {
        "live": await client.is_server_live(base_url),
        "ready": await client.is_server_ready(base_url),
        "model_ready": await client.is_model_ready(base_url, MODEL),
    }
    as_json = await client.infer(
        base_url, InferRequest(MODEL, [image_input(images, False)], request_id="kserve-1"), MODEL
    )
    found["json_id"] = as_json.id
    found["json_probabilities"] = as_json.outputs[0].as_numpy().tolist()
    as_binary = await client.infer(
        base_url,
        InferRequest(
            MODEL,
            [image_input(images, True)],
            request_outputs=[RequestedOutput("probabilities", {"binary_data": True})],
        ),
        MODEL,
    )
    found["binary_probabilities"] = as_binary.outputs[0].as_numpy().tolist()
    features = await client.infer(
        base_url,
        InferRequest(
            f"{MODEL}-features",
            [image_input(images, False)],
            request_outputs=[RequestedOutput("conv1")],
        ),
        f"{MODEL}-features",
    )
    found["conv1_shape"] = list(features.outputs[0].as_numpy().shape)
    try:
        await client.infer(base_url, InferRequest("resnet", [image_input(images, False)]), "resnet")
        found["unknown_model"] = "answered"
    except Exception as error:  # The SDK raises httpx.HTTPStatusError with the server's text.
        found["unknown_model"] = str(error)
    await client.close()
    return found


async def grpc_calls(address: str, images: np.ndarray) -> dict[str, object]:
    client = InferenceGRPCClient(address, timeout=30, retries=0)
    found: dict[str, object] = {
        "grpc_live": await client.is_server_live(),
        "grpc_ready": await client.is_server_ready(),
        "grpc_model_ready": await client.is_model_ready(MODEL),
    }
    answer = await client.infer(
        InferRequest(MODEL, [image_input(images, False)], request_id="kserve-grpc-1")
    )
    found["grpc_id"] = answer.id
    found["grpc_probabilities"] = answer.outputs[0].as_numpy().tolist()
    try:
        await client.infer(InferRequest("resnet", [image_input(images, False)]))
        found["grpc_unknown_model"] = "answered"
    except Exception as error:  # The SDK raises grpc.aio.AioRpcError with the server's text.
        found["grpc_unknown_model"] = str(error)
    await client.close()
    return found


async def every_call(base_url: str, address: str, images: np.ndarray) -> dict[str, object]:
    return {**await calls(base_url, images), **await grpc_calls(address, images)}


if __name__ == "__main__":
    found = asyncio.run(every_call(sys.argv[1], sys.argv[2], np.load(sys.argv[3])))
    print(json.dumps(found))
