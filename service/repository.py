"""Finding the exported models on disk: ``<models_dir>/<name>/[<version>/]model.json`` +
``model.onnx``, and which versions of each to serve."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

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


def discover_serving_models(models_dir: Path, default_model: str) -> dict[str, list[VersionOnDisk]]:
    """``scan_repository`` at start-up, where every problem stops the service, checked to
    include a version of the default model.

    Raises:
        ModelLoadError: no models directory, an invalid policy, or no default model.
    """
    scan = scan_repository(models_dir)
    if scan.problems:
        raise ModelLoadError("; ".join(scan.problems.values()))
    selected = {name: found for name, found in scan.selected.items() if found}
    if default_model not in selected:
        raise ModelLoadError(
            f"default model {default_model!r} not found in {models_dir} "
            f"(found: {sorted(selected) or 'none'})"
        )
    return selected


# A model's versions: ``<models_dir>/<name>/<version>/model.json`` (a positive integer folder,
# as in Triton and TF Serving), or the flat ``<models_dir>/<name>/model.json``, version 1.
FLAT_VERSION = 1
POLICY_FILE = "config.json"


class VersionPolicy(BaseModel):
    """Which of a model's versions to serve: Triton's ``version_policy``, one of three forms.

    ``{"latest": {"num_versions": N}}`` (the default, N = 1), ``{"all": {}}`` or
    ``{"specific": {"versions": [1, 3]}}``, in ``<models_dir>/<name>/config.json``.
    """

    model_config = ConfigDict(extra="forbid")

    latest: dict[str, int] | None = None
    all: dict[str, Any] | None = None
    specific: dict[str, list[int]] | None = None

    def select(self, versions: list[int]) -> list[int]:
        """The versions to serve out of those on disk (ascending)."""
        ordered = sorted(versions)
        if self.all is not None:
            return ordered
        if self.specific is not None:
            wanted = set(self.specific.get("versions", []))
            return [version for version in ordered if version in wanted]
        count = (self.latest or {}).get("num_versions", 1)
        return ordered[-count:] if count > 0 else []

    @model_validator(mode="after")
    def _one_form(self) -> VersionPolicy:
        forms = [form for form in (self.latest, self.all, self.specific) if form is not None]
        if len(forms) > 1:
            raise ValueError("give one of latest, all or specific")
        return self


@dataclass(frozen=True)
class VersionOnDisk:
    """One version of a model as found on disk; ``fingerprint`` changes when its files do."""

    name: str
    version: int
    path: Path
    fingerprint: str


def read_version_policy(model_root: Path) -> VersionPolicy:
    """``<model_root>/config.json``'s ``version_policy``, or serve the latest version.

    Raises:
        ModelLoadError: the file is there but is not a valid policy.
    """
    path = model_root / POLICY_FILE
    if not path.is_file():
        return VersionPolicy()
    try:
        return VersionPolicy.model_validate(json.loads(path.read_text()).get("version_policy", {}))
    except (json.JSONDecodeError, ValidationError, AttributeError) as error:
        raise ModelLoadError(f"{path} is not a valid version policy: {error}") from error


def _fingerprint(version_dir: Path) -> str:
    """What changes when a version's files do: model.json's bytes, every other file's size and
    modification time (hashing the ONNX file on every poll would cost a read of it)."""
    digest = hashlib.sha256()
    for path in sorted(version_dir.iterdir()):
        if not path.is_file():
            continue
        if path.name == "model.json":
            digest.update(path.read_bytes())
        else:
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def versions_on_disk(model_root: Path) -> dict[int, Path]:
    """Version -> its folder: numbered sub-folders with a model.json, and the flat layout as
    version 1 (unless a folder ``1`` exists). Folders being written (``.staging-*``) are not
    numbers, so they are never seen half-written."""
    found = {
        int(path.parent.name): path.parent
        for path in model_root.glob("*/model.json")
        if path.parent.name.isdecimal() and path.parent.name.isascii() and int(path.parent.name)
    }
    if (model_root / "model.json").is_file():
        found.setdefault(FLAT_VERSION, model_root)
    return found


@dataclass(frozen=True)
class RepositoryScan:
    """What the repository holds now: the versions each model's policy selects, and the models
    that cannot be read (an invalid policy file) with why."""

    selected: dict[str, list[VersionOnDisk]]
    problems: dict[str, str]


def scan_repository(models_dir: Path) -> RepositoryScan:
    """Every model folder under ``models_dir`` and the versions its policy selects.

    Raises:
        ModelLoadError: the models directory does not exist.
    """
    if not models_dir.is_dir():
        raise ModelLoadError(f"models directory {models_dir} does not exist")
    selected: dict[str, list[VersionOnDisk]] = {}
    problems: dict[str, str] = {}
    for model_root in sorted(path for path in models_dir.iterdir() if path.is_dir()):
        on_disk = versions_on_disk(model_root)
        if model_root.name.startswith(".") or not on_disk:
            continue
        try:
            chosen = read_version_policy(model_root).select(list(on_disk))
            selected[model_root.name] = [
                VersionOnDisk(
                    model_root.name, version, on_disk[version], _fingerprint(on_disk[version])
                )
                for version in chosen
            ]
        except (ModelLoadError, OSError) as error:  # OSError: a file removed while reading.
            problems[model_root.name] = str(error)
    return RepositoryScan(selected, problems)


class VersionExistsError(FileExistsError):
    """The version to publish is already in the repository and replacing was not asked for."""


def publish_version(
    source: Path, model_root: Path, version: int | None = None, replace: bool = False
) -> int:
    """Copy the exported model in ``source`` into ``model_root/<version>/`` (the next version
    by default), so that a polling service never sees half a model: the files are written
    into a hidden staging folder beside it, then renamed into place in one step. The card's
    ``version`` is set to the folder's number.

    Returns:
        The version published.

    Raises:
        VersionExistsError: that version exists and ``replace`` is false.
        ModelLoadError: ``source`` is not a valid exported model (card or sha256).
    """
    read_model_card(source)
    model_root.mkdir(parents=True, exist_ok=True)
    existing = versions_on_disk(model_root)
    number = version if version is not None else max(existing, default=0) + 1
    target = model_root / str(number)
    if (number in existing or target.exists()) and not replace:
        raise VersionExistsError(f"{target} already exists; pass --force to replace it")
    staging = model_root / f".staging-{number}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=_not_model_files)
    card_path = staging / "model.json"
    card = json.loads(card_path.read_text())
    card["version"] = str(number)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    if target.exists():  # Replacing: the old folder leaves just before the new one arrives.
        retired = model_root / f".retired-{number}-{os.getpid()}"
        os.rename(target, retired)
        os.rename(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, target)
    return number


def _not_model_files(directory: str, names: list[str]) -> list[str]:
    """What a copy of a (flat) model folder leaves out: its versions, hidden folders, policy."""
    return [
        name for name in names if name.isdecimal() or name.startswith(".") or name == POLICY_FILE
    ]
