"""The ``podman run`` arguments that run docker-compose.yml's ``api`` service as compose would.

``docker compose up`` cannot run on these machines (no Docker engine), so the container smoke
test runs the image with ``podman run`` and these arguments: the compose file's own ports,
volumes, environment pass-through, read-only root, tmpfs, capabilities, security options,
memory, CPUs, init and stop grace period. The one test patch: ports are published on the
loopback address only. Every key of the service must be one this script translates or names as
not applying, so a new compose setting cannot be skipped silently.

Usage: python scripts/compose_to_podman.py [--env NAME=VALUE ...] [docker-compose.yml]
prints one argument per line. ``--env`` stands in for the shell's environment (what compose
would interpolate and pass through); the real environment is not read.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# Keys that do not become podman arguments here, and why.
NOT_APPLYING = {
    "build": "the smoke test builds the image itself",
    "image": "the smoke test names the image it built",
    "restart": "restart policies need a supervisor (systemd); the test stops the container",
    "healthcheck": "the image's HEALTHCHECK is the same command (scripts/validate_compose.py)",
}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def interpolate(text: str, environment: Mapping[str, str]) -> str:
    """Compose's ``${NAME}`` and ``${NAME:-default}``, from ``environment``."""

    def value(match: re.Match[str]) -> str:
        found = environment.get(match["name"], "")
        return found if found else (match["default"] or "")

    return INTERPOLATION.sub(value, text)


def _seconds(duration: str) -> int:
    """Compose durations as the file uses them: ``20s``, ``1m``."""
    match = re.fullmatch(r"(\d+)([sm])", duration)
    if match is None:
        raise ValueError(f"unsupported duration {duration!r}")
    return int(match[1]) * (60 if match[2] == "m" else 1)


def podman_arguments(
    compose_file: Path, environment: Mapping[str, str], service: str = "api"
) -> list[str]:
    """``podman run`` options (before the image name) for ``service``.

    Raises:
        ValueError: the service uses a key this script does not translate.
    """
    spec: dict[str, Any] = yaml.safe_load(compose_file.read_text())["services"][service]
    base = compose_file.resolve().parent
    arguments: list[str] = []
    for key, value in spec.items():
        if key in NOT_APPLYING:
            continue
        if key == "ports":
            for port in value:
                host, container = interpolate(str(port), environment).rsplit(":", 1)
                arguments.append(f"--publish=127.0.0.1:{host}:{container}")  # the test patch
        elif key == "volumes":
            for volume in value:
                source, target, *mode = volume.split(":")
                source_path = (base / source).resolve() if source.startswith(".") else source
                arguments.append(f"--volume={':'.join([str(source_path), target, *mode])}")
        elif key == "environment":
            for name, preset in value.items():
                if preset is not None:
                    arguments.append(f"--env={name}={interpolate(str(preset), environment)}")
                elif name in environment:  # A bare name: passed through when the shell has it.
                    arguments.append(f"--env={name}={environment[name]}")
        elif key == "read_only" and value:
            arguments.append("--read-only")
        elif key == "init" and value:
            arguments.append("--init")
        elif key == "tmpfs":
            arguments += [f"--tmpfs={path}" for path in value]
        elif key == "cap_drop":
            arguments += [f"--cap-drop={capability}" for capability in value]
        elif key == "security_opt":
            arguments += [f"--security-opt={option}" for option in value]
        elif key == "mem_limit":
            arguments.append(f"--memory={value}")
        elif key == "cpus":
            arguments.append(f"--cpus={value}")
        elif key == "stop_grace_period":
            arguments.append(f"--stop-timeout={_seconds(str(value))}")
        else:
            raise ValueError(f"{compose_file}: services.{service}.{key} is not translated")
    return arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("compose_file", nargs="?", type=Path, default=Path("docker-compose.yml"))
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    environment = dict(item.split("=", 1) for item in args.env)
    print("\n".join(podman_arguments(args.compose_file, environment)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
