"""Model versions that change while the service runs: load, check, warm up, swap, retire.

The repository (``service/repository.py``) says which versions each model's policy selects.
``ModelLifecycle.sync`` makes the served set equal to it, safely:

- a new or changed version is loaded beside the old ones, in a thread, with the same checks as
  at start-up (sha256 against its card, ONNX signature against the card, a warm-up run); only
  then is the whole set swapped in at once (``ServingState.serve``);
- a version that fails any check is refused with one log line and
  ``cnn_serve_model_load_refusals_total``; what served before keeps serving, and the same files
  are not tried again until they change;
- a version that leaves the set is retired, not stopped: requests that already hold it finish
  on it (``DynamicBatcher.retire``);
- the default model is never dropped: if it disappears from disk or fails, its last good
  versions keep serving (``/predict`` must not start failing because of a file operation).

Every worker process runs its own lifecycle and converges on the same set: each polls the disk
every ``REPOSITORY_POLL_S`` seconds, and each watches the repository API's shared control file
(``RepositoryControl``), so a load or unload through any worker reaches all of them within
``CONTROL_CHECK_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from service.batching import DynamicBatcher
from service.config import Settings
from service.errors import BadRequestError, ModelLoadError
from service.metrics import ServiceMetrics
from service.repository import (
    VersionOnDisk,
    discover_serving_models,
    scan_repository,
    versions_on_disk,
)
from service.runtime import ModelRuntime, Scored
from service.state import ServingState, Versions

logger = logging.getLogger("service.lifecycle")
CONTROL_ENV = "CNN_SERVE_REPOSITORY_CONTROL"  # Set by python -m service for its workers.
CONTROL_CHECK_S = 1.0
BatcherFactory = Callable[[ModelRuntime], DynamicBatcher[Scored]]


@dataclass(frozen=True)
class ControlState:
    """What the repository API has asked for: models unloaded (until loaded again), and a
    generation that every call raises, so that every worker re-reads the disk after one."""

    generation: int = 0
    unloaded: frozenset[str] = frozenset()


class RepositoryControl:
    """The repository API's requests, in a JSON file every worker reads (``CONTROL_ENV``), or
    in memory for a single process that was not started by ``python -m service``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory = ControlState()

    @classmethod
    def for_this_process(cls) -> RepositoryControl:
        shared = os.environ.get(CONTROL_ENV)
        return cls(Path(shared) if shared else None)

    def read(self) -> ControlState:
        if self.path is None:
            return self._memory
        try:
            raw = json.loads(self.path.read_text())
            return ControlState(int(raw["generation"]), frozenset(raw["unloaded"]))
        except (OSError, ValueError, KeyError, TypeError):  # Not written yet.
            return ControlState()

    def request(self, name: str, unloaded: bool) -> None:
        """Record a load (``unloaded=False``) or unload of ``name`` for every worker."""
        if self.path is None:
            self._memory = self._changed(self._memory, name, unloaded)
            return
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # Workers may be asked at the same moment.
            state = self._changed(self.read(), name, unloaded)
            document = {"generation": state.generation, "unloaded": sorted(state.unloaded)}
            with tempfile.NamedTemporaryFile(
                "w", dir=self.path.parent, delete=False, suffix=".tmp"
            ) as staged:
                json.dump(document, staged)
            os.replace(staged.name, self.path)  # Readers see the old file or the new one.

    @staticmethod
    def _changed(state: ControlState, name: str, unloaded: bool) -> ControlState:
        names = state.unloaded | {name} if unloaded else state.unloaded - {name}
        return ControlState(state.generation + 1, frozenset(names))


@dataclass(frozen=True)
class Refusal:
    """A version whose files failed a check; not tried again until they change."""

    fingerprint: str
    reason: str


