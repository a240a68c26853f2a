"""The Open Inference Protocol over gRPC, driven by NVIDIA's own ``tritonclient.grpc`` against
the app's gRPC server (in-process: the TestClient's event loop runs it), plus raw messages
through the service's own stubs for what tritonclient never sends."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tritonclient.utils import InferenceServerException

from service.app import create_app
from service.grpc_api import inference_pb2 as pb
from service.grpc_api.messages import Stub
from service.tracing import Tracing
from tests.conftest import MODELS_DIR, ROOT, make_settings, slow_model
from tests.servers import free_port

MODEL = "mnist-deep-cnn"
KEY = "grpc-test-key"


class GrpcService:
    """An app serving gRPC on its own port, with both kinds of client."""

    def __init__(self, tracing: Tracing | None = None, **overrides: object) -> None:
        self.port = free_port()
        settings = make_settings(grpc_port=self.port, **overrides)
        self.http = TestClient(create_app(settings, tracing=tracing))

    def __enter__(self) -> GrpcService:
        self.http.__enter__()
        self.triton = triton.InferenceServerClient(f"127.0.0.1:{self.port}")
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub: Any = Stub(self.channel)
        return self

    def __exit__(self, *exc: object) -> None:
        self.triton.close()
        self.channel.close()
        self.http.__exit__(None, None, None)


@pytest.fixture(scope="module")
def service() -> Iterator[GrpcService]:
    with GrpcService() as running:
        yield running


@pytest.fixture(scope="module")
def direct() -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS_DIR / MODEL / "model.onnx"))


def images_of(mnist_digits: tuple[np.ndarray, np.ndarray], count: int) -> np.ndarray:
    """float32 (count, 28, 28, 1) in [0, 1]."""
    return (mnist_digits[0][:count].astype(np.float32) / 255.0)[..., np.newaxis]


def input_tensor(values: np.ndarray, datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput("input", list(values.shape), datatype)
    tensor.set_data_from_numpy(values)
    return tensor


def status_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    code: grpc.StatusCode = raised.value.code()
    return code


def test_health_and_server_metadata(service: GrpcService) -> None:
    assert service.triton.is_server_live()
    assert service.triton.is_server_ready()
    assert service.triton.is_model_ready(MODEL)
    assert service.triton.is_model_ready(MODEL, "1")
    assert not service.triton.is_model_ready("no-such-model")
    metadata = service.triton.get_server_metadata()
    assert metadata.name == "cnn-serve"
    assert "classification" in metadata.extensions


def test_model_metadata_lists_the_feature_maps_of_the_features_model(
    service: GrpcService,
) -> None:
    plain = service.triton.get_model_metadata(MODEL)
    assert [output.name for output in plain.outputs] == ["probabilities"]
    assert list(plain.inputs[0].shape) == [-1, 28, 28, 1]
    features = service.triton.get_model_metadata(f"{MODEL}-features")
    names = [output.name for output in features.outputs]
    assert names[0] == "probabilities" and "conv1" in names and len(names) > 4
    assert plain.versions == ["1"]


def test_infer_equals_onnxruntime(
    service: GrpcService,
    direct: ort.InferenceSession,
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    images = images_of(mnist_digits, 32)
    result = service.triton.infer(MODEL, [input_tensor(images)], request_id="req-7")
    probabilities = result.as_numpy("probabilities")
    (expected,) = direct.run(["probabilities"], {"input": images})
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    assert (probabilities.argmax(axis=1) == mnist_digits[1][:32]).mean() > 0.95
    response = result.get_response()
    assert response.id == "req-7" and response.model_version == "1"


def test_uint8_pixels_give_the_same_answer(
    service: GrpcService, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels = mnist_digits[0][:4, :, :, np.newaxis]
    as_bytes = service.triton.infer(MODEL, [input_tensor(pixels, "UINT8")])
    as_floats = service.triton.infer(MODEL, [input_tensor(images_of(mnist_digits, 4))])
    np.testing.assert_allclose(
        as_bytes.as_numpy("probabilities"), as_floats.as_numpy("probabilities"), atol=1e-6
    )


def test_a_feature_map_by_name_equals_onnxruntime(
    service: GrpcService, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images = images_of(mnist_digits, 2)
    session = ort.InferenceSession(str(MODELS_DIR / MODEL / "model.onnx"))
    output_names = [output.name for output in session.get_outputs()]
    layer = next(name for name in output_names if "conv1" in name)
    (expected,) = session.run([layer], {"input": images})
    result = service.triton.infer(
        f"{MODEL}-features",
        [input_tensor(images)],
        outputs=[triton.InferRequestedOutput("conv1")],
    )
    np.testing.assert_allclose(result.as_numpy("conv1"), expected, rtol=1e-5, atol=1e-5)


def test_classification_returns_triton_strings(
    service: GrpcService, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    result = service.triton.infer(
        MODEL,
        [input_tensor(images_of(mnist_digits, 3))],
        outputs=[triton.InferRequestedOutput("probabilities", class_count=2)],
    )
    strings = result.as_numpy("probabilities")
    assert strings.shape == (3, 2)
    top = [int(row[0].decode().split(":")[1]) for row in strings]
    assert top == list(mnist_digits[1][:3])


def test_typed_contents_are_read_as_raw_bytes_are(
    service: GrpcService, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """tritonclient always sends raw bytes; other clients fill the typed contents."""
    images = images_of(mnist_digits, 2)
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="input", datatype="FP32", shape=[2, 28, 28, 1]
    )
    tensor.contents.fp32_contents.extend(images.ravel().tolist())
    typed = service.stub.ModelInfer(pb.ModelInferRequest(model_name=MODEL, inputs=[tensor]))
    raw = service.triton.infer(MODEL, [input_tensor(images)]).as_numpy("probabilities")
    values = np.frombuffer(typed.raw_output_contents[0], dtype="<f4").reshape(2, 10)
    np.testing.assert_allclose(values, raw, atol=1e-6)


@pytest.mark.parametrize(
    ("declared", "raw", "message"),
    [
        (("FP32", [1, 27, 28, 1]), np.zeros(27 * 28, "<f4"), "input shape"),
        (("FP64", [1, 28, 28, 1]), np.zeros(784, "<f8"), "datatype"),
        (("FP32", [1, 28, 28, 1]), np.zeros(783, "<f4"), "binary_data_size"),
        (("FP32", [1, 28, 28, 1]), np.full(784, 2.0, "<f4"), "[0, 1]"),
        (("FP32", [1, 28, 28, 1]), np.full(784, np.nan, "<f4"), "finite"),
        (("NOPE", [1, 28, 28, 1]), np.zeros(784, "<f4"), "unknown datatype"),
    ],
)
def test_invalid_requests_are_invalid_argument_with_the_reason(
    service: GrpcService, declared: tuple[str, list[int]], raw: np.ndarray, message: str
) -> None:
    datatype, shape = declared
    request = pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name="input", datatype=datatype, shape=shape)
        ],
        raw_input_contents=[raw.tobytes()],
    )
    with pytest.raises(grpc.RpcError) as raised:
        service.stub.ModelInfer(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in raised.value.details()


def test_unknown_models_and_outputs(service: GrpcService) -> None:
    zeros = np.zeros((1, 28, 28, 1), np.float32)
    with pytest.raises(InferenceServerException, match="NOT_FOUND.*unknown model"):
        service.triton.infer("no-such-model", [input_tensor(zeros)])
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        service.triton.infer(MODEL, [input_tensor(zeros)], model_version="9")
    with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT.*no output 'conv1'"):
        service.triton.infer(
            MODEL, [input_tensor(zeros)], outputs=[triton.InferRequestedOutput("conv1")]
        )
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        service.triton.get_model_metadata("no-such-model")


def test_statistics_count_grpc_inferences(
    service: GrpcService, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    before = service.triton.get_inference_statistics(MODEL).model_stats[0]
    service.triton.infer(MODEL, [input_tensor(images_of(mnist_digits, 3))])
    after = service.triton.get_inference_statistics(MODEL).model_stats[0]
    assert after.inference_count == before.inference_count + 3
    assert after.inference_stats.success.count == before.inference_stats.success.count + 1
    every = service.triton.get_inference_statistics().model_stats
    assert {stats.name for stats in every} >= {MODEL, "fashion-deep-cnn"}
    over_http = service.http.get(f"/v2/models/{MODEL}/stats").json()["model_stats"][0]
    assert over_http["inference_count"] == after.inference_count  # One set of figures.


def test_the_request_id_is_echoed_or_made(service: GrpcService) -> None:
    _, call = service.stub.ServerLive.with_call(
        pb.ServerLiveRequest(), metadata=(("x-request-id", "trace-me-42"),)
    )
    assert dict(call.initial_metadata())["x-request-id"] == "trace-me-42"
    _, call = service.stub.ServerLive.with_call(
        pb.ServerLiveRequest(), metadata=(("x-request-id", "bad id with spaces"),)
    )
    made = dict(call.initial_metadata())["x-request-id"]
    assert len(made) == 32 and made != "bad id with spaces"


def test_a_call_continues_the_clients_trace_with_a_span_per_stage(
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with GrpcService(tracing=Tracing.for_provider(provider)) as traced:
        traced.triton.infer(
            MODEL,
            [input_tensor(images_of(mnist_digits, 2))],
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01", "x-request-id": "t-1"},
        )
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server = spans["inference.GRPCInferenceService/ModelInfer"]
    assert format(server.context.trace_id, "032x") == trace_id
    assert server.parent is not None and format(server.parent.span_id, "016x") == parent_id
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["request.id"] == "t-1"
    for name in ("preprocess", "queue", "batch inference", "serialize"):
        child = spans[name]
        assert child.parent is not None and child.parent.span_id == server.context.span_id, name
    assert spans["batch inference"].attributes["batch.size"] == 2


def test_grpc_calls_are_counted_in_metrics(service: GrpcService) -> None:
    service.triton.is_server_live()
    metrics = service.http.get("/metrics").text
    assert 'cnn_serve_grpc_requests_total{code="OK",method="ServerLive"}' in metrics
    assert 'cnn_serve_grpc_request_duration_seconds_count{method="ServerLive"}' in metrics


def test_api_keys_are_read_from_the_call_metadata() -> None:
    with GrpcService(api_keys=KEY) as keyed:
        assert keyed.triton.is_server_live()  # Probes need no key.
        assert keyed.triton.is_server_ready()
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            keyed.triton.get_model_metadata(MODEL)
        zeros = np.zeros((1, 28, 28, 1), np.float32)
        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            keyed.triton.infer(MODEL, [input_tensor(zeros)], headers={"authorization": "Bearer x"})
        result = keyed.triton.infer(
            MODEL, [input_tensor(zeros)], headers={"authorization": f"Bearer {KEY}"}
        )
        assert result.as_numpy("probabilities").shape == (1, 10)
        index = keyed.triton.get_model_repository_index(headers={"authorization": f"Bearer {KEY}"})
        assert {model.name for model in index.models} >= {MODEL, "fashion-deep-cnn"}
        with pytest.raises(InferenceServerException, match="load parameters are not supported"):
            keyed.triton.load_model(
                MODEL, headers={"authorization": f"Bearer {KEY}"}, config='{"backend": "x"}'
            )


def test_the_repository_api_is_never_anonymous(service: GrpcService) -> None:
    with pytest.raises(InferenceServerException, match="PERMISSION_DENIED.*API keys"):
        service.triton.get_model_repository_index()
    with pytest.raises(InferenceServerException, match="PERMISSION_DENIED"):
        service.triton.unload_model(MODEL)
    assert service.triton.is_model_ready(MODEL)


def test_the_call_deadline_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    slow_model(monkeypatch, 0.5)
    with GrpcService() as slow:
        zeros = np.zeros((1, 28, 28, 1), np.float32)
        with pytest.raises(InferenceServerException, match="DEADLINE_EXCEEDED"):
            slow.triton.infer(MODEL, [input_tensor(zeros)], client_timeout=0.2)
        assert slow.triton.infer(MODEL, [input_tensor(zeros)]).as_numpy("probabilities") is not None


def test_overload_is_resource_exhausted_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    slow_model(monkeypatch, 0.6)
    with GrpcService(max_inflight_requests=1, overload_pause_ms=0) as busy:
        request = pb.ModelInferRequest(
            model_name=MODEL,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name="input", datatype="FP32", shape=[1, 28, 28, 1]
                )
            ],
            raw_input_contents=[np.zeros(784, "<f4").tobytes()],
        )
        first = busy.stub.ModelInfer.future(request)
        deadline = time.monotonic() + 10
        while "cnn_serve_inflight_requests 1.0" not in busy.http.get("/metrics").text:
            assert time.monotonic() < deadline, "the first call never got in"
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as raised:  # It holds the one slot.
            busy.stub.ModelInfer(request)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert int(dict(raised.value.trailing_metadata())["retry-after"]) >= 1
        assert len(first.result().raw_output_contents) == 1


def test_messages_over_the_body_limit_are_refused_before_parsing() -> None:
    with GrpcService(max_body_bytes=4096) as small:
        request = pb.ModelInferRequest(model_name=MODEL, raw_input_contents=[b"x" * 200_000])
        assert status_of(lambda: small.stub.ModelInfer(request)) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert small.triton.is_server_live()


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff", b"\x0a\x80", b"\x2a\x05abc"])
def test_bytes_that_are_no_message_are_invalid_argument(
    service: GrpcService, garbage: bytes
) -> None:
    call = service.channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    assert status_of(lambda: call(garbage)) == grpc.StatusCode.INVALID_ARGUMENT
    assert service.triton.is_server_live()


def test_calls_the_service_does_not_implement_are_unimplemented(service: GrpcService) -> None:
    call = service.channel.unary_unary("/inference.GRPCInferenceService/ModelStreamInfer")
    assert status_of(lambda: call(b"")) == grpc.StatusCode.UNIMPLEMENTED


# Any field of any message: what arrives is checked, never a defect (INTERNAL or UNKNOWN).
_names = st.sampled_from(["input", "probabilities", "conv1", "", "x" * 300, "saliency"])
_datatypes = st.sampled_from(["FP32", "UINT8", "FP16", "BYTES", "BOOL", "", "fp32"])
_parameters = st.dictionaries(
    st.sampled_from(["classification", "binary_data", "target", "method", "shared_memory_region"]),
    st.one_of(
        st.builds(lambda v: pb.InferParameter(bool_param=v), st.booleans()),
        st.builds(lambda v: pb.InferParameter(int64_param=v), st.integers(-(2**63), 2**63 - 1)),
        st.builds(lambda v: pb.InferParameter(string_param=v), st.text(max_size=20)),
        st.builds(lambda v: pb.InferParameter(double_param=v), st.floats()),
        st.just(pb.InferParameter()),
    ),
    max_size=3,
)
_tensors = st.builds(
    lambda name, datatype, shape, parameters, floats, uints: _input(
        name, datatype, shape, parameters, floats, uints
    ),
    _names,
    _datatypes,
    st.lists(st.integers(-(2**40), 2**40), max_size=6)
    | st.sampled_from([[1, 28, 28, 1], [2, 784], [1, 28, 28]]),
    _parameters,
    st.lists(st.floats(width=32), max_size=40),
    st.lists(st.integers(0, 2**32 - 1), max_size=40),
)


def _input(
    name: str,
    datatype: str,
    shape: list[int],
    parameters: dict[str, Any],
    floats: list[float],
    uints: list[int],
) -> Any:
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    for key, value in parameters.items():
        tensor.parameters[key].CopyFrom(value)
    tensor.contents.fp32_contents.extend(floats)
    tensor.contents.uint_contents.extend(uints)
    return tensor


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    model=st.sampled_from([MODEL, f"{MODEL}-features", "", "nope"]),
    version=st.sampled_from(["", "1", "0", "-1", "x"]),
    inputs=st.lists(_tensors, max_size=2),
    outputs=st.lists(st.tuples(_names, _parameters), max_size=3),
    raw=st.lists(st.binary(max_size=3200), max_size=2),
    parameters=_parameters,
)
def test_fuzzed_messages_never_reach_a_defect(
    service: GrpcService,
    model: str,
    version: str,
    inputs: list[Any],
    outputs: list[tuple[str, dict[str, Any]]],
    raw: list[bytes],
    parameters: dict[str, Any],
) -> None:
    request = pb.ModelInferRequest(
        model_name=model, model_version=version, inputs=inputs, raw_input_contents=raw
    )
    for key, value in parameters.items():
        request.parameters[key].CopyFrom(value)
    for name, output_parameters in outputs:
        output = request.outputs.add(name=name)
        for key, value in output_parameters.items():
            output.parameters[key].CopyFrom(value)
    try:
        service.stub.ModelInfer(request, timeout=30)
    except grpc.RpcError as error:
        assert error.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
        ), error.details()


def test_the_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "generate_grpc_stubs.sh"), str(tmp_path)],
        check=True,
        env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
    )
    for name in ("inference_pb2.py", "inference_pb2.pyi"):
        committed = (ROOT / "service" / "grpc_api" / name).read_text()
        assert (tmp_path / name).read_text() == committed, f"{name}: run the script"
