"""The Open Inference Protocol (KServe V2), driven by NVIDIA's own tritonclient over real HTTP,
plus the protocol's edge cases by hand."""

from __future__ import annotations

import asyncio
import gzip
import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from service.app import create_app
from service.state import batcher_of
from tests.conftest import MODELS_DIR, make_settings
from tests.servers import LiveService, running_service

MODEL = "mnist-deep-cnn"


@pytest.fixture(scope="module")
def live() -> Iterator[LiveService]:
    with running_service(workers=1) as service:
        yield service


@pytest.fixture(scope="module")
def triton_client(live: LiveService) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(live.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def direct() -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS_DIR / MODEL / "model.onnx"))


def input_tensor(
    values: np.ndarray, datatype: str = "FP32", binary: bool = True
) -> triton.InferInput:
    """The model's input as tritonclient sends it (binary by default, as tritonclient does)."""
    tensor = triton.InferInput("input", list(values.shape), datatype)
    tensor.set_data_from_numpy(values, binary_data=binary)
    return tensor


def batch(mnist_digits: tuple[np.ndarray, np.ndarray], count: int) -> np.ndarray:
    images, _ = mnist_digits
    return (images[:count].astype(np.float32) / 255.0)[..., np.newaxis]


def test_health_readiness_and_metadata(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready(MODEL)
    assert triton_client.is_model_ready(MODEL, model_version="1")
    assert not triton_client.is_model_ready("resnet")
    server = triton_client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"] and "classification" in server["extensions"]
    assert (server["name"], server["version"]) == ("cnn-serve", "0.1.0")  # The app's own.
    metadata = triton_client.get_model_metadata(MODEL)
    card = json.loads((MODELS_DIR / MODEL / "model.json").read_text())
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert metadata["platform"] == "onnx_onnxv1" and metadata["versions"] == [card["version"]]
    features = triton_client.get_model_metadata(f"{MODEL}-features")
    names = [output["name"] for output in features["outputs"]]
    assert names == ["probabilities", *(layer["output"] for layer in card["feature_maps"])]
    assert features["name"] == f"{MODEL}-features" and features["inputs"] == metadata["inputs"]
    assert triton_client.is_model_ready(f"{MODEL}-features")


def test_model_configuration_as_tritonclient_reads_it(
    triton_client: triton.InferenceServerClient,
) -> None:
    config = triton_client.get_model_config(MODEL)
    metadata = triton_client.get_model_metadata(MODEL)
    assert config["name"] == MODEL and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 256  # CNN_SERVE_MAX_ITEMS_PER_REQUEST's default
    (model_input,) = config["input"]
    assert (model_input["name"], model_input["data_type"]) == ("input", "TYPE_FP32")
    assert [-1, *model_input["dims"]] == metadata["inputs"][0]["shape"]  # batch left out
    assert [output["name"] for output in config["output"]] == [
        output["name"] for output in metadata["outputs"]
    ]
    batching = config["dynamic_batching"]
    defaults = make_settings()
    assert batching["max_queue_delay_microseconds"] == int(defaults.batch_max_delay_ms * 1000)
    assert batching["preferred_batch_size"] == [defaults.batch_max_items]
    assert triton_client.get_model_config(MODEL, model_version="1") == config
    with pytest.raises(InferenceServerException, match="Request for unknown model"):
        triton_client.get_model_config("resnet")


@pytest.mark.parametrize("binary", [True, False])
def test_inference_equals_onnxruntime(
    triton_client: triton.InferenceServerClient,
    direct: ort.InferenceSession,
    mnist_digits: tuple[np.ndarray, np.ndarray],
    binary: bool,
) -> None:
    images = batch(mnist_digits, 16)
    tensor = input_tensor(images, binary=binary)
    output = triton.InferRequestedOutput("probabilities", binary_data=binary)
    result = triton_client.infer(MODEL, [tensor], outputs=[output], request_id="abc-1")
    (expected,) = direct.run(["probabilities"], {"input": images})
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)
    response = result.get_response()
    assert response["id"] == "abc-1" and response["model_name"] == MODEL


