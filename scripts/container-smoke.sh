#!/usr/bin/env bash
# Builds the Dockerfile with podman (no Docker engine here), runs the image's own CMD as the
# image's own user and environment with buildah, checks /health/ready, /predict (an image upload)
# and /feature-maps, stops it with SIGTERM, and reports image size and time to ready.
# Recipe: shared/docs/containers.md.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=localhost/cnn-serve-base:bookworm
IMAGE=cnn-serve:test
PORT=${SMOKE_PORT:-18000}
PYTHON=${PYTHON:-python3}

if ! podman image exists "$BASE"; then
  echo "== making a local Debian bookworm base image (no registry can be reached)"
  mirror=$(awk '/^URIs:/ {uri=$2} /^Suites:/ && $2 == "bookworm" {print uri; exit}' \
    /etc/apt/sources.list.d/debian.sources)
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
    "$rootfs" "$mirror" >/dev/null
  tar -C "$rootfs" -c . | podman import - "$BASE" >/dev/null
  rm -rf "$rootfs"
fi

echo "== building $IMAGE"
podman build --format docker --isolation=chroot \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  --build-arg BASE_IMAGE="$BASE" --target runtime -t "$IMAGE" . >/tmp/cnn-serve-build.log 2>&1 \
  || { tail -50 /tmp/cnn-serve-build.log; exit 1; }

base_size=$(podman image inspect "$BASE" --format '{{.Size}}')
image_size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
added_mb=$(( (image_size - base_size) / 1000000 ))
echo "image adds ${added_mb} MB on top of its base (target: < 250 MB)"

# Run what the image would run: its CMD, its USER, its ENV (port moved for the test only).
cmd=$(podman image inspect "$IMAGE" --format '{{json .Config.Cmd}}')
user=$(podman image inspect "$IMAGE" --format '{{.Config.User}}')
mapfile -t env_args < <(podman image inspect "$IMAGE" --format '{{range .Config.Env}}{{println .}}{{end}}' \
  | sed '/^$/d' | sed '/^CNN_SERVE_PORT=/d' | sed 's/^/--env=/')
env_args+=("--env=CNN_SERVE_PORT=$PORT")  # The image serves on the default port; moved for the test.
mapfile -t cmd_args < <("$PYTHON" -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$cmd")

ctr=$(buildah from "$IMAGE")
server_pid=""
cleanup() {
  # A failed run must not leave the server serving: stop whatever buildah started.
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    helper=$(pgrep -n -f '^buildah-chroot-exec' || true)
    [ -n "$helper" ] && pkill -KILL -P "$helper" 2>/dev/null
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  buildah rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT

started=$(date +%s.%N)
buildah run --isolation=chroot --network=host --user "$user" --workingdir /app "${env_args[@]}" \
  "$ctr" -- "${cmd_args[@]}" >/tmp/cnn-serve-container.log 2>&1 &
server_pid=$!

ready=""
for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1; then
    ready=$(date +%s.%N); break
  fi
  kill -0 "$server_pid" 2>/dev/null || { cat /tmp/cnn-serve-container.log; exit 1; }
  sleep 0.1
done
[ -n "$ready" ] || { echo "not ready in 30 s"; cat /tmp/cnn-serve-container.log; exit 1; }
echo "ready in $(echo "$ready - $started" | bc) s (target: < 5 s)"

"$PYTHON" scripts/smoke_requests.py "http://127.0.0.1:$PORT"

# The healthcheck command the image declares must pass too.
buildah run --isolation=chroot --network=host --user "$user" "${env_args[@]}" "$ctr" -- \
  python -m service.healthcheck && echo "HEALTHCHECK command passes"

# The server itself: the child of buildah's chroot helper, not buildah (whose arguments match too).
chroot_helper=$(pgrep -n -f '^buildah-chroot-exec' || true)
server=$([ -n "$chroot_helper" ] && pgrep -P "$chroot_helper" | head -1 || true)
echo "== SIGTERM to the server (pid ${server:-?})"
[ -n "$server" ] && kill -TERM "$server"
if wait "$server_pid"; then status=0; else status=$?; fi
log=/tmp/cnn-serve-container.log
grep -q "Application shutdown complete" "$log" && grep -q "Finished server process" "$log" \
  || { cat "$log"; echo "no clean shutdown"; exit 1; }
# uvicorn re-raises the SIGTERM it handled once it has shut down (exit by signal, 143 under
# Docker); buildah reports that as "exited on terminated" with status 1. Anything else is an error.
if [ "$status" -ne 0 ] && ! grep -q "subprocess exited on terminated" "$log"; then
  cat "$log"; echo "server failed with status $status"; exit 1
fi
echo "server shut down cleanly on SIGTERM"

echo "== the train target: retrain into a mounted models/ directory"
podman build --format docker --isolation=chroot \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  --build-arg BASE_IMAGE="$BASE" --target train -t cnn-serve-train:test . \
  >/tmp/cnn-serve-train-build.log 2>&1 || { tail -50 /tmp/cnn-serve-train-build.log; exit 1; }
work=$(mktemp -d)
mkdir -p "$work/data" "$work/models" "$work/runs"
"$PYTHON" scripts/make_tiny_mnist_npz.py "$work/data/mnist.npz" >/dev/null
entrypoint=$(podman image inspect cnn-serve-train:test --format '{{json .Config.Entrypoint}}')
mapfile -t entry_args < <("$PYTHON" -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$entrypoint")
train_ctr=$(buildah from cnn-serve-train:test)
buildah run --isolation=chroot --network=host -v "$work/data:/data:ro" \
  -v "$work/models:/app/models" -v "$work/runs:/app/runs" "$train_ctr" -- \
  "${entry_args[@]}" all --name smoke-cnn --architecture cnn --data /data/mnist.npz \
  --validation-size 100 --epochs 1 --verify-images 100 >/tmp/cnn-serve-train.log 2>&1 \
  || { tail -30 /tmp/cnn-serve-train.log; buildah rm "$train_ctr" >/dev/null; exit 1; }
buildah rm "$train_ctr" >/dev/null
"$PYTHON" - "$work/models/smoke-cnn" <<'PY'
import sys
from pathlib import Path
from service.repository import read_model_card
card = read_model_card(Path(sys.argv[1]))  # Checks the sha256 of the exported model too.
print(f"train image exported {card.name}: {len(card.feature_maps)} feature-map layers, sha256 ok")
PY
rm -rf "$work"
echo "container smoke test passed"
