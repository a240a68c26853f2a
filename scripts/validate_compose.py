"""Validate docker-compose.yml against the Compose specification's JSON schema.

The schema is vendored in ``scripts/vendor/compose-spec/`` (from the ``docker-compose`` 1.29.2
wheel on PyPI, Apache-2.0), so the check runs offline. Beyond the schema, this checks what the
smoke test relies on: the api service's port and healthcheck match the Dockerfile.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA = Path(__file__).resolve().parent / "vendor" / "compose-spec" / "compose_spec.json"


def compose_schema() -> dict[str, Any]:
    """The vendored Compose specification schema."""
    return json.loads(SCHEMA.read_text())  # type: ignore[no-any-return]


def check_consistency(document: dict[str, Any]) -> list[str]:
    """The api service must expose what the image serves."""
    problems = []
    api = document["services"]["api"]
    if not any(str(port).endswith(":8000") for port in api.get("ports", [])):
        problems.append("api must publish the image's port 8000")
    if api.get("healthcheck", {}).get("test") != ["CMD", "python", "-m", "service.healthcheck"]:
        problems.append("api healthcheck must run python -m service.healthcheck like the image")
    for key in ("init", "read_only"):
        if api.get(key) is not True:
            problems.append(f"api must set {key}: true")
    return problems


def main(path: str) -> int:
    document = yaml.safe_load(Path(path).read_text())
    validator = jsonschema.Draft7Validator(compose_schema())
    errors = [
        f"{'/'.join(map(str, error.path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]
    errors += check_consistency(document)
    for error in errors:
        print(f"{path}: {error}", file=sys.stderr)
    if not errors:
        print(f"{path}: valid against the Compose specification")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docker-compose.yml"))
