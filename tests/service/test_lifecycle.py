"""Model versions, version policies, the repository API and live reload, in one process."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_card import sha256_of
from service.app import create_app
from service.repository import VersionPolicy, publish_version, scan_repository, versions_on_disk
from tests.conftest import MODELS_DIR, make_settings

MODEL = "mnist-deep-cnn"
KEY = {"authorization": "Bearer lifecycle-key"}


def digits(mnist_digits: tuple[np.ndarray, np.ndarray], count: int = 4) -> dict[str, object]:
    return {"instances": (mnist_digits[0][:count] / 255.0).tolist()}


def other_weights(target: Path) -> None:
    """A version of MNIST_MODEL with other weights: the int8 model's files under its name."""
    shutil.copytree(MODELS_DIR / f"{MODEL}-int8", target)
    card = json.loads((target / "model.json").read_text())
    card["name"] = MODEL
    (target / "model.json").write_text(json.dumps(card))


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """The default model as version 1 of a versioned layout, and the fashion model flat."""
    root = tmp_path / "models"  # Beside it, tmp_path / "exported" is a model to publish.
    shutil.copytree(MODELS_DIR / MODEL, root / MODEL / "1")
    shutil.copytree(MODELS_DIR / "fashion-deep-cnn", root / "fashion-deep-cnn")
    return root


@pytest.fixture
def keyed(repository: Path) -> Iterator[TestClient]:
    """The app on ``repository``, polling off, API keys on (so the repository API is served)."""
    settings = make_settings(models_dir=repository, repository_poll_s=0, api_keys="lifecycle-key")
    with TestClient(create_app(settings), headers=KEY) as client:
        yield client


def load(client: TestClient, name: str = MODEL) -> int:
    return client.post(f"/v2/repository/models/{name}/load").status_code


def test_flat_and_versioned_layouts_and_the_policies(tmp_path: Path) -> None:
    shutil.copytree(MODELS_DIR / MODEL, tmp_path / MODEL)  # Flat: version 1.
    (tmp_path / MODEL / "3").mkdir()
    (tmp_path / MODEL / "3" / "model.json").write_text("{}")
    (tmp_path / MODEL / ".staging-4-1").mkdir()  # Half written: never seen.
    (tmp_path / MODEL / ".staging-4-1" / "model.json").write_text("{}")
    assert sorted(versions_on_disk(tmp_path / MODEL)) == [1, 3]
    assert VersionPolicy().select([1, 3, 2]) == [3]
    assert VersionPolicy(latest={"num_versions": 2}).select([1, 3, 2]) == [2, 3]
    assert VersionPolicy(all={}).select([2, 1]) == [1, 2]
    assert VersionPolicy(specific={"versions": [1, 5]}).select([1, 2]) == [1]
    (tmp_path / MODEL / "config.json").write_text('{"version_policy": {"all": {}, "latest": {}}}')
    scan = scan_repository(tmp_path)
    assert MODEL in scan.problems and "one of latest, all or specific" in scan.problems[MODEL]


def test_every_version_is_addressable_and_the_default_is_the_highest(
    repository: Path, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    other_weights(repository / MODEL / "2")
    (repository / MODEL / "config.json").write_text('{"version_policy": {"all": {}}}')
    with TestClient(create_app(make_settings(models_dir=repository))) as client:
        body = digits(mnist_digits)
        assert client.post("/predict", json=body).json()["version"] == "2"
        for version in ("1", "2"):
            answer = client.post(f"/models/{MODEL}/versions/{version}/predict", json=body)
            assert answer.status_code == 200 and answer.json()["version"] == version
            one = digits(mnist_digits, 1)
            maps = client.post(f"/models/{MODEL}/versions/{version}/feature-maps", json=one)
            assert maps.status_code == 200 and maps.json()["version"] == version
            v2 = client.post(
                f"/v2/models/{MODEL}/versions/{version}/infer",
                json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 28, 28, 1],
                                  "data": np.zeros(784).tolist()}]},
            )  # fmt: skip
            assert v2.status_code == 200 and v2.json()["model_version"] == version
        missing = client.post(f"/models/{MODEL}/versions/7/predict", json=body)
        assert missing.status_code == 404
        assert missing.json()["error"]["details"]["versions"] == [1, 2]
        assert client.get(f"/v2/models/{MODEL}/versions/7").status_code == 404
        assert client.get(f"/v2/models/{MODEL}").json()["versions"] == ["1", "2"]
        assert client.get("/models").json()["models"][1]["versions"] == ["1", "2"]
        ready = client.get("/health/ready").json()
        assert ready["versions"] == {"fashion-deep-cnn": [1], MODEL: [1, 2]}


