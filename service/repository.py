"""Finding the exported models on disk: ``<models_dir>/<name>/model.json`` + ``model.onnx``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from service.errors import ModelLoadError

PreprocessMethod = Literal["mnist", "resize", "none"]


class InputSpec(BaseModel):
    name: str
    shape: list[int | None]
    dtype: str
    value_range: list[float]


class PreprocessingSpec(BaseModel):
    default: PreprocessMethod
    invert: Literal["auto", "never", "always"] = "auto"
    digit_box: int = 20
    canvas: int = 28


class FeatureMapSpec(BaseModel):
    layer: str
    output: str
    kind: str
    shape: list[int]


class FilesSpec(BaseModel):
    onnx: str
    sha256: str


class ModelCard(BaseModel):
    """The parts of ``model.json`` the service relies on; the rest is kept in ``raw``."""

    model_config = ConfigDict(extra="ignore")

    name: str
    version: str
    input: InputSpec
    preprocessing: PreprocessingSpec
    labels: list[str]
    outputs: dict[str, str]
    feature_maps: list[FeatureMapSpec]
    files: FilesSpec
    raw: dict[str, Any] = {}

    @property
    def probabilities_output(self) -> str:
        return self.outputs["probabilities"]

    def feature_map(self, layer: str) -> FeatureMapSpec | None:
        return next((spec for spec in self.feature_maps if spec.layer == layer), None)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_model_card(model_dir: Path) -> ModelCard:
    """Parse ``model.json`` and check that ``model.onnx`` is the file it describes.

    Raises:
        ModelLoadError: missing/invalid ``model.json``, missing ONNX file, or sha256 mismatch.
    """
    card_path = model_dir / "model.json"
    try:
        raw = json.loads(card_path.read_text())
        card = ModelCard.model_validate({**raw, "raw": raw})
    except FileNotFoundError:
        raise ModelLoadError(f"{card_path} not found") from None
    except (json.JSONDecodeError, ValidationError, TypeError) as error:
        raise ModelLoadError(f"{card_path} is not a valid model card: {error}") from error
    onnx_path = model_dir / card.files.onnx
    if not onnx_path.is_file():
        raise ModelLoadError(f"{onnx_path} not found (named in {card_path})")
    actual = sha256_of(onnx_path)
    if actual != card.files.sha256:
        raise ModelLoadError(
            f"{onnx_path} has sha256 {actual}, but {card_path} says {card.files.sha256}: "
            "the file is corrupt or was replaced without re-exporting"
        )
    return card


def discover_models(models_dir: Path) -> dict[str, Path]:
    """Model name -> its directory, for every sub-directory holding a ``model.json``."""
    if not models_dir.is_dir():
        raise ModelLoadError(f"models directory {models_dir} does not exist")
    return {path.parent.name: path.parent for path in sorted(models_dir.glob("*/model.json"))}
