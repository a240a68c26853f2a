"""Finding the exported models on disk: ``<models_dir>/<name>/model.json`` + ``model.onnx``."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from model_card import ModelCard, sha256_of
from service.errors import ModelLoadError


def read_model_card(model_dir: Path) -> ModelCard:
    """Parse ``model.json`` and check that ``model.onnx`` is the file it describes.

    Raises:
        ModelLoadError: missing/invalid ``model.json``, missing ONNX file, or sha256 mismatch.
    """
    card_path = model_dir / "model.json"
    try:
        raw = json.loads(card_path.read_text())
        card = ModelCard.from_json(raw)
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


def discover_serving_models(models_dir: Path, default_model: str) -> dict[str, Path]:
    """``discover_models``, checked to include the default model.

    Raises:
        ModelLoadError: no models directory, or no default model in it.
    """
    model_dirs = discover_models(models_dir)
    if default_model not in model_dirs:
        raise ModelLoadError(
            f"default model {default_model!r} not found in {models_dir} "
            f"(found: {sorted(model_dirs) or 'none'})"
        )
    return model_dirs