def test_default_outputs_are_binary_probabilities_only(
    triton_client: triton.InferenceServerClient,
    direct: ort.InferenceSession,
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    images = batch(mnist_digits, 4)
    tensor = input_tensor(images)
    result = triton_client.infer(MODEL, [tensor])  # No outputs: binary_data_output=true.
    outputs = result.get_response()["outputs"]
    assert [output["name"] for output in outputs] == ["probabilities"]
    assert outputs[0]["parameters"]["binary_data_size"] == 4 * 10 * 4
    (expected,) = direct.run(["probabilities"], {"input": images})
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)


def test_uint8_input_is_scaled_like_the_binary_body(
    triton_client: triton.InferenceServerClient,
    direct: ort.InferenceSession,
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    images, _ = mnist_digits
    pixels = images[:8][..., np.newaxis]
    tensor = input_tensor(pixels, "UINT8")
    result = triton_client.infer(MODEL, [tensor])
    (expected,) = direct.run(["probabilities"], {"input": pixels.astype(np.float32) / 255.0})
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_feature_maps_by_output_name(
    triton_client: triton.InferenceServerClient,
    direct: ort.InferenceSession,
    mnist_digits: tuple[np.ndarray, np.ndarray],
    binary: bool,
) -> None:
    images = batch(mnist_digits, 2)
    tensor = input_tensor(images, binary=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("conv1", "pool2")]
    result = triton_client.infer(f"{MODEL}-features", [tensor], outputs=outputs)
    conv1, pool2 = direct.run(["conv1", "pool2"], {"input": images})
    np.testing.assert_allclose(result.as_numpy("conv1"), conv1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("pool2"), pool2, rtol=1e-5, atol=1e-5)
    assert result.as_numpy("probabilities") is None  # Only what was asked for.
    assert result.get_response()["model_name"] == f"{MODEL}-features"


def test_omitted_outputs_are_all_of_the_models_outputs(
    triton_client: triton.InferenceServerClient,
    direct: ort.InferenceSession,
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    """The spec: "if not specified all outputs produced by the model will be returned"; for the
    -features model that is every feature map, also for a raw binary request."""
    images = batch(mnist_digits, 2)
    names = [
        output["name"]
        for output in triton_client.get_model_metadata(f"{MODEL}-features")["outputs"]
    ]
    result = triton_client.infer(f"{MODEL}-features", [input_tensor(images)])
    assert [output["name"] for output in result.get_response()["outputs"]] == names
    for name, expected in zip(names, direct.run(names, {"input": images}), strict=True):
        np.testing.assert_allclose(result.as_numpy(name), expected, rtol=1e-5, atol=1e-5)


def test_feature_maps_from_the_plain_model_name_the_features_model(
    triton_client: triton.InferenceServerClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    tensor = input_tensor(batch(mnist_digits, 1))
    with pytest.raises(InferenceServerException, match=f"outputs of model {MODEL}-features"):
        triton_client.infer(MODEL, [tensor], outputs=[triton.InferRequestedOutput("conv1")])


@pytest.mark.parametrize("binary", [True, False])
def test_classification_extension(
    triton_client: triton.InferenceServerClient,
    direct: ort.InferenceSession,
    mnist_digits: tuple[np.ndarray, np.ndarray],
    binary: bool,
) -> None:
    images = batch(mnist_digits, 3)
    tensor = input_tensor(images)
    output = triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
    result = triton_client.infer(MODEL, [tensor], outputs=[output])
    classes = result.as_numpy("probabilities")
    assert classes.shape == (3, 3)
    (expected,) = direct.run(["probabilities"], {"input": images})
    for row, entries in enumerate(classes):
        # Binary BYTES come back as bytes, JSON ones as str: the same text either way.
        parsed = [
            (entry.decode() if isinstance(entry, bytes) else entry).split(":") for entry in entries
        ]
        indices = [int(index) for _, index, _ in parsed]
        assert indices == np.argsort(-expected[row])[:3].tolist()
        assert [label for _, _, label in parsed] == [str(index) for index in indices]
        assert float(parsed[0][0]) == pytest.approx(expected[row].max(), abs=1e-5)


def test_errors_reach_tritonclient_as_messages(
    triton_client: triton.InferenceServerClient, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images = batch(mnist_digits, 1)
    wrong = triton.InferInput("image", list(images.shape), "FP32")
    wrong.set_data_from_numpy(images)
    with pytest.raises(InferenceServerException, match="takes one input 'input'") as raised:
        triton_client.infer(MODEL, [wrong])
    assert raised.value.status() == "400"  # Triton's status for every invalid request
    with pytest.raises(InferenceServerException, match="Request for unknown model") as missing:
        triton_client.infer("resnet", [wrong])
    assert missing.value.status() == "404"
    nan = images.copy()
    nan[0, 3, 3, 0] = np.nan
    tensor = input_tensor(nan)
    with pytest.raises(InferenceServerException, match="NaN"):
        triton_client.infer(MODEL, [tensor])


# ---- protocol edge cases, by hand -------------------------------------------------------------

INPUT = {"name": "input", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": [0.0] * 784}


def v2_error(response: object, status: int) -> str:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and isinstance(body["error"], str)
    return str(body["error"])


def test_id_is_echoed_and_absent_when_not_sent(client: TestClient) -> None:
    url = f"/v2/models/{MODEL}/infer"
    assert client.post(url, json={"id": "x-9", "inputs": [INPUT]}).json()["id"] == "x-9"
    assert "id" not in client.post(url, json={"inputs": [INPUT]}).json()


def test_versioned_routes(client: TestClient) -> None:
    assert client.get(f"/v2/models/{MODEL}/versions/1").status_code == 200
    assert client.get(f"/v2/models/{MODEL}/versions/1/ready").json()["ready"] is True
    ok = client.post(f"/v2/models/{MODEL}/versions/1/infer", json={"inputs": [INPUT]})
    assert ok.status_code == 200 and ok.json()["model_version"] == "1"
    missing = v2_error(client.get(f"/v2/models/{MODEL}/versions/7"), 404)
    assert missing.startswith(f"Request for unknown model: '{MODEL}' version 7")


@pytest.mark.parametrize(
    "request_body, status, fragment",
    [
        ({"inputs": [INPUT], "outputs": [{"name": "logits"}]}, 400, "no output 'logits'"),
        ({"inputs": [{**INPUT, "data": [0.0] * 783}]}, 400, "783 values"),
        ({"inputs": [{**INPUT, "shape": [1, 27, 28, 1]}]}, 400, "input shape"),
        ({"inputs": [{**INPUT, "shape": [0, 28, 28, 1], "data": []}]}, 400, "N >= 1"),
        ({"inputs": [{**INPUT, "datatype": "FP128"}]}, 400, "unknown datatype"),
        ({"inputs": [{**INPUT, "datatype": "INT64"}]}, 400, "takes datatype FP32"),
        ({"inputs": [{**INPUT, "data": [2.0] * 784}]}, 400, "[0, 1]"),
        ({"inputs": [{**INPUT, "shape": [300, 784], "data": [0.0] * 784 * 300}]}, 400, "256"),
        ({"inputs": [INPUT, INPUT]}, 400, "one input"),
        ({"inputs": []}, 400, "inputs"),
        (
            {
                "inputs": [INPUT],
                "outputs": [{"name": "probabilities", "parameters": {"classification": 11}}],
            },
            400,
            "between 1 and 10",
        ),  # noqa: E501
        (
            {
                "inputs": [INPUT],
                "outputs": [{"name": "conv1", "parameters": {"classification": 2}}],
            },
            400,
            "has no output 'conv1'",
        ),  # noqa: E501
        ({"inputs": [INPUT], "parameters": {"binary_data_output": "yes"}}, 400, "true or false"),
        ({"model_name": MODEL}, 400, "inputs"),
        ({"inputs": [{**INPUT, "parameters": {"binary_data_size": "x"}}]}, 400, "binary_data_size"),
    ],
)
def test_bad_tensors_are_4xx(
    client: TestClient, request_body: dict[str, object], status: int, fragment: str
) -> None:
    response = client.post(f"/v2/models/{MODEL}/infer", json=request_body)
    assert fragment in v2_error(response, status)


def binary_request(header: dict[str, object], tail: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + tail, {"inference-header-content-length": str(len(text))}


def test_binary_sizes_must_add_up(client: TestClient) -> None:
    url = f"/v2/models/{MODEL}/infer"
    tensor = {"name": "input", "shape": [1, 28, 28, 1], "datatype": "FP32"}
    good = np.zeros(784, dtype="<f4").tobytes()
    body, headers = binary_request(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": 3136}}]}, good
    )
    assert client.post(url, content=body, headers=headers).status_code == 200
    body, headers = binary_request(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": 3000}}]}, good[:3000]
    )
    assert "does not match the shape" in v2_error(
        client.post(url, content=body, headers=headers), 400
    )
    body, headers = binary_request(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": 3136}}]}, good[:100]
    )
    assert "100 bytes" in v2_error(client.post(url, content=body, headers=headers), 400)


def test_header_length_larger_than_the_body_is_400(client: TestClient) -> None:
    response = client.post(
        f"/v2/models/{MODEL}/infer",
        content=b'{"inputs": []}',
        headers={"inference-header-content-length": "5000"},
    )
    assert "exceeds the body" in v2_error(response, 400)
    response = client.post(
        f"/v2/models/{MODEL}/infer",
        content=b'{"inputs": []}',
        headers={"inference-header-content-length": "-3"},
    )
    v2_error(response, 400)


def raw_binary(
    client: TestClient, model: str, images: np.ndarray
) -> tuple[list[dict[str, Any]], bytes]:
    """A raw binary request (Inference-Header-Content-Length: 0): the response's outputs and
    the binary tensors after its JSON header."""
    response = client.post(
        f"/v2/models/{model}/infer",
        content=images.astype("<f4").tobytes(),
        headers={"inference-header-content-length": "0"},
    )
    assert response.status_code == 200
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length])["outputs"], response.content[length:]


def test_raw_binary_request_is_one_image(
    client: TestClient, direct: ort.InferenceSession, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    image = batch(mnist_digits, 1)
    outputs, tail = raw_binary(client, MODEL, image)
    probabilities = np.frombuffer(tail, dtype="<f4").reshape(1, 10)
    (expected,) = direct.run(["probabilities"], {"input": image})
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    assert outputs[0]["parameters"]["binary_data_size"] == 40


def test_raw_binary_request_to_the_features_model_returns_every_output(
    client: TestClient, direct: ort.InferenceSession, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    image = batch(mnist_digits, 1)
    outputs, tail = raw_binary(client, f"{MODEL}-features", image)
    names = [output["name"] for output in outputs]
    assert names[0] == "probabilities" and "conv1" in names and "pool2" in names
    offset = 0
    for output, expected in zip(outputs, direct.run(names, {"input": image}), strict=True):
        size = output["parameters"]["binary_data_size"]
        values = np.frombuffer(tail[offset : offset + size], dtype="<f4")
        np.testing.assert_allclose(values.reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)
        offset += size
    assert offset == len(tail)


def test_binary_classification_strings_are_length_prefixed(client: TestClient) -> None:
    request = {
        "inputs": [INPUT],
        "outputs": [
            {"name": "probabilities", "parameters": {"classification": 2, "binary_data": True}}
        ],
    }
    response = client.post(f"/v2/models/{MODEL}/infer", json=request)
    length = int(response.headers["inference-header-content-length"])
    tail = response.content[length:]
    first = struct.unpack("<I", tail[:4])[0]
    assert tail[4 : 4 + first].decode().count(":") == 2


def test_gzip_bodies_are_accepted_and_bombs_are_not(client: TestClient) -> None:
    url = f"/v2/models/{MODEL}/infer"
    body = gzip.compress(json.dumps({"inputs": [INPUT]}).encode())
    ok = client.post(url, content=body, headers={"content-encoding": "gzip"})
    assert ok.status_code == 200
    bomb = gzip.compress(b" " * (20 * 2**20))  # Expands past the 16 MiB body limit.
    assert "decompressed" in v2_error(
        client.post(url, content=bomb, headers={"content-encoding": "gzip"}), 400
    )
    assert "br" in v2_error(client.post(url, content=body, headers={"content-encoding": "br"}), 400)


def test_unknown_model_everywhere_is_404_in_v2_shape(client: TestClient) -> None:
    for response in (
        client.get("/v2/models/resnet"),
        client.get("/v2/models/resnet/ready"),
        client.get("/v2/models/resnet/config"),
        client.post("/v2/models/resnet/infer", json={"inputs": [INPUT]}),
    ):
        assert "Request for unknown model: 'resnet' is not found" in v2_error(response, 404)
    v2_error(client.get("/v2/nothing-here"), 404)


def test_kserve_clients_request_with_their_extra_fields_is_served(client: TestClient) -> None:
    """What ``kserve.InferRequest.to_rest()`` sends: model_name and model_version always, a null
    id and null parameters when unset; fields the protocol does not define are ignored."""
    request = {
        "id": None,
        "model_name": MODEL,
        "model_version": "1",
        "parameters": None,
        "inputs": [{**INPUT, "parameters": None, "x-vendor-field": {"nested": [1, 2]}}],
        "outputs": [{"name": "probabilities", "parameters": None, "colour": "red"}],
        "colour": "red",
    }
    response = client.post(f"/v2/models/{MODEL}/infer", json=request)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["name"] == "probabilities"


def test_empty_body_is_a_400_json_parse_error(client: TestClient) -> None:
    """As Triton answers it; a raw binary request needs Inference-Header-Content-Length: 0 and
    a tail."""
    url = f"/v2/models/{MODEL}/infer"
    assert "malformed JSON" in v2_error(client.post(url, content=b""), 400)
    empty_raw = client.post(url, content=b"", headers={"inference-header-content-length": "0"})
    assert "malformed JSON" in v2_error(empty_raw, 400)


def test_server_metadata_answers_at_the_specs_trailing_slash_path(client: TestClient) -> None:
    assert client.get("/v2/").json() == client.get("/v2").json()
    assert "model_configuration" in client.get("/v2").json()["extensions"]


def test_v2_body_limit_is_a_400_in_v2_shape_and_413_elsewhere() -> None:
    with TestClient(create_app(make_settings(max_body_bytes=2048))) as small:
        body = json.dumps({"inputs": [INPUT]}).encode()
        assert len(body) > 2048
        assert "2048" in v2_error(small.post(f"/v2/models/{MODEL}/infer", content=body), 400)
        own = small.post("/predict", content=body, headers={"content-type": "application/json"})
        assert own.status_code == 413 and own.json()["error"]["code"] == "payload_too_large"


def test_v2_goes_through_the_metrics(client: TestClient) -> None:
    client.post(f"/v2/models/{MODEL}/infer", json={"inputs": [INPUT]})
    text = client.get("/metrics").text
    assert 'route="/v2/models/{name}/infer",status="200"' in text


@settings(max_examples=40, derandomize=True, deadline=None, database=None)
@given(
    encoding=st.sampled_from(["gzip", "deflate"]),
    damage=st.one_of(
        st.tuples(st.just("truncate"), st.integers(1, 200)),
        st.tuples(st.just("append"), st.binary(min_size=1, max_size=64)),
        st.tuples(st.just("second member"), st.just(b"")),
    ),
)
def test_compressed_bodies_must_be_exactly_one_whole_stream(
    client: TestClient, encoding: str, damage: tuple[str, bytes | int]
) -> None:
    """Truncated streams, trailing bytes and a second gzip member are 400, never a shorter body."""
    document = json.dumps({"inputs": [INPUT]}).encode()
    body = gzip.compress(document) if encoding == "gzip" else zlib.compress(document)
    kind, value = damage
    if kind == "truncate":
        assert isinstance(value, int)
        body = body[: max(1, len(body) - value)]
    elif kind == "append":
        assert isinstance(value, bytes)
        body += value
    else:
        body += gzip.compress(document) if encoding == "gzip" else zlib.compress(document)
    response = client.post(
        f"/v2/models/{MODEL}/infer", content=body, headers={"content-encoding": encoding}
    )
    v2_error(response, 400)


def test_classification_applies_to_probabilities_only(client: TestClient) -> None:
    request = {
        "inputs": [INPUT],
        "outputs": [{"name": "conv1", "parameters": {"classification": 2}}],
    }
    response = client.post(f"/v2/models/{MODEL}-features/infer", json=request)
    assert "probabilities output only" in v2_error(response, 400)


def test_responses_are_gzipped_when_tritonclient_asks(
    triton_client: triton.InferenceServerClient,
    direct: ort.InferenceSession,
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    images = batch(mnist_digits, 4)
    plain = triton_client.infer(f"{MODEL}-features", [input_tensor(images)])
    compressed = triton_client.infer(
        f"{MODEL}-features", [input_tensor(images)], response_compression_algorithm="gzip"
    )
    for name in ("probabilities", "conv1", "pool2"):
        np.testing.assert_array_equal(compressed.as_numpy(name), plain.as_numpy(name))


def test_gzip_only_when_asked_and_only_under_v2(client: TestClient) -> None:
    request = {"inputs": [{**INPUT, "shape": [4, 28, 28, 1], "data": [0.0] * 784 * 4}]}
    url = f"/v2/models/{MODEL}-features/infer"
    asked = client.post(url, json=request, headers={"accept-encoding": "gzip"})
    assert asked.status_code == 200 and asked.headers["content-encoding"] == "gzip"
    assert len(asked.json()["outputs"]) == 7  # httpx has decompressed it
    not_asked = client.post(url, json=request, headers={"accept-encoding": "identity"})
    assert "content-encoding" not in not_asked.headers
    assert not_asked.json() == asked.json()
    own = client.post(
        "/predict",
        json={"instances": [[[0.0] * 28] * 28] * 40},
        headers={"accept-encoding": "gzip"},
    )
    assert own.status_code == 200 and "content-encoding" not in own.headers


# ---- what Triton's qa/L0_http checks, written here for this model ------------------------------


def test_deeply_nested_json_is_a_400(client: TestClient) -> None:
    """150,000 nested arrays: refused before or by the parser, never a recursion crash."""
    deep = b'{"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": '
    deep += b"[" * 150_000 + b"]" * 150_000 + b"}]}"
    response = client.post(f"/v2/models/{MODEL}/infer", content=deep)
    v2_error(response, 400)


@pytest.mark.parametrize(
    "shape",
    [
        [2**62, 784],
        [2**31, 28, 28, 1],
        [1, 2**40, 2**40],
        [-1, 784],
        [1, -784],
        [9_223_372_036_854_775_807, 784],
    ],
)
def test_overflowing_or_negative_shapes_are_400(client: TestClient, shape: list[int]) -> None:
    request = {"inputs": [{**INPUT, "shape": shape}]}
    v2_error(client.post(f"/v2/models/{MODEL}/infer", json=request), 400)


def test_binary_shape_overflow_is_400(client: TestClient) -> None:
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": [2**40, 784],
                "datatype": "UINT8",
                "parameters": {"binary_data_size": 784},
            }
        ]
    }
    body, headers = binary_request(header, bytes(784))
    v2_error(client.post(f"/v2/models/{MODEL}/infer", content=body, headers=headers), 400)


def test_body_limit_is_exact_to_the_byte() -> None:
    request = json.dumps({"inputs": [INPUT]}).encode()
    with TestClient(create_app(make_settings(max_body_bytes=len(request)))) as exact:
        url = f"/v2/models/{MODEL}/infer"
        assert exact.post(url, content=request).status_code == 200
        assert "exceeds" in v2_error(exact.post(url, content=request + b" "), 400)


def test_duplicate_outputs_are_400(client: TestClient) -> None:
    request = {"inputs": [INPUT], "outputs": [{"name": "conv1"}, {"name": "conv1"}]}
    response = client.post(f"/v2/models/{MODEL}-features/infer", json=request)
    assert "twice" in v2_error(response, 400)


def test_mixed_binary_and_json_outputs(
    client: TestClient, direct: ort.InferenceSession, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """binary_data_output sets the default; each output's binary_data overrides it."""
    image = batch(mnist_digits, 1)
    request = {
        "parameters": {"binary_data_output": True},
        "inputs": [{**INPUT, "data": image.ravel().tolist()}],
        "outputs": [
            {"name": "pool2"},
            {"name": "probabilities", "parameters": {"binary_data": False}},
        ],
    }
    response = client.post(f"/v2/models/{MODEL}-features/infer", json=request)
    length = int(response.headers["inference-header-content-length"])
    pool2_out, probabilities_out = json.loads(response.content[:length])["outputs"]
    expected_probabilities, expected_pool2 = direct.run(
        ["probabilities", "pool2"], {"input": image}
    )
    assert "data" not in pool2_out and pool2_out["parameters"]["binary_data_size"] == 1024 * 4
    pool2 = np.frombuffer(response.content[length:], dtype="<f4").reshape(expected_pool2.shape)
    np.testing.assert_allclose(pool2, expected_pool2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        probabilities_out["data"], expected_probabilities.ravel(), rtol=1e-5, atol=1e-6
    )


def test_async_infer_as_in_tritonclients_examples(
    live: LiveService, direct: ort.InferenceSession, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """``async_infer`` (threads) and ``tritonclient.http.aio`` (asyncio), several at once."""
    images = batch(mnist_digits, 8)
    (expected,) = direct.run(["probabilities"], {"input": images})
    threaded = triton.InferenceServerClient(live.url.removeprefix("http://"), concurrency=4)
    pending = [threaded.async_infer(MODEL, [input_tensor(images[i : i + 1])]) for i in range(8)]
    for index, request in enumerate(pending):
        np.testing.assert_allclose(
            request.get_result().as_numpy("probabilities")[0], expected[index], rtol=1e-5, atol=1e-6
        )
    threaded.close()

    async def run_aio() -> list[np.ndarray]:
        async with triton_aio.InferenceServerClient(live.url.removeprefix("http://")) as client:
            assert await client.is_server_ready()
            assert (await client.get_model_metadata(MODEL))["name"] == MODEL
            results = await asyncio.gather(
                *(client.infer(MODEL, [input_tensor(images[i : i + 1])]) for i in range(8))
            )
            return [result.as_numpy("probabilities")[0] for result in results]

    np.testing.assert_allclose(np.stack(asyncio.run(run_aio())), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("where", ["input", "output"])
def test_shared_memory_parameters_are_refused_not_ignored(client: TestClient, where: str) -> None:
    region = {"shared_memory_region": "input0", "shared_memory_byte_size": 3136}
    request: dict[str, object] = {"inputs": [INPUT], "outputs": [{"name": "probabilities"}]}
    if where == "input":
        request["inputs"] = [{**INPUT, "parameters": region}]
    else:
        request["outputs"] = [{"name": "probabilities", "parameters": region}]
    message = v2_error(client.post(f"/v2/models/{MODEL}/infer", json=request), 400)
    assert "shared memory" in message and "shared_memory_region" in message
    extensions = client.get("/v2").json()["extensions"]
    assert not any("shared_memory" in extension for extension in extensions)


# ---- Triton's statistics extension --------------------------------------------------------------


def test_statistics_count_what_reached_the_model() -> None:
    with TestClient(create_app(make_settings())) as fresh:
        url = f"/v2/models/{MODEL}/infer"
        two = {"inputs": [{**INPUT, "shape": [2, 784], "data": [0.0] * 784 * 2}]}
        for _ in range(3):
            assert fresh.post(url, json=two).status_code == 200
        assert fresh.post(url, json={"inputs": [{**INPUT, "data": [2.0] * 784}]}).status_code == 400
        (stats,) = fresh.get(f"/v2/models/{MODEL}/stats").json()["model_stats"]
        inference = stats["inference_stats"]
        assert (stats["name"], stats["version"]) == (MODEL, "1")
        assert inference["success"]["count"] == 3 and inference["success"]["ns"] > 0
        assert inference["fail"]["count"] == 0  # the 400 never reached the model
        assert inference["queue"]["count"] == 3
        assert stats["inference_count"] == 6
        assert 1 <= stats["execution_count"] <= 3  # one run serves a whole batch
        assert inference["compute_infer"]["count"] == stats["execution_count"]
        assert 0 < inference["compute_infer"]["ns"] <= inference["success"]["ns"]
        assert stats["last_inference"] > 1_700_000_000_000  # milliseconds since 1970
        everything = fresh.get("/v2/models/stats").json()["model_stats"]
        assert [entry["name"] for entry in everything] == sorted(
            ["fashion-deep-cnn", MODEL, "mnist-deep-cnn-int8"]
        )
        untouched = next(entry for entry in everything if entry["name"] == "fashion-deep-cnn")
        assert untouched["inference_stats"]["success"]["count"] == 0
        assert "statistics" in fresh.get("/v2").json()["extensions"]
        features = fresh.get(f"/v2/models/{MODEL}-features/versions/1/stats").json()
        assert features["model_stats"][0]["inference_count"] == 6
        v2_error(fresh.get("/v2/models/resnet/stats"), 404)


def test_a_request_that_fails_at_the_model_counts_as_fail() -> None:
    """A run that raises: the request is answered 500 and counted under fail."""
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as fresh:
        batcher = batcher_of(fresh.app.state.serving.models[MODEL])  # type: ignore[attr-defined]

        def broken(images: np.ndarray) -> None:
            raise RuntimeError("a broken model")

        batcher._run_batch = broken
        response = fresh.post(f"/v2/models/{MODEL}/infer", json={"inputs": [INPUT]})
        assert response.status_code == 500 and "inference failed" in v2_error(response, 500)
        (stats,) = fresh.get(f"/v2/models/{MODEL}/stats").json()["model_stats"]
        assert stats["inference_stats"]["fail"]["count"] == 1
        assert stats["inference_stats"]["success"]["count"] == 0


@pytest.mark.slow  # Real processes.
def test_statistics_are_summed_over_workers_as_tritonclient_reads_them() -> None:
    with running_service(workers=2) as service:
        for _ in range(10):  # New connections: the kernel spreads them over both workers.
            client = triton.InferenceServerClient(service.url.removeprefix("http://"))
            tensor = triton.InferInput("input", [1, 28, 28, 1], "FP32")
            tensor.set_data_from_numpy(np.zeros((1, 28, 28, 1), dtype=np.float32))
            client.infer(MODEL, [tensor])
            client.close()
        client = triton.InferenceServerClient(service.url.removeprefix("http://"))
        statistics = client.get_inference_statistics(MODEL)
        (stats,) = statistics["model_stats"]
        assert stats["inference_stats"]["success"]["count"] == 10
        assert stats["inference_count"] == 10
        assert len(client.get_inference_statistics()["model_stats"]) == 3
        client.close()


@pytest.mark.parametrize("binary", [True, False])
def test_the_saliency_output_with_tritonclient(
    triton_client: triton.InferenceServerClient, mnist_digits: tuple[np.ndarray, np.ndarray],
    binary: bool,
) -> None:  # fmt: skip
    """Named, the saliency output comes back beside the probabilities: (N, 28, 28), the
    occlusion map of each image's predicted class, positive on its strokes."""
    images = (mnist_digits[0][:2] / 255.0).astype(np.float32)[..., np.newaxis]
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary)
        for name in ("probabilities", "saliency")
    ]
    result = triton_client.infer(MODEL, [input_tensor(images, binary=binary)], outputs=outputs)
    saliency = result.as_numpy("saliency")
    assert saliency.shape == (2, 28, 28) and saliency.dtype == np.float32
    inked = images[..., 0] > 0.5
    assert all(saliency[index][inked[index]].mean() > 0 for index in range(2))
    assert result.as_numpy("probabilities").argmax(axis=1).tolist() == mnist_digits[1][:2].tolist()
    plain = triton_client.infer(MODEL, [input_tensor(images)])  # No outputs named: no saliency.
    assert plain.as_numpy("saliency") is None
