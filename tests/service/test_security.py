"""service/security.py: API keys, cross-origin requests, operator-only routes, offline docs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.app import create_app
from service.security import OriginPolicy
from tests.conftest import make_settings

DIGIT = {"instances": [np.zeros((28, 28)).tolist()]}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app with two keys from the setting and one from a file."""
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text("from-file-key\n\n")
    settings = make_settings(api_keys="first-key, second-key", api_keys_file=key_file)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("path", ["/predict", "/models/mnist-deep-cnn/predict", "/feature-maps"])
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Bearer first-key-but-longer", "Basic Zmlyc3Qta2V5", ""]
)
def test_inference_needs_a_known_key(
    keyed: TestClient, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    response = keyed.post(path, json=DIGIT, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("key", ["first-key", "second-key", "from-file-key"])
def test_every_configured_key_works(keyed: TestClient, key: str) -> None:
    headers = {"authorization": f"Bearer {key}"}
    assert keyed.post("/predict", json=DIGIT, headers=headers).status_code == 200
    assert keyed.get("/models", headers=headers).status_code == 200


def test_model_routes_need_a_key_and_health_does_not(keyed: TestClient) -> None:
    assert keyed.get("/models").status_code == 401
    assert keyed.get("/models/mnist-deep-cnn").status_code == 401
    assert keyed.get("/health/live").status_code == 200
    assert keyed.get("/health/ready").status_code == 200


def test_schema_documents_bearer_auth_when_keys_are_on(keyed: TestClient) -> None:
    schema = keyed.get("/openapi.json", headers={"authorization": "Bearer first-key"}).json()
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_no_keys_means_open(client: TestClient) -> None:
    assert client.post("/predict", json=DIGIT).status_code == 200


def test_other_origins_are_refused_by_default(client: TestClient) -> None:
    response = client.post("/predict", json=DIGIT, headers={"origin": "https://evil.example"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden_origin"
    assert "access-control-allow-origin" not in response.headers
    # Clients that send no Origin are fine.
    assert client.post("/predict", json=DIGIT).status_code == 200


@pytest.mark.parametrize(
    "host, status",
    [
        ("localhost:8000", 200),
        ("app.localhost", 200),
        ("127.0.0.1:8000", 200),
        ("10.1.2.3", 200),
        ("[::1]:8000", 200),
        ("digits.example:8000", 200),  # Listed in CNN_SERVE_TRUSTED_HOSTS below.
        ("evil.example", 403),
        ("evil.example:8000", 403),
        ("127.0.0.1.evil.example", 403),
        ("localhost.evil.example", 403),
        ("[::1", 403),
    ],
)
def test_same_origin_is_trusted_only_for_hosts_the_service_knows(host: str, status: int) -> None:
    """DNS rebinding: a page of evil.example re-pointed here is same-origin, and refused."""
    with TestClient(create_app(make_settings(trusted_hosts="digits.example"))) as client:
        response = client.post(
            "/predict", json=DIGIT, headers={"origin": f"http://{host}", "host": host}
        )
    assert response.status_code == status, response.text


@settings(max_examples=50, derandomize=True, database=None)
@given(name=st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True))
def test_no_unknown_host_name_passes_as_same_origin(name: str) -> None:
    assume(name != "localhost" and not name.endswith(".localhost"))
    policy = OriginPolicy([], ["digits.example"])
    assert policy.refuses(f"http://{name}", name) == (name != "digits.example")


def test_allowed_origins_get_cors_headers() -> None:
    settings = make_settings(cors_allow_origins="https://app.example")
    with TestClient(create_app(settings)) as client:
        preflight = client.options(
            "/predict",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        allowed = client.post("/predict", json=DIGIT, headers={"origin": "https://app.example"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = client.post("/predict", json=DIGIT, headers={"origin": "https://evil.example"})
        assert other.status_code == 403


def test_refusals_at_the_edge_carry_cors_headers_for_allowed_origins() -> None:
    """A page of an allowed origin can read the JSON 401 and 413, not a bare CORS error."""
    settings = make_settings(
        cors_allow_origins="https://app.example", api_keys="k1", max_body_bytes=4096
    )
    origin = {"origin": "https://app.example"}
    with TestClient(create_app(settings)) as client:
        unauthorized = client.post("/predict", json=DIGIT, headers=origin)
        too_large = client.post(
            "/predict", content=b"x" * 5000, headers={**origin, "authorization": "Bearer k1"}
        )
    for response, status in ((unauthorized, 401), (too_large, 413)):
        assert response.status_code == status, response.text
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        assert set(response.json()) == {"error"}


def test_docs_and_metrics_can_be_switched_off() -> None:
    with TestClient(create_app(make_settings(docs="off", metrics="off"))) as client:
        for path in ("/docs", "/openapi.json", "/metrics", "/docs/static/swagger-ui.css"):
            assert client.get(path).status_code == 404, path
        assert client.post("/predict", json=DIGIT).status_code == 200


def test_operator_routes_live_only_on_the_operator_port() -> None:
    settings = make_settings(docs="operator", metrics="operator", operator_port=9901, port=9900)
    app = create_app(settings)
    with TestClient(app, base_url="http://testserver:9900") as public:
        assert public.get("/metrics").status_code == 404
        assert public.get("/docs").status_code == 404
        assert public.post("/predict", json=DIGIT).status_code == 200
    with TestClient(app, base_url="http://testserver:9901") as operator:
        assert operator.get("/metrics").status_code == 200
        assert operator.get("/docs").status_code == 200
        assert operator.get("/health/ready").status_code == 200
        assert operator.post("/predict", json=DIGIT).status_code == 404


def test_operator_setting_needs_a_port() -> None:
    with pytest.raises(ValueError, match="OPERATOR_PORT"):
        make_settings(metrics="operator")


def test_docs_are_served_from_the_package(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs/static/swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()
    script = client.get("/docs/static/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 500_000


def test_keys_file_that_cannot_be_read_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="missing.txt is not a readable file"):
        make_settings(api_keys_file=tmp_path / "missing.txt")
