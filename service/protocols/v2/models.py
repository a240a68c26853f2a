"""How models are published under V2 (``<model>`` and ``<model>-features``), and their
metadata, Triton's model configuration and statistics documents."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from model_card import ModelCard
from service.errors import (
    ModelNotFoundError,
)
from service.metrics import ModelTotals, ServiceMetrics, Timed
from service.protocols.v2.messages import FEATURES_SUFFIX, PLATFORM, TRITON_PLATFORM, V2Model

if TYPE_CHECKING:
    from service.runtime import ModelRuntime
    from service.state import ServingState


def published_model(name: str, cards: dict[str, ModelCard]) -> V2Model | None:
    """The V2 model called ``name``: a served model, or ``<served>-features``."""
    if name in cards:
        return V2Model(name, cards[name], with_features=False)
    base = name.removesuffix(FEATURES_SUFFIX)
    if base != name and base in cards and cards[base].feature_maps:
        return V2Model(name, cards[base], with_features=True)
    return None


def published_names(cards: dict[str, ModelCard]) -> list[str]:
    """Every V2 model name ``published_model`` answers to, sorted."""
    names = set(cards) | {
        f"{name}{FEATURES_SUFFIX}" for name, card in cards.items() if card.feature_maps
    }
    return sorted(names)


def served_model(
    state: ServingState, name: str, version: str | None
) -> tuple[ModelRuntime, V2Model]:
    """The served model behind the V2 model ``name`` (``<model>`` or ``<model>-features``), or
    a 404 whose text has Triton's "Request for unknown model" (clients match on it)."""
    cards = {served: runtime.card for served, runtime in state.models.items()}
    published = published_model(name, cards)
    if published is None:
        raise ModelNotFoundError(
            f"Request for unknown model: '{name}' is not found; models: "
            + ", ".join(published_names(cards))
        )
    served = state.version_numbers(published.card.name)
    if version is None:
        return state.models[published.card.name], published
    runtime = state.versions[published.card.name].get(version)
    if runtime is None:
        raise ModelNotFoundError(
            f"Request for unknown model: '{name}' version {version} is not found; served "
            f"versions: {', '.join(map(str, served))}"
        )
    return runtime, replace(published, card=runtime.card)


def model_metadata(model: V2Model, versions: list[int]) -> dict[str, Any]:
    """``$metadata_model_response``: the served ``versions``, the input and every output, from
    the model card."""
    card = model.card
    height, width = card.image_size
    outputs = [
        {"name": name, "datatype": "FP32", "shape": [-1, *shape]}
        for name, shape in model.output_shapes.items()
    ]
    return {
        "name": model.name,
        "versions": [str(version) for version in versions],
        "platform": PLATFORM,
        "inputs": [{"name": card.input.name, "datatype": "FP32", "shape": [-1, height, width, 1]}],
        "outputs": outputs,
    }


@dataclass(frozen=True)
class BatchingLimits:
    """The settings a Triton model configuration reports."""

    max_batch_size: int
    max_queue_delay_microseconds: int
    preferred_batch_size: int
    instances: int


def model_config(model: V2Model, limits: BatchingLimits, versions: list[int]) -> dict[str, Any]:
    """Triton's model configuration (``GET /v2/models/{name}/config``, as tritonclient's
    ``get_model_config`` reads it): batch dimension left out of ``dims``, as Triton writes it;
    the version policy as the versions served now.
    """
    card = model.card
    height, width = card.image_size
    outputs = [
        {"name": name, "data_type": "TYPE_FP32", "dims": shape}
        for name, shape in model.output_shapes.items()
    ]
    return {
        "name": model.name,
        "platform": TRITON_PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": versions}},
        "max_batch_size": limits.max_batch_size,
        "input": [
            {
                "name": card.input.name,
                "data_type": "TYPE_FP32",
                "format": "FORMAT_NHWC",
                "dims": [height, width, 1],
            }
        ],
        "output": outputs,
        "dynamic_batching": {
            "preferred_batch_size": [limits.preferred_batch_size],
            "max_queue_delay_microseconds": limits.max_queue_delay_microseconds,
        },
        "instance_group": [{"name": model.name, "kind": "KIND_CPU", "count": limits.instances}],
        "parameters": {"labels": {"string_value": ",".join(card.labels)}},
    }


def model_statistics(name: str, version: str, totals: ModelTotals) -> dict[str, Any]:
    """Triton's ``$model_stat`` for a model published as ``name``, from its totals over every
    worker (``ServiceMetrics.model_totals``).

    success and fail: requests that reached the model, and their time from then to their
    result; queue: their wait in the dynamic batcher's queue; compute_infer: ONNX Runtime runs
    (``execution_count``; one run serves a whole batch); inference_count: images inferred.
    Decoding and copying in and out are not split from those (compute_input and compute_output
    stay 0), and there is no response cache.
    """

    def duration(timed: Timed) -> dict[str, int]:
        return {"count": int(timed.count), "ns": int(timed.seconds * 1e9)}

    nothing = duration(Timed(0, 0))
    return {
        "name": name,
        "version": version,
        "last_inference": int(totals.last_inference_s * 1000),
        "inference_count": int(totals.images),
        "execution_count": int(totals.runs.count),
        "inference_stats": {
            "success": duration(totals.success),
            "fail": duration(totals.fail),
            "queue": duration(totals.queue),
            "compute_input": nothing,
            "compute_infer": duration(totals.runs),
            "compute_output": nothing,
            "cache_hit": nothing,
            "cache_miss": nothing,
        },
        "batch_stats": [],
        "memory_usage": [],
    }


def statistics(
    state: ServingState, metrics: ServiceMetrics, name: str | None, version: str | None
) -> dict[str, Any]:
    """Triton's ``$stats_model_response``: every served model's statistics (``name`` None), or
    one V2 model's (raises ModelNotFoundError as ``served_model`` does)."""
    if name is None:
        totals = metrics.model_totals(state.models)
        return {
            "model_stats": [
                model_statistics(served, runtime.card.version, totals[served])
                for served, runtime in sorted(state.models.items())
            ]
        }
    runtime, published = served_model(state, name, version)
    (one,) = metrics.model_totals([runtime.name]).values()
    return {"model_stats": [model_statistics(published.name, runtime.card.version, one)]}
