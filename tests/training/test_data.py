"""Dataset loaders on small IDX and npz files written by the tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from training.data import (
    FASHION_MNIST_LABELS,
    DatasetError,
    load_dataset,
    load_idx_directory,
    read_idx,
)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(directory: Path, train: int, test: int, compress: bool) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(test) % 10,
    }
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_directory_loads_and_splits(tmp_path: Path, compress: bool) -> None:
    write_idx_set(tmp_path, train=60, test=20, compress=compress)
    splits = load_dataset("mnist", tmp_path, validation_size=10)
    assert splits.x_train.shape == (50, 28, 28, 1)
    assert splits.x_val.shape == (10, 28, 28, 1)
    assert splits.x_test.shape == (20, 28, 28, 1)
    assert splits.x_train.dtype == np.float32
    assert 0.0 <= splits.x_train.min() and splits.x_train.max() <= 1.0
    # The validation split is the *last* training images, as in the tutorial.
    raw_train, _ = load_idx_directory(tmp_path)
    np.testing.assert_allclose(splits.x_val[..., 0], raw_train[0][50:] / 255.0, rtol=1e-6)
    assert splits.y_val.tolist() == (np.arange(50, 60) % 10).tolist()


def test_npz_loads_like_keras(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        y_train=np.arange(30) % 10,
        x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        y_test=np.arange(5),
    )
    splits = load_dataset("mnist", path, validation_size=10)
    assert splits.x_train.shape[0] == 20 and splits.x_test.shape[0] == 5
    assert splits.labels == [str(digit) for digit in range(10)]


def test_fashion_mnist_has_its_class_names(tmp_path: Path) -> None:
    write_idx_set(tmp_path, train=20, test=5, compress=True)
    splits = load_dataset("fashion_mnist", tmp_path, validation_size=5)
    assert splits.labels == FASHION_MNIST_LABELS
    assert splits.labels[9] == "Ankle boot"


def test_missing_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_dataset("mnist", tmp_path / "nowhere")


def test_missing_file_is_reported(tmp_path: Path) -> None:
    write_idx_set(tmp_path, train=20, test=5, compress=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)


def test_bad_magic_number_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(DatasetError, match="magic number"):
        read_idx(path)


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "short-idx"
    path.write_bytes(idx_bytes(np.zeros((4, 28, 28)))[:-100])
    with pytest.raises(DatasetError, match="header promises"):
        read_idx(path)


def test_corrupt_gzip_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(DatasetError, match="cannot read"):
        read_idx(path)


def test_label_count_mismatch_is_reported(tmp_path: Path) -> None:
    write_idx_set(tmp_path, train=20, test=5, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(4)))
    with pytest.raises(DatasetError, match="5 images but labels"):
        load_dataset("mnist", tmp_path)


def test_unknown_dataset_is_rejected() -> None:
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("cifar10")


def test_mnist_without_a_source_falls_back_to_keras(monkeypatch: pytest.MonkeyPatch) -> None:
    """No directory or npz given: the loader asks keras.datasets.mnist (stubbed: no network)."""
    import keras

    rng = np.random.default_rng(2)
    calls = []

    def fake_load_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        calls.append(True)
        return (
            (rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), np.arange(30) % 10),
            (rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), np.arange(6) % 10),
        )

    monkeypatch.setattr(keras.datasets.mnist, "load_data", fake_load_data)
    splits = load_dataset("mnist", None, validation_size=10)
    assert calls == [True]
    assert splits.source == "keras.datasets.mnist"
    assert splits.x_train.shape == (20, 28, 28, 1) and splits.x_test.shape == (6, 28, 28, 1)


def test_mnist_offline_without_data_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    def offline() -> None:
        # What keras.utils.get_file raises when the download host cannot be resolved.
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
            "mnist.npz: None -- [Errno -2] Name or service not known"
        )

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DatasetError) as raised:
        load_dataset("mnist", None)
    message = str(raised.value)
    assert "\n" not in message and "could not be downloaded" in message
    assert "--data" in message and "IDX" in message and "mnist.npz" in message
