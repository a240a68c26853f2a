"""Protocol-neutral handlers: a ``Payload`` in, a JSON-ready result out. No HTTP here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from model_card import PreprocessMethod
from service.errors import InvalidInputError
from service.explain import Explanation, explanations_by
from service.limits import Deadline
from service.options import ExplainOptions, FeatureMapOptions
from service.payloads import Payload
from service.preprocessing import arrays_to_batch
from service.preprocessing.uploads import prepare_uploads
from service.protocols.v2 import SALIENCY_OUTPUT, ParsedInference
from service.reliability import verdicts
from service.runtime import FeatureMaps, ModelRuntime, Scored
from service.state import ServingState, batcher_of


def preprocess_method(payload: Payload, model: ModelRuntime) -> PreprocessMethod:
    """The requested method; by default the model's own for images, ``none`` for arrays."""
    if payload.options.preprocess is not None:
        return payload.options.preprocess
    return model.card.preprocessing.default if payload.images is not None else "none"


def top_k_option(payload: Payload, model: ModelRuntime) -> int | None:
    """``top_k``, checked against the model's number of classes (``None``: all probabilities)."""
    top_k = payload.options.top_k
    classes = len(model.card.labels)
    if top_k is not None and top_k > classes:
        raise InvalidInputError(f"top_k must be between 1 and {classes} for model {model.name}")
    return top_k


async def model_input(
    state: ServingState,
    model: ModelRuntime,
    payload: Payload,
    deadline: Deadline,
    notes: list[set[str]] | None = None,
) -> np.ndarray:
    """Preprocess a payload into float32 (N, H, W, 1), off the event loop; ``notes`` gets one
    set per image of what preprocessing noticed (see ``preprocessing.prepare``).

    Images are opened once and decoded one at a time, each within the memory its header says it
    will take from the process's decode budget, and only while the request is still wanted
    (``preprocessing.uploads``).
    """
    method = preprocess_method(payload, model)
    spec = model.card.preprocessing
    if payload.images is None:
        assert payload.array is not None
        if method == "none":
            return arrays_to_batch(payload.array, method, spec)
        return await asyncio.to_thread(arrays_to_batch, payload.array, method, spec)
    return await prepare_uploads(
        payload.images, method, spec, state.image_limits, state.decode_budget, deadline, notes
    )


def describe_predictions(
    probabilities: np.ndarray,
    labels: list[str],
    top_k: int | None,
    reasons: list[str | None] | None = None,
) -> list[dict[str, Any]]:
    """Per-item label, class index, confidence, and all (or the top k) probabilities; with
    ``reasons`` (one per item, None: reliable), whether to trust it and why not.

    Args:
        probabilities: float32 (N, classes).
    """
    predictions = []
    for position, row in enumerate(probabilities):
        best = int(row.argmax())
        item: dict[str, Any] = {
            "label": labels[best],
            "class_index": best,
            "confidence": float(row[best]),
        }
        if reasons is not None:
            item["reliable"] = reasons[position] is None
            if reasons[position] is not None:
                item["reason"] = reasons[position]
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


def judged(
    model: ModelRuntime, images: np.ndarray, scored: Scored, notes: list[set[str]]
) -> list[str | None]:
    """Why each of ``scored``'s predictions is not reliable (None where it is); preprocessing
    that saw several digits says so first."""
    confidence = scored.calibrated.max(axis=1)
    reasons = verdicts(images, confidence, scored.distances, model.card.reliability)
    for index, noticed in enumerate(notes):
        if "several digits" in noticed and reasons[index] != "blank":
            reasons[index] = "several digits"
    return reasons


async def predict(
    state: ServingState, model: ModelRuntime, payload: Payload, deadline: Deadline
) -> dict[str, Any]:
    """Classify every item of a payload through the model's dynamic batcher."""
    top_k = top_k_option(payload, model)
    notes: list[set[str]] = []
    with state.stage("preprocess", model.name):
        images = await model_input(state, model, payload, deadline, notes)
    with state.at_model(model.name, images.shape[0]):
        deadline.check()
        timing = state.batch_timing()
        scored = await batcher_of(model).submit(images, deadline.remaining(), timing)
    if timing is not None:
        state.tracing.batch(timing, model.name)
    reasons = judged(model, images, scored, notes)
    return {
        "model": model.name,
        "version": model.card.version,
        "predictions": describe_predictions(scored.calibrated, model.card.labels, top_k, reasons),
    }


