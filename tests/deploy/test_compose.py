"""docker-compose.yml: every setting reaches the service, the models are mounted, and the
``podman run`` arguments the container smoke test derives from it are what compose would run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from service.config import Settings
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from compose_to_podman import podman_arguments  # noqa: E402
from container_facts import facts, problems  # noqa: E402

COMPOSE = ROOT / "docker-compose.yml"
# The container's own address and mount, and a port compose does not publish.
# The OpenTelemetry variables service/tracing.py reads, passed through too.
TRACING = {
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_SERVICE_NAME",
}
NOT_PASSED = {
    "CNN_SERVE_HOST",
    "CNN_SERVE_PORT",
    "CNN_SERVE_GRPC_PORT",
    "CNN_SERVE_MODELS_DIR",
    "CNN_SERVE_OPERATOR_PORT",
}


def api() -> dict[str, object]:
    return yaml.safe_load(COMPOSE.read_text())["services"]["api"]  # type: ignore[no-any-return]


def read_by_tracing() -> set[str]:
    """Every OTEL_* name service/tracing.py mentions."""
    return set(re.findall(r"OTEL_[A-Z_]+", (ROOT / "service" / "tracing.py").read_text()))


def test_every_setting_passes_through_from_the_shell() -> None:
    environment = api()["environment"]
    assert isinstance(environment, dict)
    settings = {f"CNN_SERVE_{name.upper()}" for name in Settings.model_fields}
    assert set(environment) == (settings - NOT_PASSED) | TRACING
    assert TRACING <= read_by_tracing()  # Each passed name is one the service reads.
    assert all(value is None for value in environment.values())  # bare names: pass-through


def test_models_are_mounted_read_only_where_the_image_reads_them() -> None:
    models_dir = re.search(r"CNN_SERVE_MODELS_DIR=(\S+)", (ROOT / "Dockerfile").read_text())
    assert models_dir is not None
    assert f"./models:{models_dir.group(1)}:ro" in api()["volumes"]  # type: ignore[operator]


def test_readme_example_reaches_the_container() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "CNN_SERVE_DEFAULT_MODEL=my-deep-cnn docker compose up" in readme
    arguments = podman_arguments(COMPOSE, {"CNN_SERVE_DEFAULT_MODEL": "my-deep-cnn"})
    assert "--env=CNN_SERVE_DEFAULT_MODEL=my-deep-cnn" in arguments
    assert f"--volume={ROOT / 'models'}:/app/models:ro" in arguments
    assert not any(argument.startswith("--env=CNN_SERVE_WORKERS") for argument in arguments)


@pytest.mark.parametrize(
    ("shell", "published"), [({}, "8000"), ({"CNN_SERVE_PORT": "8500"}, "8500")]
)
def test_host_port_follows_cnn_serve_port(shell: dict[str, str], published: str) -> None:
    arguments = podman_arguments(COMPOSE, shell)
    assert f"--publish=127.0.0.1:{published}:8000" in arguments
    assert not any(argument.startswith("--env=CNN_SERVE_PORT") for argument in arguments)


def test_podman_runs_compose_hardening() -> None:
    arguments = podman_arguments(COMPOSE, {})
    for expected in (
        "--read-only",
        "--init",
        "--tmpfs=/tmp",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges:true",
        "--memory=1g",
        "--cpus=2.0",
        "--stop-timeout=20",
    ):
        assert expected in arguments


def test_a_compose_key_the_translation_does_not_know_fails_loudly(tmp_path: Path) -> None:
    document = yaml.safe_load(COMPOSE.read_text())
    document["services"]["api"]["privileged"] = True
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(yaml.safe_dump(document))
    with pytest.raises(ValueError, match="privileged"):
        podman_arguments(compose, {})


HARDENED = {
    "uid": 10001,
    "gid": 10001,
    "effective_capabilities": 0,
    "no_new_privileges": True,
    "seccomp_filtering": True,
    "root_writable": False,
    "tmp_writable": True,
    "memory_limit_bytes": 2**30,
    "cpu_limit": 2.0,
}


def test_container_facts_check_names_each_difference() -> None:
    assert problems(HARDENED, uid=10001, memory_bytes=2**30, cpus=2.0) == []
    loose = {**HARDENED, "uid": 0, "root_writable": True, "effective_capabilities": 0x2000}
    wrong = problems(loose, uid=10001, memory_bytes=2**30, cpus=2.0)
    assert [line.split(":")[0] for line in wrong] == [
        "uid",
        "effective_capabilities",
        "root_writable",
    ]


def test_container_facts_are_read_from_this_process() -> None:
    found = facts()
    assert set(found) == set(HARDENED)
    assert found["tmp_writable"] is True and isinstance(found["effective_capabilities"], int)
