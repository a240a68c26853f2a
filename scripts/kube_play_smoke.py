"""Run the rendered Kubernetes overlays as real pods with ``podman kube play``, and check them.

No Kubernetes control plane or kubelet can be installed on these machines; ``podman kube play``
is the nearest real run: the Deployment's pods start from the real image with its
securityContext, read-only root, volumes, ConfigMap and Secret, and cgroup CPU and memory
limits enforced. What podman does not do, this script does or says it does not:

- probes: podman ignores them, so this script polls each probe's path and port (as the
  rendered manifest names them) on each pod's own IP, as a kubelet would, and checks that the
  startup probe's budget covers the measured time to ready;
- Services, HPA, PDB, NetworkPolicy and preStop hooks are not run (their schemas are validated
  by ``tests/deploy/test_kubernetes.py``); ``emptyDir.medium: Memory`` becomes a disk volume.

Test patches, and only these: the image is the one just built (``imagePullPolicy: Never``);
container ports are not published on the host (podman would bind every containerPort on the
host, which two replicas cannot share: each pod is reached on its pod IP instead); production
runs 2 replicas rather than 3 on a 2-CPU machine; the API-key Secret, which an operator
creates, is made here with a random key and ``optional: false`` (podman 4.3 panics without it).

Usage: python scripts/kube_play_smoke.py --image localhost/cnn-serve:test [--overlay dev ...]
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as triton_grpc
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from container_facts import problems  # noqa: E402
from fetch_kubectl import fetch  # noqa: E402

OVERLAYS = ("dev", "production")
PLAYED_KINDS = ("ConfigMap", "Secret", "Deployment")
PRODUCTION_REPLICAS = 2
Manifest = dict[str, Any]


class SmokeFailure(AssertionError):
    """A check of a played pod failed."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def render(overlay: str) -> list[Manifest]:
    kubectl = fetch()
    output = subprocess.run(
        [str(kubectl), "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [item for item in yaml.safe_load_all(output) if item]


def the(objects: list[Manifest], kind: str) -> Manifest:
    (found,) = [item for item in objects if item["kind"] == kind]
    return found


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``1Gi``, ``512Mi``, ``1G``) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9, "": 1}
    match = re.fullmatch(r"(\d+)([KMG]i?|)", quantity)
    check(match is not None, f"unsupported memory quantity {quantity}")
    assert match is not None
    return int(match[1]) * units[match[2]]


def cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@dataclass(frozen=True)
class Played:
    """What was played, and the original container spec the checks read."""

    file: Path
    container: Manifest
    pod_spec: Manifest
    replicas: int
    api_key: str | None


def patched_for_podman(objects: list[Manifest], overlay: str, image: str) -> Played:
    """The objects podman can run, with the test patches of this module's docstring."""
    deployment = the(objects, "Deployment")
    original = json.loads(json.dumps(deployment))  # Kept unpatched for the checks.
    pod_spec = deployment["spec"]["template"]["spec"]
    (main,) = pod_spec["containers"]
    main["image"] = image
    main["imagePullPolicy"] = "Never"
    main.pop("ports")
    if overlay == "production":
        deployment["spec"]["replicas"] = PRODUCTION_REPLICAS
    played = [item for item in objects if item["kind"] in PLAYED_KINDS]
    api_key = None
    for volume in pod_spec.get("volumes", []):
        if "secret" in volume:
            volume["secret"]["optional"] = False
            api_key = secrets.token_urlsafe(24)
            played.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": volume["secret"]["secretName"],
                        "namespace": deployment["metadata"].get("namespace", "default"),
                    },
                    "data": {"keys": base64.b64encode(f"{api_key}\n".encode()).decode()},
                }
            )
    file = Path(tempfile.mkstemp(prefix=f"kube-play-{overlay}-", suffix=".yaml")[1])
    file.write_text(yaml.safe_dump_all(played))
    (original_container,) = original["spec"]["template"]["spec"]["containers"]
    return Played(
        file=file,
        container=original_container,
        pod_spec=original["spec"]["template"]["spec"],
        replicas=deployment["spec"]["replicas"],
        api_key=api_key,
    )


def podman(*arguments: str, check_status: bool = True) -> str:
    result = subprocess.run(["podman", *arguments], capture_output=True, text=True)
    if check_status and result.returncode != 0:
        noise = "unable to get systemd connection"  # podman without systemd: no timers
        errors = [line for line in result.stderr.splitlines() if noise not in line]
        raise SmokeFailure(f"podman {' '.join(arguments)}: {' '.join(errors)}")
    return result.stdout


