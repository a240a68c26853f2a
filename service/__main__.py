"""``python -m service`` / ``cnn-serve``: check the models, then serve them with uvicorn."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from service.config import SettingsError, get_settings
from service.errors import ModelLoadError
from service.lifecycle import CONTROL_ENV
from service.repository import discover_serving_models, read_model_card
from service.shared_memory import REGISTRY_ENV
from service.workers import PortInUseError, configure_logging, serve


def check_models() -> None:
    """Fail fast, before any worker starts, if a model is missing or corrupt."""
    settings = get_settings()
    selected = discover_serving_models(settings.models_dir, settings.default_model)
    for found in selected.values():
        for on_disk in found:
            read_model_card(on_disk.path)


def check_metrics_directory() -> None:
    """A ``PROMETHEUS_MULTIPROC_DIR`` given by the operator must be a writable directory.

    Raises:
        SettingsError: it is not.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and not (os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)):
        raise SettingsError(f"PROMETHEUS_MULTIPROC_DIR={directory}: not a writable directory")


# Command-line options: each sets the CNN_SERVE_* setting of the same name (which it overrides),
# so that worker processes see the same settings.
OPTIONS = {
    "--host": ("HOST", "address to listen on (default 0.0.0.0)"),
    "--port": ("PORT", "port of the API, the page and health (default 8000)"),
    "--grpc-port": (
        "GRPC_PORT",
        "port of the V2 protocol over gRPC; 0 turns it off (default 8001)",
    ),
    "--workers": ("WORKERS", "worker processes; 0 = one per available CPU (default)"),
    "--models-dir": ("MODELS_DIR", "directory of <name>/model.json + model.onnx (default models)"),
    "--default-model": ("DEFAULT_MODEL", "the model behind /predict (default mnist-deep-cnn)"),
    "--log-level": ("LOG_LEVEL", "critical, error, warning, info (default) or debug"),
}


def _version() -> str:
    try:
        return version("cnn-serve")
    except PackageNotFoundError:  # Run from a source tree that is not installed.
        return "unknown"


def parse_command_line(arguments: Sequence[str] | None = None) -> None:
    """Read the command line into the environment's ``CNN_SERVE_*`` settings.

    ``--help`` and ``--version`` print and exit; values are checked with every other setting
    when the settings are read, so a bad one is the same one-line error either way.
    """
    parser = argparse.ArgumentParser(
        prog="cnn-serve",
        description="Serve the CNN digit classifiers in models/ over HTTP (and the Open "
        "Inference Protocol). Every setting is also a CNN_SERVE_* environment variable; see "
        "the README's Configuration table.",
    )
    parser.add_argument("--version", action="version", version=f"cnn-serve {_version()}")
    for option, (setting, help_text) in OPTIONS.items():
        parser.add_argument(option, metavar=setting, help=help_text)
    values = vars(parser.parse_args(arguments))
    for option, (setting, _) in OPTIONS.items():
        value = values[option.removeprefix("--").replace("-", "_")]
        if value is not None:
            os.environ[f"CNN_SERVE_{setting}"] = value


def main(arguments: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; exit 1 with a one-line reason if it cannot start."""
    parse_command_line(arguments)
    try:
        settings = get_settings()
        check_metrics_directory()
        configure_logging(settings)
        check_models()
    except (SettingsError, ModelLoadError) as error:
        print(f"cnn-serve: cannot start: {error}", file=sys.stderr)
        return 1
    workers = settings.resolved_workers()
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Set before the workers start, so that each process's prometheus-client writes its
        # counts where /metrics can sum them (see ServiceMetrics.exposition).
        metrics_dir = tempfile.mkdtemp(prefix="cnn-serve-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    registry_dir = None
    if settings.shared_memory and not os.environ.get(REGISTRY_ENV):
        # One registry of shared-memory regions for every worker (service/shared_memory.py).
        registry_dir = tempfile.mkdtemp(prefix="cnn-serve-shm-")
        os.environ[REGISTRY_ENV] = registry_dir
    control_dir = None
    if workers > 1 and not os.environ.get(CONTROL_ENV):
        # The repository API's requests, read by every worker (service/lifecycle.py).
        control_dir = tempfile.mkdtemp(prefix="cnn-serve-repository-")
        os.environ[CONTROL_ENV] = os.path.join(control_dir, "control.json")
    try:
        return serve(settings, workers)
    except PortInUseError as error:
        print(
            f"cnn-serve: cannot start: {error.strerror}; stop it or set CNN_SERVE_PORT",
            file=sys.stderr,
        )
        return 1
    except OSError as error:  # Binding: an address not on this host, a privileged port.
        print(
            f"cnn-serve: cannot listen on {settings.host}:{settings.port}: {error.strerror}",
            file=sys.stderr,
        )
        return 1
    finally:
        for directory in (metrics_dir, registry_dir, control_dir):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
