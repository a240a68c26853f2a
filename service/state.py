"""``ServingState``: everything the routes need, built once in the app's lifespan."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from service.batching import DynamicBatcher
from service.config import Settings
from service.errors import ModelNotFoundError
from service.limits import Deadline, MemoryBudget
from service.payloads import PayloadLimits
from service.preprocessing import ImageLimits
from service.runtime import ModelRuntime, Scored

RequestObserver = Callable[[str, int], None]
"""Called once per inference request with (model name, items in the request)."""
OutcomeObserver = Callable[[str, bool, float], None]
"""Called once per inference request with (model name, succeeded, seconds at the model)."""
StageObserver = Callable[[str, str, float], None]
"""Called with (stage, model name, seconds) for the preprocess and serialize stages."""


@dataclass
class ServingState:
    """The loaded models, their batchers, the inference threads and the metrics hooks."""

    settings: Settings
    models: dict[str, ModelRuntime]
    batchers: dict[str, DynamicBatcher[Scored]]
    executor: ThreadPoolExecutor
    observe_request: RequestObserver
    decode_budget: MemoryBudget
    observe_outcome: OutcomeObserver = lambda model, succeeded, seconds: None
    observe_stage: StageObserver = lambda stage, model, seconds: None

    @contextmanager
    def stage(self, stage: str, model: str) -> Iterator[None]:
        """Time one stage of a request for ``cnn_serve_stage_seconds`` (when it completes)."""
        started = time.perf_counter()
        yield
        self.observe_stage(stage, model, time.perf_counter() - started)

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

    def model(self, name: str | None) -> ModelRuntime:
        """The named model (the default model when ``None``).

        Raises:
            ModelNotFoundError: no model of that name (404).
        """
        name = name or self.settings.default_model
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotFoundError(
                f"no model named {name!r}", details={"models": sorted(self.models)}
            ) from None

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
