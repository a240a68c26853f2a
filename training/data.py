"""Loading MNIST and Fashion-MNIST from IDX files, a Keras ``mnist.npz``, or the Keras download.

Every loader returns pixels scaled to [0, 1] as float32 of shape (N, 28, 28, 1) and integer labels,
split the way the Keras tutorials split them: the first 50,000 training images to fit, the last
10,000 held out for validation, and the 10,000 test images kept for the final evaluation only.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SIZE = 28
VALIDATION_SIZE = 10_000
MNIST_LABELS = [str(digit) for digit in range(10)]
FASHION_MNIST_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("mnist", "fashion_mnist")

# IDX magic numbers: two zero bytes, the type code 0x08 (unsigned byte), and the number of dims.
_IDX_UBYTE_TYPE = 0x08
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DatasetError(ValueError):
    """A data file is missing, corrupt, or does not match its partner file."""


@dataclass(frozen=True)
class Splits:
    """Train/validation/test arrays ready for Keras.

    Images are float32 in [0, 1] with shape (N, 28, 28, 1); labels are int64 of shape (N,).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str]
    source: str


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed or raw) of unsigned bytes.

    Args:
        path: the IDX file; a name ending in ``.gz`` is decompressed.

    Returns:
        uint8 array shaped as the file's header says, e.g. (N, 28, 28) or (N,).

    Raises:
        DatasetError: the file is missing, truncated, or not an IDX file of unsigned bytes.
    """
    if not path.is_file():
        raise DatasetError(f"IDX file not found: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != _IDX_UBYTE_TYPE:
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DatasetError(f"{path} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = int(np.prod(shape)) if shape else 0
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_size)
    if data.size != expected:
        raise DatasetError(
            f"{path} holds {data.size} bytes of data but its header promises {expected} {shape}"
        )
    return data.reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{stem}[.gz] not found in {directory}")


def load_idx_directory(directory: Path) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Read the four MNIST-format IDX files of a directory.

    Returns:
        ((train_images, train_labels), (test_images, test_labels)), uint8, images (N, 28, 28).
    """
    if not directory.is_dir():
        raise DatasetError(f"dataset directory not found: {directory}")
    arrays = {key: read_idx(_find_idx(directory, stem)) for key, stem in _IDX_FILES.items()}
    return (
        _checked_pair(arrays["train_images"], arrays["train_labels"], "train"),
        _checked_pair(arrays["test_images"], arrays["test_labels"], "test"),
    )


def load_npz(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Read a Keras-style ``mnist.npz`` (keys x_train, y_train, x_test, y_test)."""
    if not path.is_file():
        raise DatasetError(f"npz file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
            if missing:
                raise DatasetError(f"{path} lacks the arrays {sorted(missing)}")
            train = (archive["x_train"], archive["y_train"])
            test = (archive["x_test"], archive["y_test"])
    except (OSError, ValueError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"cannot read {path}: {error}") from error
    return _checked_pair(*train, "train"), _checked_pair(*test, "test")


def _checked_pair(images: np.ndarray, labels: np.ndarray, split: str) -> tuple[np.ndarray, ...]:
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DatasetError(f"{split} images have shape {images.shape}, expected (N, 28, 28)")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"{split} has {images.shape[0]} images but labels of shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{split} labels fall outside 0..9")
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)


def _keras_download() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    import keras  # Imported lazily: the download is the last resort.

    try:
        train, test = keras.datasets.mnist.load_data()
    except Exception as error:  # Keras wraps every failed fetch in a bare Exception.
        raise DatasetError(
            "MNIST is not on this machine and could not be downloaded "
            f"({str(error).splitlines()[0][:200]}); pass --data with a directory of the four "
            "MNIST IDX files or an mnist.npz"
        ) from None
    return _checked_pair(*train, "train"), _checked_pair(*test, "test")


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def load_dataset(
    name: str, source: Path | None = None, validation_size: int = VALIDATION_SIZE
) -> Splits:
    """Load a dataset by name and split it for training.

    Args:
        name: ``mnist`` or ``fashion_mnist``.
        source: a directory of IDX files or an ``.npz`` file. For MNIST, ``None`` falls back to
            ``keras.datasets.mnist.load_data()``; for Fashion-MNIST it means the Debian package's
            directory.
        validation_size: how many of the last training images to hold out.

    Returns:
        The scaled splits and the class names.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if source is None and name == "fashion_mnist":
        source = FASHION_MNIST_DEFAULT_DIR
    if source is None:
        (train_images, train_labels), (test_images, test_labels) = _keras_download()
        source_text = "keras.datasets.mnist"
    else:
        loader = load_npz if source.suffix == ".npz" else load_idx_directory
        (train_images, train_labels), (test_images, test_labels) = loader(source)
        source_text = str(source)
    if not 0 <= validation_size < train_images.shape[0]:
        raise DatasetError(
            f"validation_size {validation_size} must be below the {train_images.shape[0]} "
            "training images"
        )
    fit_count = train_images.shape[0] - validation_size
    x_train_all = scale_images(train_images)
    return Splits(
        x_train=x_train_all[:fit_count],
        y_train=train_labels[:fit_count],
        x_val=x_train_all[fit_count:],
        y_val=train_labels[fit_count:],
        x_test=scale_images(test_images),
        y_test=test_labels,
        labels=MNIST_LABELS if name == "mnist" else FASHION_MNIST_LABELS,
        source=source_text,
    )
