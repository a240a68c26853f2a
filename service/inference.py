"""Protocol-neutral handlers: a ``Payload`` in, a JSON-ready result out. No HTTP here."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from service.batching import DynamicBatcher
from service.config import Settings
from service.errors import InvalidInputError, ModelNotFoundError
from service.metrics import ServiceMetrics
from service.payloads import PREPROCESS_METHODS, Payload
from service.preprocessing import ImageLimits, arrays_to_batch, images_to_batch
from service.repository import PreprocessMethod
from service.runtime import FeatureMaps, ModelRuntime


@dataclass
class ServingState:
    """Everything the routes need, built once in the app's lifespan."""

    settings: Settings
    models: dict[str, ModelRuntime]
    batchers: dict[str, DynamicBatcher]
    executor: ThreadPoolExecutor
    metrics: ServiceMetrics

    def model(self, name: str | None) -> ModelRuntime:
        """The named model (default model when ``None``)."""
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


def preprocess_method(payload: Payload, model: ModelRuntime) -> PreprocessMethod:
    """The requested method; by default the model's own for images, ``none`` for arrays."""
    requested = payload.options.get("preprocess")
    if requested is None:
        return model.card.preprocessing.default if payload.images is not None else "none"
    if requested not in PREPROCESS_METHODS:
        raise InvalidInputError(
            f"preprocess must be one of {list(PREPROCESS_METHODS)}, not {requested!r}"
        )
    return cast(PreprocessMethod, requested)


def top_k_option(payload: Payload, classes: int) -> int | None:
    """The validated ``top_k`` option, or ``None`` for all probabilities."""
    value = payload.options.get("top_k")
    if value is None:
        return None
    # An integer in JSON, or digits in a query string / form field; never 2.5 or true.
    is_integer = isinstance(value, int) and not isinstance(value, bool)
    if not (is_integer or (isinstance(value, str) and value.strip().isdigit())):
        raise InvalidInputError("top_k must be an integer")
    top_k = int(value)
    if not 1 <= top_k <= classes:
        raise InvalidInputError(f"top_k must be between 1 and {classes}")
    return top_k


async def model_input(state: ServingState, model: ModelRuntime, payload: Payload) -> np.ndarray:
    """Preprocess a payload into float32 (N, 28, 28, 1); image decoding runs off the event loop."""
    method = preprocess_method(payload, model)
    spec = model.card.preprocessing
    if payload.images is not None:
        return await asyncio.to_thread(
            images_to_batch, payload.images, method, spec, state.image_limits
        )
    assert payload.array is not None
    if method == "none":
        return arrays_to_batch(payload.array, method, spec)
    return await asyncio.to_thread(arrays_to_batch, payload.array, method, spec)


def describe_predictions(
    probabilities: np.ndarray, labels: list[str], top_k: int | None
) -> list[dict[str, Any]]:
    """Per-item label, class index, confidence, and all (or the top k) probabilities.

    Args:
        probabilities: float32 (N, classes).
    """
    predictions = []
    for row in probabilities:
        best = int(row.argmax())
        item: dict[str, Any] = {
            "label": labels[best],
            "class_index": best,
            "confidence": float(row[best]),
        }
        if top_k is None:
            item["probabilities"] = row.tolist()
        else:
            order = np.argsort(-row, kind="stable")[:top_k]
            item["top_k"] = [
                {
                    "label": labels[index],
                    "class_index": int(index),
                    "probability": float(row[index]),
                }
                for index in order
            ]
        predictions.append(item)
    return predictions


async def predict(state: ServingState, model_name: str | None, payload: Payload) -> dict[str, Any]:
    """Classify every item of a payload through the model's dynamic batcher."""
    model = state.model(model_name)
    top_k = top_k_option(payload, len(model.card.labels))
    images = await model_input(state, model, payload)
    state.metrics.request_items.labels(model.name).observe(images.shape[0])
    probabilities = await state.batchers[model.name].submit(images)
    return {
        "model": model.name,
        "version": model.card.version,
        "predictions": describe_predictions(probabilities, model.card.labels, top_k),
    }


def requested_layers(payload: Payload, model: ModelRuntime) -> list[str]:
    """Layer names asked for (a list or a comma-separated string), all by default."""
    layers = payload.options.get("layers")
    if layers is None or layers == "":
        return [spec.layer for spec in model.card.feature_maps]
    if isinstance(layers, str):
        layers = [name.strip() for name in layers.split(",") if name.strip()]
    if not isinstance(layers, list) or not all(isinstance(name, str) for name in layers):
        raise InvalidInputError("layers must be a list of layer names")
    known = [spec.layer for spec in model.card.feature_maps]
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise InvalidInputError(
            f"unknown layers {unknown} for model {model.name}", details={"known_layers": known}
        )
    return list(dict.fromkeys(layers))


@dataclass(frozen=True)
class FeatureMapResult:
    """One image's preprocessed input (28, 28), prediction and layer activations."""

    model: ModelRuntime
    image: np.ndarray
    maps: FeatureMaps


async def feature_maps(
    state: ServingState, model_name: str | None, payload: Payload
) -> FeatureMapResult:
    """Run one image through the model and collect the chosen layers' activations."""
    model = state.model(model_name)
    if payload.count != 1:
        raise InvalidInputError(f"/feature-maps takes exactly one image, got {payload.count}")
    layers = requested_layers(payload, model)
    images = await model_input(state, model, payload)
    loop = asyncio.get_running_loop()
    maps = await loop.run_in_executor(state.executor, model.feature_maps, images, layers)
    return FeatureMapResult(model=model, image=images[0, :, :, 0], maps=maps)


def feature_maps_document(result: FeatureMapResult) -> dict[str, Any]:
    """The JSON form of a feature-map result."""
    model = result.model
    return {
        "model": model.name,
        "version": model.card.version,
        "prediction": describe_predictions(result.maps.probabilities, model.card.labels, None)[0],
        "input": result.image,
        "layers": [
            {"name": name, "shape": list(values.shape[1:]), "values": values[0]}
            for name, values in result.maps.layers.items()
        ],
    }