def requested_layers(options: FeatureMapOptions, model: ModelRuntime) -> list[str]:
    """Layer names asked for, in the model's order of first mention; all by default."""
    known = [spec.layer for spec in model.card.feature_maps]
    if not options.layers:
        return known
    unknown = [name for name in options.layers if name not in known]
    if unknown:
        raise InvalidInputError(
            f"unknown layers {unknown} for model {model.name}", details={"known_layers": known}
        )
    return list(dict.fromkeys(options.layers))


@dataclass(frozen=True)
class FeatureMapResult:
    """One image's preprocessed input (H, W), prediction and layer activations."""

    model: ModelRuntime
    image: np.ndarray
    maps: FeatureMaps
    notes: set[str]  # What preprocessing noticed (see preprocessing.prepare).


async def feature_maps(
    state: ServingState, model: ModelRuntime, payload: Payload, deadline: Deadline
) -> FeatureMapResult:
    """Run one image through the model and collect the chosen layers' activations."""
    assert isinstance(payload.options, FeatureMapOptions)
    layers = requested_layers(payload.options, model)
    notes: list[set[str]] = []
    with state.stage("preprocess", model.name):
        images = await model_input(state, model, payload, deadline, notes)
    with state.at_model(model.name, images.shape[0]):
        deadline.check()
        maps = await batcher_of(model).submit_alone(
            images, partial(model.feature_maps, layers=layers), deadline.remaining()
        )
    noticed = notes[0] if notes else set()
    return FeatureMapResult(model=model, image=images[0, :, :, 0], maps=maps, notes=noticed)


def feature_maps_document(result: FeatureMapResult) -> dict[str, Any]:
    """The JSON form of a feature-map result: the prediction as /predict gives it (calibrated,
    with ``reliable``; the distance is measured when its layer was among those asked for)."""
    model = result.model
    spec = model.card.reliability
    features = (
        result.maps.layers.get(model.card.feature_map_layer(spec.feature_output)) if spec else None
    )
    scored = model.scored(result.maps.probabilities, features)
    image = result.image[np.newaxis, :, :, np.newaxis]
    reasons = judged(model, image, scored, [result.notes])
    return {
        "model": model.name,
        "version": model.card.version,
        "prediction": describe_predictions(scored.calibrated, model.card.labels, None, reasons)[0],
        "input": result.image,
        "layers": [
            {"name": name, "shape": list(values.shape[1:]), "values": values[0]}
            for name, values in result.maps.layers.items()
        ],
    }


async def v2_infer(
    state: ServingState, model: ModelRuntime, request: ParsedInference, deadline: Deadline
) -> dict[str, np.ndarray]:
    """Run a V2 inference: probabilities through the dynamic batcher, or (when feature maps are
    asked for) one run of every requested output, in the batcher's queue.

    Returns:
        output name -> float32 (N, ...).
    """
    with state.at_model(model.name, request.images.shape[0]):
        deadline.check()
        return await _v2_outputs(state, model, request, deadline)


async def _v2_outputs(
    state: ServingState, model: ModelRuntime, request: ParsedInference, deadline: Deadline
) -> dict[str, np.ndarray]:
    layers = request.feature_map_layers
    saliency = request.saliency
    if saliency is not None:
        method = _explanation_method(saliency.method, model)
        run = partial(_v2_explained, model, layers, saliency.target, method)
        outputs: dict[str, np.ndarray] = await batcher_of(model).submit_alone(
            request.images, run, deadline.remaining()
        )
        return outputs
    if not layers:
        timing = state.batch_timing()
        scored = await batcher_of(model).submit(request.images, deadline.remaining(), timing)
        if timing is not None:
            state.tracing.batch(timing, model.name)
        return {model.card.probabilities_output: scored.probabilities}
    specs = {spec.output: spec.layer for spec in model.card.feature_maps}
    maps = await batcher_of(model).submit_alone(
        request.images,
        partial(model.feature_maps, layers=[specs[name] for name in layers]),
        deadline.remaining(),
    )
    outputs = {model.card.probabilities_output: maps.probabilities}
    outputs.update({name: maps.layers[specs[name]] for name in layers})
    return outputs


