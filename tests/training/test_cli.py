"""``python -m training``: it never replaces a model by surprise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR
from training.cli import _parser, _warn_about_stale_variants, main


@pytest.fixture()
def models_dir(tmp_path: Path) -> Path:
    """A copy of the shipped MNIST model and its int8 variant."""
    for name in ("mnist-deep-cnn", "mnist-deep-cnn-int8"):
        shutil.copytree(MODELS_DIR / name, tmp_path / name)
    return tmp_path


def test_default_name_is_not_a_shipped_model() -> None:
    for command in ("train", "evaluate", "export", "all"):
        name = _parser().parse_args([command]).name
        assert name == "my-model" and not (MODELS_DIR / name).exists()


@pytest.mark.parametrize("command", ["all", "export"])
def test_an_existing_model_is_refused_before_any_work(
    models_dir: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    before = (models_dir / "mnist-deep-cnn" / "model.onnx").read_bytes()
    code = main(
        [command, "--name", "mnist-deep-cnn", "--models-dir", str(models_dir), "--data", "/nope"]
    )
    assert code == 1
    error = capsys.readouterr().err
    assert "already holds a model" in error and "--force" in error
    assert (models_dir / "mnist-deep-cnn" / "model.onnx").read_bytes() == before


def test_quantize_refuses_to_replace_an_int8_variant(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["quantize", "--name", "mnist-deep-cnn", "--models-dir", str(models_dir)])
    assert code == 1 and "mnist-deep-cnn-int8 already holds a model" in capsys.readouterr().err


def test_variants_of_a_replaced_model_are_named_as_stale(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = json.loads((models_dir / "mnist-deep-cnn-int8" / "model.json").read_text())
    assert card["quantization"]["source_model"] == "mnist-deep-cnn"
    _warn_about_stale_variants(models_dir / "mnist-deep-cnn")
    warning = capsys.readouterr().err
    assert "mnist-deep-cnn-int8" in warning and "stale" in warning


def test_offline_training_without_data_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import keras

    def offline() -> None:
        raise Exception("URL fetch failure on https://example.invalid/mnist.npz: None")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    code = main(["train", "--name", "offline", "--runs-dir", str(tmp_path), "--epochs", "1"])
    error = capsys.readouterr().err
    assert code == 1
    assert error.count("\n") == 1 and error.startswith("error: MNIST is not on this machine")


def test_all_with_publish_writes_the_next_version_and_leaves_the_served_one(
    models_dir: Path, tmp_path: Path, mnist_digits: tuple[object, object]
) -> None:
    """``all --publish``: trained, exported and checked beside the run, then published as
    ``models/<name>/2/`` (the flat layout is version 1) in one rename."""
    import numpy as np

    images, labels = mnist_digits
    data = tmp_path / "mnist.npz"
    np.savez(data, x_train=images[:400], y_train=labels[:400], x_test=images[400:],
             y_test=labels[400:])  # fmt: skip
    before = (models_dir / "mnist-deep-cnn" / "model.onnx").read_bytes()
    code = main(
        ["all", "--name", "mnist-deep-cnn", "--data", str(data), "--epochs", "1",
         "--validation-size", "100", "--verify-images", "100", "--runs-dir", str(tmp_path / "runs"),
         "--models-dir", str(models_dir), "--corpus", str(tmp_path / "no-corpus"), "--publish"]
    )  # fmt: skip
    assert code == 0
    published = models_dir / "mnist-deep-cnn" / "2"
    card = json.loads((published / "model.json").read_text())
    assert card["version"] == "2" and card["name"] == "mnist-deep-cnn"
    assert (published / "model.onnx").is_file() and (published / "reliability.npz").is_file()
    assert (models_dir / "mnist-deep-cnn" / "model.onnx").read_bytes() == before
    assert not [p for p in (models_dir / "mnist-deep-cnn").iterdir() if p.name.startswith(".")]
    assert main(["publish", "--name", "mnist-deep-cnn", "--source", str(published),
                 "--models-dir", str(models_dir), "--version", "2"]) == 1  # fmt: skip
