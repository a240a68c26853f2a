"""``ServingState``: everything the routes need, built once in the app's lifespan."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from service.batching import DynamicBatcher
from service.config import Settings
from service.errors import ModelNotFoundError
from service.limits import Deadline, MemoryBudget
from service.payloads import PayloadLimits
from service.preprocessing import ImageLimits
from service.runtime import ModelRuntime, Scored
from service.tracing import BatchTiming, Tracing


def batcher_of(model: ModelRuntime) -> DynamicBatcher[Scored]:
    """The batcher queueing ``model``'s runs (set when the version started serving)."""
    assert model.batcher is not None, f"{model.name} v{model.card.version} is not serving"
    return model.batcher


RequestObserver = Callable[[str, int], None]
"""Called once per inference request with (model name, items in the request)."""
OutcomeObserver = Callable[[str, bool, float], None]
"""Called once per inference request with (model name, succeeded, seconds at the model)."""
StageObserver = Callable[[str, str, float], None]
"""Called with (stage, model name, seconds) for the preprocess and serialize stages."""


Versions = dict[str, dict[str, ModelRuntime]]
"""Model name -> version (its number, as text) -> the loaded runtime."""


@dataclass
class ServingState:
    """The served model versions, the inference threads and the metrics hooks.

    ``versions`` is replaced as a whole (``serve``), never changed in place, so that a request
    sees one consistent set; each runtime carries the batcher that queues its runs.
    """

    settings: Settings
    versions: Versions
    executor: ThreadPoolExecutor
    observe_request: RequestObserver
    decode_budget: MemoryBudget
    observe_outcome: OutcomeObserver = lambda model, succeeded, seconds: None
    observe_stage: StageObserver = lambda stage, model, seconds: None
    tracing: Tracing = field(default_factory=Tracing)
    models: dict[str, ModelRuntime] = field(init=False)

    def __post_init__(self) -> None:
        self.serve(self.versions)

    def serve(self, versions: Versions) -> None:
        """Swap in a new set of versions at once; each model's default is its highest."""
        self.versions = versions
        self.models = {
            name: by_version[max(by_version, key=int)]
            for name, by_version in versions.items()
            if by_version
        }

    @property
    def queued_items(self) -> int:
        """Items waiting in the queues of every served version."""
        return sum(
            batcher_of(runtime).queued_items
            for by_version in self.versions.values()
            for runtime in by_version.values()
        )

    @contextmanager
    def stage(self, stage: str, model: str) -> Iterator[None]:
        """Time one stage of a request for ``cnn_serve_stage_seconds`` (when it completes),
        and trace it as a span when tracing is on."""
        started = time.perf_counter()
        if self.tracing.enabled:
            with self.tracing.span(stage, model=model):
                yield
        else:
            yield
        self.observe_stage(stage, model, time.perf_counter() - started)

    def batch_timing(self) -> BatchTiming | None:
        """Where the batcher records a request's queue and run times, when tracing is on."""
        return BatchTiming() if self.tracing.enabled else None

    @contextmanager
    def at_model(self, model: str, items: int) -> Iterator[None]:
        """Count a request of ``items`` that has reached ``model`` (decoded, about to queue),
        and time it to its result or failure (Triton's statistics: success and fail)."""
        self.observe_request(model, items)
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.observe_outcome(model, False, time.perf_counter() - started)
            raise
        self.observe_outcome(model, True, time.perf_counter() - started)

    def model(self, name: str | None, version: str | None = None) -> ModelRuntime:
        """The named model (the default model when ``None``), at its default version or at
        ``version``.

        Raises:
            ModelNotFoundError: no model of that name, or no such version of it (404).
        """
        name = name or self.settings.default_model
        if name not in self.models:
            raise ModelNotFoundError(
                f"no model named {name!r}", details={"models": sorted(self.models)}
            )
        if version is None:
            return self.models[name]
        try:
            return self.versions[name][version]
        except KeyError:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}",
                details={"versions": self.version_numbers(name)},
            ) from None

    def version_numbers(self, name: str) -> list[int]:
        """The served versions of a model, ascending."""
        return sorted(int(version) for version in self.versions.get(name, {}))

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.settings.max_image_pixels, self.settings.max_image_bytes)

    def deadline(self) -> Deadline:
        """When a request arriving now must be done (decoding, queueing and inference)."""
        return Deadline.after(self.settings.request_timeout_s)

    def payload_limits(self, model: ModelRuntime, max_items: int | None = None) -> PayloadLimits:
        """What one request to ``model`` may hold (``max_items`` overrides the setting)."""
        return PayloadLimits(
            max_items=max_items or self.settings.max_items_per_request,
            image_size=model.card.image_size,
        )
