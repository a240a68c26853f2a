"""Triton's system shared-memory extension: regions of ``/dev/shm`` that a client on the same
host registers, so that tensors travel through memory instead of the HTTP body.

Off unless ``CNN_SERVE_SHARED_MEMORY`` is on: a registered region lets a client have the server
read and write a file of ``/dev/shm`` with the server's permissions, which is only meant for
clients on the same host. The registrations are files in one directory that every worker
process reads (``REGISTRY_ENV``, made by ``python -m service`` before its workers start), so a
region registered through one worker is known to all of them.

Specification: triton-inference-server/server ``docs/protocol/extension_shared_memory.md``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from service.errors import BadRequestError

SHARED_MEMORY_DIR = Path("/dev/shm")
REGISTRY_ENV = "CNN_SERVE_SHARED_MEMORY_REGISTRY"  # Set by python -m service for its workers.
REGION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
# shm_open's names: one component after the leading slash, as tritonclient's keys are.
REGION_KEY = re.compile(r"/[A-Za-z0-9_.-]{1,200}")


@dataclass(frozen=True)
class Region:
    """A registered region: ``byte_size`` bytes at ``offset`` of ``/dev/shm/<key>``."""

    name: str
    key: str
    offset: int
    byte_size: int

    @property
    def path(self) -> Path:
        return SHARED_MEMORY_DIR / self.key.lstrip("/")


class SharedMemoryRegistry:
    """The registered regions, kept as one JSON file each in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def for_this_process(cls) -> SharedMemoryRegistry:
        """The workers' shared registry, or a private one for a single process (tests)."""
        shared = os.environ.get(REGISTRY_ENV)
        directory = Path(shared) if shared else Path(tempfile.mkdtemp(prefix="cnn-serve-shm-"))
        return cls(directory)

    def register(self, name: str, key: str, offset: int, byte_size: int) -> Region:
        """Raises:
        BadRequestError: a bad name or key, a region already registered under ``name``, or
            one that does not lie inside its ``/dev/shm`` file.
        """
        if not REGION_NAME.fullmatch(name):
            raise BadRequestError(f"region name {name!r}: use 1-128 letters, digits, _ . -")
        if not REGION_KEY.fullmatch(key):
            raise BadRequestError(f"shared-memory key {key!r}: expected /name, as shm_open takes")
        region = Region(name, key, offset, byte_size)
        if self._file(name).exists():
            raise BadRequestError(f"shared memory region '{name}' is already registered")
        try:
            size = region.path.stat().st_size
        except OSError:
            raise BadRequestError(f"unable to open shared memory region key '{key}'") from None
        if offset + byte_size > size:
            raise BadRequestError(
                f"region '{name}': offset {offset} + byte_size {byte_size} exceeds the "
                f"{size} bytes of '{key}'"
            )
        staged = self._file(name).with_suffix(".tmp")
        staged.write_text(json.dumps(asdict(region)))
        staged.replace(self._file(name))  # Atomic: other workers see all of it or none.
        return region

    def unregister(self, name: str | None) -> None:
        """One region, or all of them when ``name`` is None (unknown names are no error)."""
        files = [self._file(name)] if name else list(self.directory.glob("*.json"))
        for file in files:
            file.unlink(missing_ok=True)

    def status(self, name: str | None) -> list[Region]:
        """Raises:
        BadRequestError: ``name`` is not registered.
        """
        if name:
            return [self.region(name)]
        return sorted(
            (self._read(file) for file in self.directory.glob("*.json")), key=lambda r: r.name
        )

    def region(self, name: str) -> Region:
        """Raises:
        BadRequestError: ``name`` is not registered.
        """
        if not REGION_NAME.fullmatch(name) or not self._file(name).exists():
            raise BadRequestError(f"unable to find shared memory region: '{name}'")
        return self._read(self._file(name))

    def read(self, name: str, offset: int, byte_size: int) -> bytes:
        """``byte_size`` bytes at ``offset`` inside region ``name``."""
        region = self._checked(name, offset, byte_size)
        with region.path.open("rb") as file:
            file.seek(region.offset + offset)
            data = file.read(byte_size)
        if len(data) != byte_size:
            raise BadRequestError(f"shared memory region '{name}' is shorter than registered")
        return data

    def write(self, name: str, offset: int, byte_size: int, data: bytes) -> None:
        """``data`` at ``offset`` inside region ``name``, which offers ``byte_size`` bytes."""
        region = self._checked(name, offset, byte_size)
        if len(data) > byte_size:
            raise BadRequestError(
                f"the output needs {len(data)} bytes; shared memory region '{name}' was given "
                f"shared_memory_byte_size {byte_size}"
            )
        with region.path.open("r+b") as file:
            file.seek(region.offset + offset)
            file.write(data)

    def _checked(self, name: str, offset: int, byte_size: int) -> Region:
        region = self.region(name)
        if offset < 0 or byte_size < 0 or offset + byte_size > region.byte_size:
            raise BadRequestError(
                f"offset {offset} + byte_size {byte_size} lies outside shared memory region "
                f"'{name}' of {region.byte_size} bytes"
            )
        return region

    def _file(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    @staticmethod
    def _read(file: Path) -> Region:
        return Region(**json.loads(file.read_text()))