def pod_ip(pod: str) -> str:
    infra = podman("pod", "inspect", pod, "--format", "{{.InfraContainerID}}").strip()
    networks = json.loads(
        podman("inspect", infra, "--format", "{{json .NetworkSettings.Networks}}")
    )
    return str(next(iter(networks.values()))["IPAddress"])


def probe_url(container: Manifest, probe: str, ip: str) -> str:
    """The URL a kubelet would probe: the probe's path on its (named or numbered) port."""
    get = container[probe]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == port)
    return f"http://{ip}:{port}{get['path']}"


def startup_budget_s(container: Manifest) -> float:
    probe = container["startupProbe"]
    return float(
        probe.get("initialDelaySeconds", 0)
        + probe.get("failureThreshold", 3) * probe.get("periodSeconds", 10)
    )


def wait_ready(url: str, started: float, limit_s: float) -> float:
    """Seconds from ``started`` until ``url`` answers 200."""
    while time.monotonic() - started < limit_s:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SmokeFailure(f"{url} not ready within {limit_s:.0f} s")


def check_pod(played: Played, pod: str, ip: str, started: float) -> None:
    container = played.container
    budget = startup_budget_s(container)
    ready_s = wait_ready(probe_url(container, "startupProbe", ip), started, budget)
    print(f"{pod}: ready in {ready_s:.1f} s (startup probe budget {budget:.0f} s)")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        url = probe_url(container, probe, ip)
        status = httpx.get(url, timeout=container[probe].get("timeoutSeconds", 1)).status_code
        check(status == 200, f"{pod}: {probe} {url} answered {status}")
    print(f"{pod}: startup, readiness and liveness probes answer 200 on {ip}")
    facts = json.loads(
        podman("exec", f"{pod}-{container['name']}", "python", "-c", _facts_script())
    )
    limits = container["resources"]["limits"]
    wrong = problems(
        facts,
        uid=played.pod_spec["securityContext"]["runAsUser"],
        memory_bytes=memory_bytes(limits["memory"]),
        cpus=cpus(limits["cpu"]),
    )
    check(not wrong, f"{pod}: " + "; ".join(wrong))
    print(
        f"{pod}: uid {facts['uid']}, no capabilities, no-new-privileges, seccomp, read-only "
        f"root, limits {limits['memory']} / {limits['cpu']} CPUs enforced by the cgroup"
    )
    check_answers(played, pod, ip)


def _facts_script() -> str:
    return (ROOT / "scripts" / "container_facts.py").read_text()


def check_answers(played: Played, pod: str, ip: str) -> None:
    """The pod classifies a real digit; with API keys, only for a request that carries one."""
    port = next(p["containerPort"] for p in played.container["ports"] if p["name"] == "http")
    digit = {"files": ("digit-7.png", (ROOT / "examples" / "digit-7.png").read_bytes())}
    url = f"http://{ip}:{port}/predict"
    if played.api_key is None:
        answer = httpx.post(url, files=digit, timeout=10)
        check(answer.status_code == 200, f"{pod}: /predict answered {answer.status_code}")
    else:
        refused = httpx.post(url, files=digit, timeout=10)
        check(refused.status_code == 401, f"{pod}: without a key: {refused.status_code}")
        key = mounted_key(played, pod)
        answer = httpx.post(url, files=digit, headers={"authorization": f"Bearer {key}"})
        check(answer.status_code == 200, f"{pod}: with the key: {answer.status_code}")
        print(f"{pod}: 401 without the Secret's API key, 200 with it")
    label = answer.json()["predictions"][0]["label"]
    check(label == "7", f"{pod}: examples/digit-7.png read as {label}")
    print(f"{pod}: /predict reads examples/digit-7.png as 7")
    check_grpc(played, pod, ip)
    operator = [p["containerPort"] for p in played.container["ports"] if p["name"] == "operator"]
    for operator_port in operator:  # Metrics for the ServiceMonitor, with no key.
        scrape = httpx.get(f"http://{ip}:{operator_port}/metrics", timeout=5)
        check(scrape.status_code == 200, f"{pod}: operator /metrics: {scrape.status_code}")
        check("cnn_serve_requests_total" in scrape.text, f"{pod}: no request counts scraped")
        print(f"{pod}: /metrics on the operator port {operator_port} is scraped without a key")


