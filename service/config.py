"""Service settings: one class, read from ``CNN_SERVE_*`` environment variables."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger("service.config")
Exposure = Literal["public", "operator", "off"]
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
ENV_PREFIX = "CNN_SERVE_"
# Settings renamed for clarity: new name -> old name, still read (with a warning) until removed.
RENAMED = {
    "max_items_per_request": "max_batch_size",
    "batch_max_items": "batch_max_size",
}


def _renamed(field: str) -> AliasChoices:
    """The env names a renamed field reads: its own, then its old one; and its Python name."""
    return AliasChoices(
        f"{ENV_PREFIX}{field}".upper(), f"{ENV_PREFIX}{RENAMED[field]}".upper(), field
    )


def available_cpus() -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # Not Linux.
        cpus = os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


class Settings(BaseSettings):
    """Every knob of the service. Each field reads ``CNN_SERVE_<FIELD NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    models_dir: Path = Field(Path("models"), description="Directory of <name>/model.json + .onnx.")
    default_model: str = Field("mnist-deep-cnn", description="Model behind /predict.")
    host: str = Field("0.0.0.0", description="Address uvicorn binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the API, the page and health.")
    workers: int = Field(
        0, ge=0, le=64, description="uvicorn worker processes; 0 = one per available CPU."
    )
    intra_op_threads: int = Field(
        0, ge=0, le=256, description="ONNX Runtime threads per run; 0 = CPUs / workers."
    )
    inference_threads: int = Field(
        1, ge=1, le=64, description="Batches run at once per process (each uses intra_op_threads)."
    )
    max_items_per_request: int = Field(
        256,
        ge=1,
        le=4096,
        validation_alias=_renamed("max_items_per_request"),
        description="Most images or instances in one request (was MAX_BATCH_SIZE).",
    )
    max_feature_map_items: int = Field(
        16,
        ge=1,
        le=256,
        description="Most images in one V2 request that asks for feature-map outputs.",
    )
    max_explain_items: int = Field(
        16,
        ge=1,
        le=256,
        description="Most images in one /explain request (each costs about 170 forward runs).",
    )
    feature_map_queue_items: int = Field(
        64,
        ge=1,
        le=4096,
        description="Images of feature-map and explanation requests one worker process queues "
        "or runs at once (each returns every layer's activations, thousands of times a "
        "prediction's data, or costs about 170 runs); more are refused (503).",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body, checked before reading."
    )
    max_image_pixels: int = Field(
        16_000_000,
        ge=784,
        description="Largest decoded image (width x height), checked on its header first. JPEGs "
        "count at the reduced size they decode at (a 48 MP photo decodes at 1/8 scale).",
    )
    decode_memory_mb: int = Field(
        256,
        ge=16,
        description="Memory that image decodes in one worker process may hold together; an "
        "image needing more alone is refused (413), others wait their turn.",
    )
    max_image_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest single image.")
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Longest a request may take once its body has arrived: decoding, "
        "preprocessing, queueing and inference (504 past it).",
    )
    batch_max_items: int = Field(
        64,
        ge=1,
        le=4096,
        validation_alias=_renamed("batch_max_items"),
        description="Dynamic batching: most items in one model run (was BATCH_MAX_SIZE).",
    )
    batch_max_delay_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Dynamic batching: longest wait for more requests once one is waiting. "
        "0 batches only what is already queued, which under load is plenty: requests pile up "
        "while the model runs.",
    )
    batch_max_queue: int = Field(
        4096, ge=1, description="Dynamic batching: queued items before 503 + Retry-After."
    )
    max_inflight_requests: int = Field(
        128,
        ge=1,
        description="Inference requests one worker process handles at once; more are refused "
        "(503) before their bodies are read.",
    )
    inflight_body_mb: int = Field(
        128,
        ge=1,
        description="Request bodies one worker process holds at once (declared sizes; a chunked "
        "body counts as MAX_BODY_BYTES); more are refused (503) before they are read.",
    )
    overload_pause_ms: float = Field(
        1000.0,
        ge=0,
        le=5000,
        description="How long a refusal under overload is held back, so that clients retrying at "
        "once do not eat the CPU that serves the admitted requests.",
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Largest request line plus headers (431 past it)."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Time a client has to send its request line and headers (408).",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Time a client has to send its whole body once its headers are in.",
    )
    worker_stall_timeout_s: float = Field(
        10.0,
        ge=0,
        le=600,
        description="A worker whose event loop has not run for this long (stopped, stuck) is "
        "killed and replaced, with several workers; 0: never.",
    )
    repository_poll_s: float = Field(
        5.0,
        ge=0,
        le=86400,
        description="How often each worker looks for new, changed or removed model versions "
        "in MODELS_DIR (a few stat calls and small reads); 0: only on start-up and through "
        "the repository API.",
    )
    worker_start_timeout_s: float = Field(
        300.0,
        ge=0,
        le=3600,
        description="A worker that has not loaded its models and started serving within this "
        "long is killed and started again (5 times at most), with several workers; 0: never.",
    )
    graceful_shutdown_s: int = Field(
        10, ge=0, le=3600, description="Time to finish requests on SIGTERM."
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level of the service and uvicorn."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text: one readable line per record; json: one JSON object per line (time, "
        "level, logger, message, request_id, and route, status and duration_ms on access lines).",
    )
    access_log: bool = Field(
        False, description="One info line per request (method, route, status, duration)."
    )
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated API keys; when any is set (here or in API_KEYS_FILE), every "
        "route but health, the web page and the docs needs 'Authorization: Bearer <key>'.",
    )
    api_keys_file: Path | None = Field(
        None, description="A file of API keys, one per line (e.g. a mounted secret)."
    )
    cors_allow_origins: str = Field(
        "",
        description="Comma-separated origins whose web pages may call the API (CORS); empty: "
        "none, and browser requests from other origins are refused (403).",
    )
    trusted_hosts: str = Field(
        "",
        description="Comma-separated host names under which the service's own page is served "
        "(besides localhost and IP addresses): a page of another name, even one resolving here "
        "(DNS rebinding), is refused (403).",
    )
    docs: Exposure = Field(
        "public", description="/docs and /openapi.json: public, operator (port only) or off."
    )
    metrics: Exposure = Field(
        "public", description="/metrics: public, operator (port only) or off."
    )
    operator_port: int = Field(
        0, ge=0, le=65535, description="A second port for operator routes; 0: none."
    )
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="Port of the Open Inference Protocol over gRPC (8001, as Triton); 0: off.",
    )
    shared_memory: bool = Field(
        False,
        description="Triton's system shared-memory extension under /v2: clients on this host "
        "register /dev/shm regions and pass tensors through them. Off by default: a region "
        "lets a client have the server read and write that /dev/shm file.",
    )

    @model_validator(mode="before")
    @classmethod
    def _warn_about_old_names(cls, values: Any) -> Any:
        for new, old in RENAMED.items():
            old_name, new_name = f"{ENV_PREFIX}{old}".upper(), f"{ENV_PREFIX}{new}".upper()
            if old_name in os.environ:
                logger.warning("%s is deprecated: use %s", old_name, new_name)
        return values

    @model_validator(mode="after")
    def _operator_port_when_needed(self) -> Settings:
        if "operator" in (self.docs, self.metrics) and not self.operator_port:
            raise ValueError("docs or metrics set to 'operator' need CNN_SERVE_OPERATOR_PORT")
        if self.operator_port and self.operator_port == self.port:
            raise ValueError("CNN_SERVE_OPERATOR_PORT must differ from CNN_SERVE_PORT")
        if self.grpc_port and self.grpc_port in (self.port, self.operator_port):
            raise ValueError("CNN_SERVE_GRPC_PORT must differ from the HTTP ports")
        if self.inflight_body_mb * 2**20 < self.max_body_bytes:
            raise ValueError(
                "CNN_SERVE_INFLIGHT_BODY_MB must hold at least one MAX_BODY_BYTES body"
            )
        return self

    @field_validator("api_keys_file")
    @classmethod
    def _keys_file_readable(cls, path: Path | None) -> Path | None:
        if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            raise ValueError(f"{path} is not a readable file")
        return path

    @property
    def allowed_origins(self) -> list[str]:
        return _comma_separated(self.cors_allow_origins)

    @property
    def trusted_host_names(self) -> list[str]:
        return _comma_separated(self.trusted_hosts)

    def resolved_workers(self) -> int:
        """Worker processes: as set, or one per available CPU (measured fastest on 2 cores)."""
        return self.workers or available_cpus()

    def resolved_intra_op_threads(self) -> int:
        """Threads per ONNX Runtime run so that workers x inference threads x threads <= CPUs."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return max(1, available_cpus() // (self.resolved_workers() * self.inference_threads))


def _comma_separated(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


class SettingsError(ValueError):
    """The environment holds a setting the service cannot use; the message is one line."""


def describe_invalid(error: ValidationError) -> str:
    """One line naming each bad setting's variable, its value and what is allowed."""
    problems = []
    for item in error.errors(include_url=False):
        location = [str(part) for part in item["loc"]]
        field = location[0] if location else ""
        variable = (
            field.upper()
            if field.upper().startswith(ENV_PREFIX)
            else (f"{ENV_PREFIX}{field.upper()}" if field else "settings")
        )
        message = str(item["msg"]).removeprefix("Value error, ")
        if field and "input" in item and not isinstance(item["input"], dict):
            value = str(item["input"])
            value = value if len(value) <= 40 else f"{value[:20]}...({len(value)} characters)"
            problems.append(f"{variable}={value}: {message}")
        else:
            problems.append(f"{variable}: {message}" if field else message)
    return "; ".join(problems).replace("\n", " ")


def load_settings() -> Settings:
    """Settings from the environment (``get_settings`` caches this).

    Raises:
        SettingsError: a setting is malformed or out of range (one line, naming it).
    """
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(describe_invalid(error)) from None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment.

    Raises:
        SettingsError: see ``load_settings``.
    """
    return load_settings()
