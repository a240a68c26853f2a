"""deploy/k8s: every overlay renders, validates against a pinned Kubernetes version's schemas,
keeps its hardening, and agrees with the container image and the service it runs.

kubectl (with its Kustomize) is the pinned binary from ``scripts/fetch_kubectl.py``; objects are
validated with kubernetes-validate (strict) for Kubernetes 1.33, and the CRDs (ServiceMonitor,
InferenceService) against their published schemas vendored in ``deploy/k8s/schemas``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.conftest import ROOT, make_settings

sys.path.insert(0, str(ROOT / "scripts"))
from fetch_kubectl import fetch  # noqa: E402

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"
OVERLAYS = ["dev", "production", "models-volume"]
CRD_SCHEMAS = {
    "ServiceMonitor": K8S / "schemas" / "servicemonitor_v1.json",
    "InferenceService": K8S / "schemas" / "inferenceservice_v1beta1.json",
}
Manifest = dict[str, Any]


@pytest.fixture(scope="session")
def kubectl() -> Path:
    return fetch()


@pytest.fixture(scope="session")
def rendered(kubectl: Path) -> dict[str, list[Manifest]]:
    """overlay -> its rendered objects."""
    return {
        overlay: list(
            yaml.safe_load_all(
                subprocess.run(
                    [str(kubectl), "kustomize", str(K8S / "overlays" / overlay)],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
        )
        for overlay in OVERLAYS
    }


def only(objects: list[Manifest], kind: str, name: str = "cnn-serve") -> Manifest:
    matches = [
        item for item in objects if item["kind"] == kind and item["metadata"]["name"] == name
    ]
    assert len(matches) == 1, (kind, name)
    return matches[0]


def container(objects: list[Manifest]) -> Manifest:
    deployment = only(objects, "Deployment")
    (main,) = deployment["spec"]["template"]["spec"]["containers"]
    return main  # type: ignore[no-any-return]


def validate(item: Manifest) -> None:
    if item["kind"] in CRD_SCHEMAS:
        schema = json.loads(CRD_SCHEMAS[item["kind"]].read_text())
        jsonschema.Draft7Validator(schema).validate(item)
    else:
        kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_for_kubernetes(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    kinds = sorted(item["kind"] for item in rendered[overlay])
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= set(kinds)
    assert {"HorizontalPodAutoscaler", "NetworkPolicy"} <= set(kinds)
    for item in rendered[overlay]:
        validate(item)


def test_invalid_objects_are_caught() -> None:
    """The validation is strict: an unknown field or a wrong type fails it."""
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"prots": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)
    with pytest.raises(jsonschema.ValidationError):
        validate({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "spec": 7})


def test_kserve_inference_service_is_valid() -> None:
    service = yaml.safe_load((K8S / "kserve" / "inferenceservice.yaml").read_text())
    validate(service)
    (predictor,) = service["spec"]["predictor"]["containers"]
    assert predictor["ports"] == [{"containerPort": 8000, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert predictor[probe]["httpGet"]["path"].startswith("/v2/health/")


def test_kserve_grpc_inference_service_is_valid_and_names_the_grpc_port() -> None:
    service = yaml.safe_load((K8S / "kserve" / "inferenceservice-grpc.yaml").read_text())
    validate(service)
    (predictor,) = service["spec"]["predictor"]["containers"]
    # KServe takes a port named h2c as the predictor's gRPC port.
    assert predictor["ports"] == [
        {"name": "h2c", "containerPort": Settings().grpc_port, "protocol": "TCP"}
    ]
    rest = yaml.safe_load((K8S / "kserve" / "inferenceservice.yaml").read_text())
    (rest_predictor,) = rest["spec"]["predictor"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert predictor[probe] == rest_predictor[probe]  # HTTP health, beside gRPC.


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_keeps_its_hardening(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    pod = only(rendered[overlay], "Deployment")["spec"]["template"]["spec"]
    main = container(rendered[overlay])
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    tmp = next(volume for volume in pod["volumes"] if volume["name"] == "tmp")
    assert "emptyDir" in tmp
    assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]
    assert main["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert main["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert main["startupProbe"]["httpGet"]["path"] == "/health/ready"
    resources = main["resources"]
    assert resources["requests"] == resources["limits"]  # Guaranteed QoS: no CPU stealing.
    policy = only(rendered[overlay], "NetworkPolicy")
    ports = [port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]]
    assert ports == ["http", "grpc"]


def settings_from(config_map: Manifest) -> Settings:
    """The Settings the pod's environment makes (each key must be a real setting)."""
    values = {}
    for key, value in config_map["data"].items():
        field = key.removeprefix("CNN_SERVE_").lower()
        assert field in Settings.model_fields, f"{key} is not a setting"
        values[field] = value
    values.pop("api_keys_file", None)  # A mounted secret, absent here.
    values.pop("models_dir", None)
    return make_settings(**values)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shutdown_fits_the_grace_period(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    pod = only(rendered[overlay], "Deployment")["spec"]["template"]["spec"]
    main = container(rendered[overlay])
    settings = settings_from(only(rendered[overlay], "ConfigMap", "cnn-serve-config"))
    pause = main["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause + settings.graceful_shutdown_s < pod["terminationGracePeriodSeconds"]


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_image_and_manifests_agree(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    pod = only(rendered[overlay], "Deployment")["spec"]["template"]["spec"]
    main = container(rendered[overlay])
    settings = settings_from(only(rendered[overlay], "ConfigMap", "cnn-serve-config"))
    exposed = [
        int(port)
        for port in re.search(r"^EXPOSE ([\d ]+)$", dockerfile(), re.MULTILINE).group(1).split()  # type: ignore[union-attr]
    ]
    user = int(re.search(r"--uid (\d+)", dockerfile()).group(1))  # type: ignore[union-attr]
    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    grpc_port = Settings.model_fields["grpc_port"].default  # The ConfigMap keeps the default.
    assert (
        "CNN_SERVE_GRPC_PORT"
        not in only(rendered[overlay], "ConfigMap", "cnn-serve-config")["data"]
    )
    assert [ports["http"], ports["grpc"]] == exposed == [settings.port, grpc_port]
    assert ports["operator"] == settings.operator_port
    assert pod["securityContext"]["runAsUser"] == user
    assert re.search(rf"^USER {user}$", dockerfile(), re.MULTILINE)
    service = only(rendered[overlay], "Service")
    assert {port["targetPort"] for port in service["spec"]["ports"]} == {"http", "grpc", "operator"}


def test_probes_answer_in_the_configured_service(rendered: dict[str, list[Manifest]]) -> None:
    objects = rendered["production"]
    settings = settings_from(only(objects, "ConfigMap", "cnn-serve-config"))
    main = container(objects)
    app = create_app(settings)
    with TestClient(app, base_url=f"http://testserver:{settings.port}") as client:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert client.get(main[probe]["httpGet"]["path"]).status_code == 200
        assert client.get("/metrics").status_code == 404  # Only on the operator port.
    with TestClient(app, base_url=f"http://testserver:{settings.operator_port}") as operator:
        assert operator.get("/metrics").status_code == 200


def test_production_spreads_replicas_and_reads_api_keys(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = rendered["production"]
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] >= 3
    assert only(objects, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 3
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {rule["topologyKey"] for rule in spread} >= {"kubernetes.io/hostname"}
    keys_file = only(objects, "ConfigMap", "cnn-serve-config")["data"]["CNN_SERVE_API_KEYS_FILE"]
    mounts = {mount["name"]: mount for mount in container(objects)["volumeMounts"]}
    assert keys_file.startswith(mounts["api-keys"]["mountPath"] + "/")
    assert only(objects, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "operator"


def test_dev_is_one_replica(rendered: dict[str, list[Manifest]]) -> None:
    assert only(rendered["dev"], "Deployment")["spec"]["replicas"] == 1
    assert "ServiceMonitor" not in {item["kind"] for item in rendered["dev"]}


def test_models_volume_overlay_mounts_models_read_only(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = rendered["models-volume"]
    mounts = {mount["name"]: mount for mount in container(objects)["volumeMounts"]}
    assert mounts["models"] == {"name": "models", "mountPath": "/models", "readOnly": True}
    config = only(objects, "ConfigMap", "cnn-serve-config")["data"]
    assert config["CNN_SERVE_MODELS_DIR"] == "/models"
    volumes = only(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    claim = next(volume for volume in volumes if volume["name"] == "models")
    assert claim["persistentVolumeClaim"]["readOnly"] is True
