"""``python -m service`` / ``cnn-serve``: check the models, then serve them with uvicorn."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from service.config import SettingsError, get_settings
from service.errors import ModelLoadError
from service.repository import discover_serving_models, read_model_card
from service.workers import PortInUseError, configure_logging, serve


def check_models() -> None:
    """Fail fast, before any worker starts, if a model is missing or corrupt."""
    settings = get_settings()
    model_dirs = discover_serving_models(settings.models_dir, settings.default_model)
    for model_dir in model_dirs.values():
        read_model_card(model_dir)


def check_metrics_directory() -> None:
    """A ``PROMETHEUS_MULTIPROC_DIR`` given by the operator must be a writable directory.

    Raises:
        SettingsError: it is not.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and not (os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)):
        raise SettingsError(f"PROMETHEUS_MULTIPROC_DIR={directory}: not a writable directory")


def main() -> int:
    """Serve until SIGTERM/SIGINT; exit 1 with a one-line reason if it cannot start."""
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
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
