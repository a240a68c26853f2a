#!/usr/bin/env bash
# The container as users run it. Builds the Dockerfile with podman (no Docker engine on these
# machines), then:
# 1. runs the image with `podman run` and docker-compose.yml's own settings (read-only root,
#    no capabilities, its user and CMD, the models mount, settings passed through, 1 GiB,
#    2 CPUs; loopback ports), calls /predict, /feature-maps, V2 (HTTP and gRPC) and /metrics, runs its
#    HEALTHCHECK inside it, checks from inside what the container enforces, and stops it with
#    SIGTERM within the grace period;
# 2. runs the rendered Kubernetes overlays as pods with `podman kube play`
#    (scripts/kube_play_smoke.py: probes, hardening, limits, replicas, API keys, SIGTERM);
# 3. builds the train target and retrains a small model inside it into a mounted models/.
# What this proves and what it does not: docs/deployment-tests.md.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=localhost/cnn-serve-base:bookworm
IMAGE=cnn-serve:test
PORT=${SMOKE_PORT:-18000}
GRPC_PORT=${SMOKE_GRPC_PORT:-18001}
PYTHON=${PYTHON:-python3}
# The project's container storage, apart from anything else on the machine.
WORK=${CNN_SERVE_CONTAINER_WORK:-/var/tmp/cnn-serve-containers}
mkdir -p "$WORK"
cat >"$WORK/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
export CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
export CONTAINERS_CONF="$PWD/scripts/podman/containers.conf"

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

# Run the image as `docker compose up` would: podman run with the compose file's own settings
# (scripts/compose_to_podman.py), from a copy of the compose file beside a models/ directory
# that holds two of the models, with two settings in the "shell": the mount and the
# pass-through are proved by what the service then says it serves.
sample=$(mktemp -d "$WORK/compose.XXXXXX")
cp docker-compose.yml "$sample/"
mkdir "$sample/models"
cp -r models/mnist-deep-cnn models/mnist-deep-cnn-int8 "$sample/models/"
chmod -R a+rX "$sample"
mapfile -t run_args < <("$PYTHON" scripts/compose_to_podman.py "$sample/docker-compose.yml" \
  --env "CNN_SERVE_PORT=$PORT" --env "CNN_SERVE_GRPC_PORT=$GRPC_PORT" \
  --env CNN_SERVE_DEFAULT_MODEL=mnist-deep-cnn-int8)
ctr=cnn-serve-smoke
podman rm -f "$ctr" >/dev/null 2>&1 || true
cleanup() {
  podman rm -f "$ctr" >/dev/null 2>&1 || true
  rm -rf "$sample"
}
trap cleanup EXIT
quiet_podman() {  # podman without systemd cannot schedule healthcheck timers: not an error here
  podman "$@" 2> >(grep -v "unable to get systemd connection" >&2)
}

echo "== podman run ${run_args[*]} $IMAGE"
started=$(date +%s.%N)
quiet_podman run -d --name "$ctr" "${run_args[@]}" "$IMAGE" >/dev/null
ready=""
for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1; then
    ready=$(date +%s.%N); break
  fi
  [ "$(podman inspect "$ctr" --format '{{.State.Running}}')" = true ] \
    || { podman logs "$ctr"; echo "the container exited during start-up"; exit 1; }
  sleep 0.1
done
[ -n "$ready" ] || { echo "not ready in 30 s"; podman logs "$ctr"; exit 1; }
echo "ready in $(echo "$ready - $started" | bc) s (target: < 5 s)"

"$PYTHON" scripts/smoke_requests.py "http://127.0.0.1:$PORT" \
  --default-model mnist-deep-cnn-int8 --models mnist-deep-cnn,mnist-deep-cnn-int8 \
  --grpc "127.0.0.1:$GRPC_PORT"

# The image's own HEALTHCHECK command, run by podman inside the container.
quiet_podman healthcheck run "$ctr" && echo "HEALTHCHECK passes inside the container"
# What the container enforces, seen from inside it.
podman exec "$ctr" python -c "$(cat scripts/container_facts.py)" \
  | "$PYTHON" scripts/container_facts.py --check --name "$ctr" --uid "$(podman image inspect \
    "$IMAGE" --format '{{.Config.User}}')" --memory-bytes $((2**30)) --cpus 2

grace=$(podman inspect "$ctr" --format '{{.Config.StopTimeout}}')
echo "== SIGTERM (podman stop, SIGKILL after the compose file's ${grace} s grace period)"
stop_started=$(date +%s.%N)
quiet_podman stop -t "$grace" "$ctr" >/dev/null
took=$(echo "$(date +%s.%N) - $stop_started" | bc)
status=$(podman inspect "$ctr" --format '{{.State.ExitCode}}')
log=$(podman logs "$ctr" 2>&1)
grep -q "Application shutdown complete" <<<"$log" || { echo "$log"; echo "no clean shutdown"; exit 1; }
# 0: the supervisor of several workers exits cleanly; 143: one uvicorn process re-raises the
# SIGTERM it handled. 137 would mean podman had to SIGKILL it.
case "$status" in 0|143) ;; *) echo "$log"; echo "exit status $status after SIGTERM"; exit 1;; esac
[ "$(echo "$took < $grace" | bc)" = 1 ] || { echo "stopping took $took s"; exit 1; }
echo "stopped cleanly on SIGTERM in $took s (exit $status)"

echo "== the Kubernetes overlays as pods"
"$PYTHON" scripts/kube_play_smoke.py --image "localhost/$IMAGE"

echo "== the train target: retrain into a mounted models/ directory"
podman build --format docker --isolation=chroot \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  --build-arg BASE_IMAGE="$BASE" --target train -t cnn-serve-train:test . \
  >/tmp/cnn-serve-train-build.log 2>&1 || { tail -50 /tmp/cnn-serve-train-build.log; exit 1; }
work=$(mktemp -d "$WORK/train.XXXXXX")
mkdir -p "$work/data" "$work/models" "$work/runs"
"$PYTHON" scripts/make_tiny_mnist_npz.py "$work/data/mnist.npz" >/dev/null
# The image's own ENTRYPOINT (python -m training), as `docker compose run train` would use it.
podman run --rm -v "$work/data:/data:ro" -v "$work/models:/app/models" \
  -v "$work/runs:/app/runs" cnn-serve-train:test \
  all --name smoke-cnn --architecture cnn --data /data/mnist.npz \
  --validation-size 100 --epochs 1 --verify-images 100 >/tmp/cnn-serve-train.log 2>&1 \
  || { tail -30 /tmp/cnn-serve-train.log; exit 1; }
"$PYTHON" - "$work/models/smoke-cnn" <<'PY'
import sys
from pathlib import Path
from service.repository import read_model_card
card = read_model_card(Path(sys.argv[1]))  # Checks the sha256 of the exported model too.
print(f"train image exported {card.name}: {len(card.feature_maps)} feature-map layers, sha256 ok")
PY
rm -rf "$work"
echo "container smoke test passed"
