"""Prometheus metrics: requests by route and status, latency, batch sizes, model time."""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# Methods counted by name; any other (httptools accepts WebDAV's and more) counts as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# A path no route serves is counted as route "unmatched" (by the edge); so is a method a route
# does not serve (405), so that strangers cannot add series with bogus paths or methods.
METHOD_NOT_ALLOWED = 405
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


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
        # labels() validates and looks up under a lock: a few microseconds on every request.
        # The children are kept here instead; methods, route templates and statuses are all
        # bounded (see observe_exchange), so this stays small.
        self._exchange_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_exchange(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count and time one HTTP request and its answer (``route``: the path template).

        Label values come from bounded sets only: the known methods, the app's route templates
        and the statuses it answers with. Unknown methods and unrouted requests share labels.
        """
        if method not in KNOWN_METHODS:
            method = "other"
        if status == METHOD_NOT_ALLOWED:
            route = "unmatched"
        key = (method, route, status)
        children = self._exchange_children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
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

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """(sample name, sorted labels) -> value, summed over worker processes as
        ``exposition`` is."""
        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect()
            for sample in family.samples
        }

    def exposition(self) -> bytes:
        """The text exposition of every metric, summed over worker processes if there are several.

        With several uvicorn workers each process counts on its own; ``python -m service`` then
        sets ``PROMETHEUS_MULTIPROC_DIR`` so that prometheus-client shares the counts through files
        in that directory, and a scrape answered by any worker reports the whole server.
        """
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