class ModelLifecycle:
    """Keeps a ``ServingState``'s versions equal to what the repository and its API select.

    Args:
        settings: ``models_dir``, ``default_model``, ``repository_poll_s``, thread counts.
        metrics: where loaded versions and refusals are counted.
        new_batcher: the dynamic batcher for a freshly loaded runtime (not started).
        control: the repository API's shared requests.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: ServiceMetrics,
        new_batcher: BatcherFactory,
        control: RepositoryControl,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.new_batcher = new_batcher
        self.control = control
        self.state: ServingState | None = None
        self._fingerprints: dict[tuple[str, int], str] = {}
        self._refused: dict[tuple[str, int], Refusal] = {}
        self._lock = asyncio.Lock()
        self._warned: set[str] = set()

    # Start-up: strict. Every selected version must load, or the service does not start.

    def load_at_start(self) -> Versions:
        """Load every selected version (models unloaded through the API stay unloaded).

        Raises:
            ModelLoadError: an invalid policy, no default model, or a version that fails.
        """
        selected = discover_serving_models(self.settings.models_dir, self.settings.default_model)
        unloaded = self.control.read().unloaded - {self.settings.default_model}
        versions: Versions = {}
        for name, found in selected.items():
            if name in unloaded:
                continue
            versions[name] = {str(version.version): self._load(version) for version in found}
        for name, by_version in versions.items():
            self.metrics.model_versions_loaded.labels(name).set(len(by_version))
            for runtime in by_version.values():
                self._start_serving(runtime)
        self.metrics.models_loaded.set(len(versions))
        return versions

    def _load(self, version: VersionOnDisk) -> ModelRuntime:
        """Raises:
        ModelLoadError: the card, sha256, ONNX file, signature or warm-up fails, or the card
            names another model.
        """
        threads = self.settings.resolved_intra_op_threads()
        try:
            runtime = ModelRuntime(version.path, threads, version.version)
        except ModelLoadError:
            raise
        except Exception as error:  # onnxruntime's own errors, from the warm-up run say.
            raise ModelLoadError(f"{version.path}: {type(error).__name__}: {error}") from error
        if runtime.name != version.name:
            raise ModelLoadError(f"{version.path}/model.json names the model {runtime.name!r}")
        self._fingerprints[(version.name, version.version)] = version.fingerprint
        logger.info(
            "loaded model %s version %d (%d threads)", version.name, version.version, threads
        )
        return runtime

    def _start_serving(self, runtime: ModelRuntime) -> None:
        runtime.batcher = self.new_batcher(runtime)
        runtime.batcher.start()

    # While serving: lenient. A bad version is refused; what serves keeps serving.

    async def sync(self) -> None:
        """Make the served versions equal to what the repository selects now."""
        assert self.state is not None
        async with self._lock:
            scan = await asyncio.to_thread(scan_repository, self.settings.models_dir)
            unloaded = self.control.read().unloaded - {self.settings.default_model}
            current = self.state.versions
            wanted: Versions = {}
            for name, found in scan.selected.items():
                if name not in unloaded:
                    wanted[name] = await self._versions_of(name, found, current.get(name, {}))
            for name, reason in scan.problems.items():
                self._warn_once(name, f"model {name}: {reason}; its served versions stay")
                if name not in unloaded and name in current:
                    wanted[name] = current[name]
            self._keep_default(wanted, current)
            self._swap(wanted)

    async def _versions_of(
        self, name: str, found: list[VersionOnDisk], served: dict[str, ModelRuntime]
    ) -> dict[str, ModelRuntime]:
        """The runtimes for the versions ``found``: the served ones whose files have not
        changed, freshly loaded ones, and (for a changed version that is refused) the old."""
        versions: dict[str, ModelRuntime] = {}
        for version in found:
            key, number = str(version.version), (name, version.version)
            unchanged = self._fingerprints.get(number) == version.fingerprint
            refused = self._refused.get(number)
            if key in served and unchanged:
                versions[key] = served[key]
            elif refused is not None and refused.fingerprint == version.fingerprint:
                if key in served:
                    versions[key] = served[key]
            else:
                try:
                    runtime = await asyncio.to_thread(self._load, version)
                except ModelLoadError as error:
                    self._refuse(version, str(error), key in served)
                    if key in served:
                        versions[key] = served[key]
                    continue
                self._refused.pop(number, None)
                self._start_serving(runtime)
                versions[key] = runtime
        return versions

    def _refuse(self, version: VersionOnDisk, reason: str, old_serves: bool) -> None:
        self._refused[(version.name, version.version)] = Refusal(version.fingerprint, reason)
        self.metrics.model_load_refusals.labels(version.name).inc()
        kept = "its previous files keep serving" if old_serves else "the other versions serve"
        logger.error(
            "model %s version %d refused: %s; %s", version.name, version.version, reason, kept
        )

    def _keep_default(self, wanted: Versions, current: Versions) -> None:
        default = self.settings.default_model
        if wanted.get(default) or not current.get(default):
            self._warned.discard(default)
            return
        wanted[default] = current[default]
        self._warn_once(
            default,
            f"the default model {default} has no loadable version on disk; versions "
            f"{sorted(current[default], key=int)} stay in memory",
        )

    def _warn_once(self, name: str, message: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            logger.warning("%s", message)

    def _swap(self, wanted: Versions) -> None:
        """Serve ``wanted`` from now on; retire what left it."""
        assert self.state is not None
        wanted = {name: by_version for name, by_version in wanted.items() if by_version}
        before = self.state.versions
        self.state.serve(wanted)
        kept = {id(runtime) for by_version in wanted.values() for runtime in by_version.values()}
        for name, by_version in before.items():
            for key, runtime in by_version.items():
                if id(runtime) not in kept and runtime.batcher is not None:
                    runtime.batcher.retire()
                    logger.info("retired model %s version %s", name, key)
        for name in set(before) | set(wanted):
            self.metrics.model_versions_loaded.labels(name).set(len(wanted.get(name, {})))
        self.metrics.models_loaded.set(len(wanted))
        added = [
            f"{name} version {key}"
            for name, by_version in wanted.items()
            for key, runtime in by_version.items()
            if runtime is not before.get(name, {}).get(key)
        ]
        if added:
            logger.info("serving %s", ", ".join(added))

    async def watch(self) -> None:
        """Re-sync when the disk may have changed (every ``repository_poll_s``, if set) or the
        repository API asked for something through any worker; runs until cancelled."""
        poll_s = float(self.settings.repository_poll_s)
        seen = self.control.read()
        last_poll = time.monotonic()
        while True:
            await asyncio.sleep(min(CONTROL_CHECK_S, poll_s) if poll_s else CONTROL_CHECK_S)
            asked = self.control.read()
            due = bool(poll_s) and time.monotonic() - last_poll >= poll_s
            if asked == seen and not due:
                continue
            seen, last_poll = asked, time.monotonic()
            try:
                await self.sync()
            except Exception:  # A repository that cannot be read now may be readable later.
                logger.exception("repository sync failed; serving what was loaded")

    # The repository API (Triton's model repository extension).

    async def load(self, name: str, parameters: Collection[str] = ()) -> None:
        """Load (or reload from disk) every selected version of ``name``, for every worker.

        Args:
            parameters: the names of the load parameters a client sent (none are supported).

        Raises:
            BadRequestError: load parameters, no such model on disk, or none of its versions
                loads.
        """
        if parameters:
            raise BadRequestError(
                f"load parameters are not supported ({', '.join(parameters)}): "
                "models load from their files in the repository"
            )
        self.control.request(name, unloaded=False)
        await self.sync()
        assert self.state is not None
        if name not in self.state.versions:
            refusals = [r.reason for (model, _), r in self._refused.items() if model == name]
            reason = "; ".join(refusals) or "no such model in the repository"
            raise BadRequestError(f"failed to load '{name}': {reason}")

    async def unload(self, name: str) -> None:
        """Stop serving every version of ``name`` in every worker, until it is loaded again.

        Raises:
            BadRequestError: the default model, or a model that is not loaded.
        """
        assert self.state is not None
        if name == self.settings.default_model:
            raise BadRequestError(
                f"failed to unload '{name}': it is the default model (CNN_SERVE_DEFAULT_MODEL)"
            )
        if name not in self.state.versions:
            raise BadRequestError(f"failed to unload '{name}': it is not loaded")
        self.control.request(name, unloaded=True)
        await self.sync()

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: every version on disk, READY or UNAVAILABLE and why (only
        the READY ones with ``ready_only``)."""
        assert self.state is not None
        models_dir = self.settings.models_dir
        unloaded = self.control.read().unloaded
        entries = []
        roots = sorted(path for path in models_dir.iterdir() if path.is_dir())
        names = {root.name for root in roots} | set(self.state.versions)
        for name in sorted(names):
            on_disk: set[int] = set()
            with contextlib.suppress(OSError):
                on_disk = set(versions_on_disk(models_dir / name))
            served = {int(key) for key in self.state.versions.get(name, {})}
            for version in sorted(on_disk | served):
                entries.append(self._index_entry(name, version, served, unloaded))
        return [entry for entry in entries if entry["state"] == "READY" or not ready_only]

    def _index_entry(
        self, name: str, version: int, served: set[int], unloaded: frozenset[str]
    ) -> dict[str, str]:
        entry = {"name": name, "version": str(version)}
        if version in served:
            return {**entry, "state": "READY", "reason": ""}
        refusal = self._refused.get((name, version))
        if name in unloaded:
            reason = "unloaded"
        elif refusal is not None:
            reason = refusal.reason
        else:
            reason = "not selected by the version policy"
        return {**entry, "state": "UNAVAILABLE", "reason": reason}

    async def stop(self) -> None:
        """Stop every served version's batcher (the service is shutting down)."""
        if self.state is None:
            return
        for by_version in self.state.versions.values():
            for runtime in by_version.values():
                if runtime.batcher is not None:
                    await runtime.batcher.stop()