def check_grpc(played: Played, pod: str, ip: str) -> None:
    """The pod's gRPC port (the manifest's ``grpc``) answers tritonclient.grpc: health without
    a key, inference with the Secret's key when there is one."""
    port = next(p["containerPort"] for p in played.container["ports"] if p["name"] == "grpc")
    client = triton_grpc.InferenceServerClient(f"{ip}:{port}")
    check(client.is_server_ready(), f"{pod}: gRPC ServerReady is false")
    headers = (
        {} if played.api_key is None else {"authorization": f"Bearer {mounted_key(played, pod)}"}
    )
    digit = Image.open(ROOT / "examples" / "digit-7.png").convert("L").resize((28, 28))
    values = np.asarray(digit, dtype=np.float32)[np.newaxis, :, :, np.newaxis] / 255.0
    tensor = triton_grpc.InferInput("input", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    result = client.infer("mnist-deep-cnn", [tensor], headers=headers)
    check(result.as_numpy("probabilities").shape == (1, 10), f"{pod}: gRPC infer shape")
    client.close()
    print(f"{pod}: gRPC on port {port} answers ServerReady and ModelInfer")


def mounted_key(played: Played, pod: str) -> str:
    """The key as the pod sees it. podman 4.3 mounts a Secret's ``data`` still base64-encoded
    (a kubelet decodes it), so the service reads the encoded text as its key: accept either."""
    mount = next(
        m["mountPath"] for m in played.container["volumeMounts"] if m["name"] == "api-keys"
    )
    text = podman("exec", f"{pod}-{played.container['name']}", "cat", f"{mount}/keys").strip()
    encoded = base64.b64encode(f"{played.api_key}\n".encode()).decode()
    check(text in (played.api_key, encoded), f"{pod}: the mounted key is neither form")
    if text == encoded:
        print(f"{pod}: (podman mounted the Secret's data base64-encoded; a kubelet decodes it)")
    return text


def check_sigterm(played: Played, pod: str) -> None:
    """``podman pod stop`` sends SIGTERM and waits up to the grace period before SIGKILL."""
    grace = played.pod_spec["terminationGracePeriodSeconds"]
    container = f"{pod}-{played.container['name']}"
    started = time.monotonic()
    podman("pod", "stop", "-t", str(grace), pod)
    took = time.monotonic() - started
    exit_code = int(podman("inspect", container, "--format", "{{.State.ExitCode}}").strip())
    logs = subprocess.run(["podman", "logs", container], capture_output=True, text=True)
    log_text = logs.stdout + logs.stderr
    check(took < grace, f"{pod}: stopping took {took:.1f} s of a {grace} s grace period")
    check(exit_code in (0, 143), f"{pod}: exit code {exit_code} after SIGTERM")
    check("Application shutdown complete" in log_text, f"{pod}: no clean shutdown in its log")
    print(f"{pod}: SIGTERM -> clean exit ({exit_code}) in {took:.1f} s (grace {grace} s)")


def pods_of(played: Played) -> list[str]:
    names = podman("pod", "ps", "--format", "{{.Name}}").split()
    return sorted(name for name in names if name.startswith("cnn-serve-pod-"))


def remove_pods() -> None:
    # `kube down` of a several-replica Deployment removes only the first pod: by name instead.
    for name in podman("pod", "ps", "--format", "{{.Name}}").split():
        if name.startswith("cnn-serve-pod-"):
            podman("pod", "rm", "-f", name, check_status=False)
    for name in podman("secret", "ls", "--format", "{{.Name}}", check_status=False).split():
        if name.startswith("cnn-serve"):
            podman("secret", "rm", name, check_status=False)


def play(overlay: str, image: str) -> None:
    played = patched_for_podman(render(overlay), overlay, image)
    print(f"== podman kube play: overlay {overlay}, {played.replicas} replica(s)")
    remove_pods()
    try:
        started = time.monotonic()
        podman("kube", "play", str(played.file))
        pods = pods_of(played)
        check(len(pods) == played.replicas, f"{len(pods)} pods for {played.replicas} replicas")
        for pod in pods:
            check_pod(played, pod, pod_ip(pod), started)
        for pod in pods:
            check_sigterm(played, pod)
    finally:
        remove_pods()
        played.file.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--overlay", action="append", choices=OVERLAYS)
    args = parser.parse_args()
    try:
        for overlay in args.overlay or OVERLAYS:
            play(overlay, args.image)
    except SmokeFailure as failure:
        print(f"kube play smoke test failed: {failure}", file=sys.stderr)
        return 1
    print("kube play smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