@dataclass(frozen=True)
class ExplainResult:
    """What the model saw, float32 (N, H, W, 1), its scored predictions, each image's
    explanation, and what preprocessing noticed."""

    model: ModelRuntime
    images: np.ndarray
    scored: Scored
    explanations: list[Explanation]
    notes: list[set[str]]


def _explanation_method(requested: str | None, model: ModelRuntime) -> str:
    """The method to explain with: the one requested, or the model's first.

    Raises:
        InvalidInputError: the model does not offer it.
    """
    offered = model.explanation_methods
    if requested is None:
        return offered[0]
    if requested not in offered:
        raise InvalidInputError(
            f"model {model.name} offers {', '.join(offered)}, not {requested}"
            + ("" if model.card.explainers else " (it has no gradient graph)"),
            details={"methods": offered},
        )
    return requested


def _explanation_target(options: ExplainOptions, model: ModelRuntime) -> int | None:
    classes = len(model.card.labels)
    if options.target is not None and options.target >= classes:
        raise InvalidInputError(
            f"target must be a class index from 0 to {classes - 1} for model {model.name}"
        )
    return options.target


def _v2_explained(
    model: ModelRuntime, outputs: list[str], target: int | None, method: str, images: np.ndarray
) -> dict[str, np.ndarray]:
    """One run-alone of a V2 request that asks for the saliency: the probabilities, the named
    feature-map ``outputs``, and the saliency, float32 (N, H, W)."""
    layers = {spec.output: spec.layer for spec in model.card.feature_maps}
    if outputs:
        maps = model.feature_maps(images, layers=[layers[name] for name in outputs])
        probabilities = maps.probabilities
        tensors = {name: maps.layers[layers[name]] for name in outputs}
    else:
        probabilities, tensors = model.predict(images), {}
    explanations = _explanations(model, method, target, images)
    tensors[model.card.probabilities_output] = probabilities
    tensors[SALIENCY_OUTPUT] = np.stack([explanation.saliency for explanation in explanations])
    return tensors


def _explanations(
    model: ModelRuntime, method: str, target: int | None, images: np.ndarray
) -> list[Explanation]:
    return explanations_by(
        method, model.predict, model.gradients, images, [target] * images.shape[0]
    )


async def explain(
    state: ServingState, model: ModelRuntime, payload: Payload, deadline: Deadline
) -> ExplainResult:
    """Explain each image's prediction (or ``target``) with the requested method: the
    predictions batched as /predict's, then one run-alone per image in the batcher's queue, under
    the same bound and deadline as feature-map runs."""
    assert isinstance(payload.options, ExplainOptions)
    target = _explanation_target(payload.options, model)
    method = _explanation_method(payload.options.method, model)
    top_k_option(payload, model)
    notes: list[set[str]] = []
    with state.stage("preprocess", model.name):
        images = await model_input(state, model, payload, deadline, notes)
    batcher = batcher_of(model)
    explanations: list[Explanation] = []
    with state.at_model(model.name, images.shape[0]):
        deadline.check()
        scored = await batcher.submit(images, deadline.remaining())
        # One image a run: each takes up to a few hundred milliseconds, and other requests'
        # batches run between them instead of waiting for the whole request.
        for index in range(images.shape[0]):
            deadline.check()
            explanations += await batcher.submit_alone(
                images[index : index + 1],
                partial(_explanations, model, method, target),
                deadline.remaining(),
            )
    return ExplainResult(model, images, scored, explanations, notes)


def explain_document(result: ExplainResult, top_k: int | None) -> dict[str, Any]:
    """The JSON form of an explanation: per image, its target, method, saliency (H, W) and
    the prediction as /predict gives it."""
    model = result.model
    reasons = judged(model, result.images, result.scored, result.notes)
    predictions = describe_predictions(result.scored.calibrated, model.card.labels, top_k, reasons)
    return {
        "model": model.name,
        "version": model.card.version,
        "explanations": [
            {
                "target": explanation.target,
                "label": model.card.labels[explanation.target],
                "method": explanation.method,
                "saliency": explanation.saliency,
                **({"details": explanation.details} if explanation.details else {}),
                "prediction": prediction,
            }
            for explanation, prediction in zip(result.explanations, predictions, strict=True)
        ],
    }