def test_a_published_version_is_loaded_and_becomes_the_default(
    keyed: TestClient, repository: Path, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    body = digits(mnist_digits)
    before = keyed.post("/predict", json=body).json()
    assert before["version"] == "1"
    staged = repository.parent / "exported"
    other_weights(staged)
    assert publish_version(staged, repository / MODEL) == 2
    assert load(keyed) == 200
    after = keyed.post("/predict", json=body).json()
    assert after["version"] == "2"
    assert [p["label"] for p in after["predictions"]] == [str(d) for d in mnist_digits[1][:4]]
    # The default policy serves the latest version only: version 1 was retired.
    assert keyed.get(f"/v2/models/{MODEL}").json()["versions"] == ["2"]
    index = keyed.post("/v2/repository/index").json()
    assert {"name": MODEL, "version": "2", "state": "READY", "reason": ""} in index
    assert {
        "name": MODEL,
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "not selected by the version policy",
    } in index


def _bad_sha256(version: Path) -> None:
    onnx = version / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\0")


def _truncated_onnx(version: Path) -> None:
    onnx = version / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:5000])
    card = json.loads((version / "model.json").read_text())
    card["files"]["sha256"] = sha256_of(onnx)
    (version / "model.json").write_text(json.dumps(card))


def _wrong_input_shape(version: Path) -> None:
    card = json.loads((version / "model.json").read_text())
    card["input"]["shape"] = [None, 32, 32, 1]
    card["preprocessing"]["canvas"] = 32
    (version / "model.json").write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (_bad_sha256, "sha256"),
        (_truncated_onnx, "onnxruntime cannot load"),
        (_wrong_input_shape, "32"),
    ],
)
def test_a_corrupt_version_is_refused_and_the_served_one_keeps_serving(
    keyed: TestClient,
    repository: Path,
    mnist_digits: tuple[np.ndarray, np.ndarray],
    corrupt: object,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    version = repository / MODEL / "2"
    shutil.copytree(repository / MODEL / "1", version)
    corrupt(version)  # type: ignore[operator]
    assert load(keyed) == 200  # Version 1 still loads: the model is served.
    answer = keyed.post("/predict", json=digits(mnist_digits))
    assert answer.status_code == 200 and answer.json()["version"] == "1"
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and f"model {MODEL} version 2 refused" in refusals[0]
    assert reason in refusals[0]
    metrics = keyed.get("/metrics").text
    assert f'cnn_serve_model_load_refusals_total{{model="{MODEL}"}} 1.0' in metrics
    entry = next(e for e in keyed.post("/v2/repository/index").json() if e["version"] == "2")
    assert entry["state"] == "UNAVAILABLE" and reason in entry["reason"]
    assert load(keyed) == 200  # The same files are not tried (or logged) again.
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1


def test_a_changed_version_that_fails_leaves_its_old_files_serving(
    keyed: TestClient, repository: Path, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    _bad_sha256(repository / MODEL / "1")
    assert load(keyed) == 200
    assert keyed.post("/predict", json=digits(mnist_digits)).status_code == 200


def test_unload_and_load_through_the_api(keyed: TestClient, repository: Path) -> None:
    fashion = "/models/fashion-deep-cnn/predict"
    blank = {"instances": [np.zeros((28, 28)).tolist()]}
    assert keyed.post(fashion, json=blank).status_code == 200
    assert keyed.post("/v2/repository/models/fashion-deep-cnn/unload").status_code == 200
    assert keyed.post(fashion, json=blank).status_code == 404
    assert keyed.get("/v2/models/fashion-deep-cnn/ready").status_code == 404
    index = keyed.post("/v2/repository/index", json={"ready": True}).json()
    assert {entry["name"] for entry in index} == {MODEL}
    gone = next(e for e in keyed.post("/v2/repository/index").json() if e["name"] != MODEL)
    assert gone == {"name": "fashion-deep-cnn", "version": "1", "state": "UNAVAILABLE",
                    "reason": "unloaded"}  # fmt: skip
    assert load(keyed, "fashion-deep-cnn") == 200
    assert keyed.post(fashion, json=blank).status_code == 200


def test_the_repository_api_refuses_what_it_cannot_do(keyed: TestClient) -> None:
    default = keyed.post(f"/v2/repository/models/{MODEL}/unload")
    assert default.status_code == 400 and "default model" in default.json()["error"]
    unknown = keyed.post("/v2/repository/models/resnet/load")
    assert unknown.status_code == 400 and "no such model" in unknown.json()["error"]
    assert keyed.post("/v2/repository/models/resnet/unload").status_code == 400
    files = keyed.post(
        f"/v2/repository/models/{MODEL}/load", json={"parameters": {"file:1/model.onnx": "AA"}}
    )
    assert files.status_code == 400 and "not supported" in files.json()["error"]
    assert keyed.post("/v2/repository/index", content=b"{").status_code == 400


def test_the_repository_api_needs_the_operator_port_or_an_api_key(repository: Path) -> None:
    anonymous = make_settings(models_dir=repository, operator_port=9911, port=9910)
    app = create_app(anonymous)
    with TestClient(app, base_url="http://testserver:9910") as public:
        refused = public.post("/v2/repository/index")
        assert refused.status_code == 404 and "operator port" in refused.json()["error"]
    with TestClient(app, base_url="http://testserver:9911") as operator:
        assert operator.post("/v2/repository/index").status_code == 200
    keyed = create_app(make_settings(models_dir=repository, api_keys="lifecycle-key"))
    with TestClient(keyed) as client:
        assert client.post("/v2/repository/index").status_code == 401
        assert client.post("/v2/repository/index", headers=KEY).status_code == 200


def test_a_model_removed_from_disk_is_unloaded_but_the_default_never_is(
    keyed: TestClient, repository: Path
) -> None:
    shutil.rmtree(repository / "fashion-deep-cnn")
    shutil.rmtree(repository / MODEL)
    assert load(keyed, "fashion-deep-cnn") == 400
    assert keyed.post("/models/fashion-deep-cnn/predict", json={}).status_code == 404
    blank = {"instances": [np.zeros((28, 28)).tolist()]}
    assert keyed.post("/predict", json=blank).status_code == 200
    assert keyed.get("/health/ready").json()["versions"] == {MODEL: [1]}


def test_polling_picks_up_a_new_version_without_any_call(
    repository: Path, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    settings = make_settings(models_dir=repository, repository_poll_s=0.2)
    with TestClient(create_app(settings)) as client:
        other_weights(repository.parent / "exported")
        publish_version(repository.parent / "exported", repository / MODEL)
        for _ in range(100):
            if client.post("/predict", json=digits(mnist_digits)).json()["version"] == "2":
                break
            client.portal.call(_pause)  # type: ignore[union-attr]
        assert client.post("/predict", json=digits(mnist_digits)).json()["version"] == "2"


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.05)


def test_load_parameters_are_refused_not_ignored(keyed: TestClient) -> None:
    """A config override or files in the request would be a model the disk does not hold."""
    answer = keyed.post(
        f"/v2/repository/models/{MODEL}/load", json={"parameters": {"config": "{}"}}
    )
    assert answer.status_code == 400
    assert "load parameters are not supported (config)" in answer.json()["error"]
