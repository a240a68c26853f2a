"""Prometheus metrics: requests by route and status, latency, batch sizes, model time."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# Methods counted by name; any other (httptools accepts WebDAV's and more) counts as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# A path no route serves is counted as route "unmatched" (by the edge); so is a method a route
# does not serve (405), so that strangers cannot add series with bogus paths or methods.
METHOD_NOT_ALLOWED = 405
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class Timed:
    """How many, and their total seconds."""

    count: float
    seconds: float


@dataclass(frozen=True)
class ModelTotals:
    """One model's totals since start, over every worker (what Triton's statistics report):
    requests that reached it by outcome, their queue waits, its runs, images, last run."""

    success: Timed
    fail: Timed
    queue: Timed
    runs: Timed
    images: float
    last_inference_s: float  # Unix time; 0 before the first run.


class ServiceMetrics:
    """The service's metrics, in a registry of their own (one per app, so tests stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cnn_serve_requests_total",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cnn_serve_request_duration_seconds",
            "HTTP request latency by route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_items = Histogram(
            "cnn_serve_batch_items",
            "Items per ONNX Runtime run, after dynamic batching.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.request_items = Histogram(
            "cnn_serve_request_items",
            "Items per prediction request.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "cnn_serve_inference_seconds",
            "ONNX Runtime time per run.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # What Triton's statistics extension reports (GET /v2/models/stats), per model.
        self.model_requests = Counter(
            "cnn_serve_model_requests_total",
            "Inference requests that reached a model, by outcome (success or fail).",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.model_request_seconds = Counter(
            "cnn_serve_model_request_seconds_total",
            "Time those requests took from reaching the model to their result, by outcome.",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "cnn_serve_stage_seconds",
            "Time per inference request in each stage: preprocess (reading tensors, decoding and "
            "preprocessing images), queue (waiting for the dynamic batcher's run) and serialize "
            "(building the response). The runs themselves: cnn_serve_inference_seconds.",
            ["stage", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.last_inference = Gauge(
            "cnn_serve_last_inference_timestamp_seconds",
            "When the model last finished a run (Unix time).",
            ["model"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        # Gauges of live workers only: a dead worker's values leave with it (mark_process_dead).
        self.queued_items = Gauge(
            "cnn_serve_queued_items",
            "Items waiting for the dynamic batcher (what an autoscaler should watch).",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.inflight_requests = Gauge(
            "cnn_serve_inflight_requests",
            "Inference requests admitted and not yet answered.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.overload_refusals = Counter(
            "cnn_serve_overload_refusals_total",
            "Inference requests refused (503) before their bodies were read.",
            registry=self.registry,
        )
        self.models_loaded = Gauge(
            "cnn_serve_models_loaded",
            "Models loaded and warmed up.",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.model_versions_loaded = Gauge(
            "cnn_serve_model_versions_loaded",
            "Versions of each model loaded, warmed up and serving.",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.model_load_refusals = Counter(
            "cnn_serve_model_load_refusals_total",
            "New or changed model versions refused (bad sha256, signature, ONNX, warm-up): the "
            "versions already serving kept serving.",
            ["model"],
            registry=self.registry,
        )
        self.grpc_requests = Counter(
            "cnn_serve_grpc_requests_total",
            "gRPC calls by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.grpc_latency = Histogram(
            "cnn_serve_grpc_request_duration_seconds",
            "gRPC call latency by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # labels() validates and looks up under a lock: a few microseconds on every request.
        # The children are kept here instead; methods, route templates and statuses are all
        # bounded (see observe_exchange), so this stays small.
        self._exchange_children: dict[tuple[object, ...], tuple[Counter, Histogram]] = {}

    def observe_exchange(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count and time one HTTP request and its answer (``route``: the path template).

        Label values come from bounded sets only: the known methods, the app's route templates
        and the statuses it answers with. Unknown methods and unrouted requests share labels.
        """
        if method not in KNOWN_METHODS:
            method = "other"
        if status == METHOD_NOT_ALLOWED:
            route = "unmatched"
        self._observe(
            self.requests,
            (method, route, str(status)),
            self.latency,
            (method, route),
            seconds,
        )

    def observe_grpc(self, method: str, code: str, seconds: float) -> None:
        """Count and time one gRPC call (``method``: one the service implements, ``code``: a
        gRPC status name; both bounded sets)."""
        self._observe(
            self.grpc_requests,
            (method, code),
            self.grpc_latency,
            (method,),
            seconds,
        )

    def _observe(
        self,
        counter: Counter,
        counter_labels: tuple[str, ...],
        histogram: Histogram,
        histogram_labels: tuple[str, ...],
        seconds: float,
    ) -> None:
        """Count one exchange and observe its time, through children kept by counter and labels."""
        key = (counter, *counter_labels)
        children = self._exchange_children.get(key)
        if children is None:
            children = (counter.labels(*counter_labels), histogram.labels(*histogram_labels))
            self._exchange_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_request(self, model: str, items: int) -> None:
        self.request_items.labels(model).observe(items)

    def observe_batch(
        self, model: str, items: int, seconds: float, queued_items: int, waits: list[float]
    ) -> None:
        self.batch_items.labels(model).observe(items)
        self.inference_seconds.labels(model).observe(seconds)
        self.queued_items.labels(model).set(queued_items)
        queue = self.stage_seconds.labels("queue", model)
        for waited in waits:
            queue.observe(waited)
        self.last_inference.labels(model).set(time.time())

    def observe_stage(self, stage: str, model: str, seconds: float) -> None:
        self.stage_seconds.labels(stage, model).observe(seconds)

    def observe_outcome(self, model: str, succeeded: bool, seconds: float) -> None:
        outcome = "success" if succeeded else "fail"
        self.model_requests.labels(model, outcome).inc()
        self.model_request_seconds.labels(model, outcome).inc(seconds)

    def model_totals(self, models: Iterable[str]) -> dict[str, ModelTotals]:
        """Each model's totals, summed over worker processes as ``exposition`` is (one
        collection for all of them)."""
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in self._summed_registry().collect()
            for sample in family.samples
        }

        def value(model: str, sample: str, **labels: str) -> float:
            return samples.get((sample, tuple(sorted({"model": model, **labels}.items()))), 0.0)

        def timed(model: str, count: str, seconds: str, **labels: str) -> Timed:
            return Timed(value(model, count, **labels), value(model, seconds, **labels))

        return {
            model: ModelTotals(
                success=timed(
                    model,
                    "cnn_serve_model_requests_total",
                    "cnn_serve_model_request_seconds_total",
                    outcome="success",
                ),
                fail=timed(
                    model,
                    "cnn_serve_model_requests_total",
                    "cnn_serve_model_request_seconds_total",
                    outcome="fail",
                ),
                queue=timed(
                    model,
                    "cnn_serve_stage_seconds_count",
                    "cnn_serve_stage_seconds_sum",
                    stage="queue",
                ),
                runs=timed(
                    model, "cnn_serve_inference_seconds_count", "cnn_serve_inference_seconds_sum"
                ),
                images=value(model, "cnn_serve_batch_items_sum"),
                last_inference_s=value(model, "cnn_serve_last_inference_timestamp_seconds"),
            )
            for model in models
        }

    def _summed_registry(self) -> CollectorRegistry:
        """This process's registry, or with several workers (``PROMETHEUS_MULTIPROC_DIR``) one
        that sums every worker's files."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry

    def exposition(self) -> bytes:
        """The text exposition of every metric, summed over worker processes if there are several.

        With several uvicorn workers each process counts on its own; ``python -m service`` then
        sets ``PROMETHEUS_MULTIPROC_DIR`` so that prometheus-client shares the counts through files
        in that directory, and a scrape answered by any worker reports the whole server.
        """
        return generate_latest(self._summed_registry())
