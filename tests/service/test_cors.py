"""CORS: real preflights over HTTP; only /api/* answers them, only for allowed origins, never with '*'."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.service import Service, make_config, running_service
from sync_function.config import Config
from tests.support.users import users

pytestmark = pytest.mark.docker

ALLOWED = "https://app.example.com"


@pytest.fixture(scope="module")
def cors_service(service_config: Config) -> Iterator[Service]:
    config = service_config.model_copy(update={"cors_allowed_origins": f"{ALLOWED}, http://localhost:3000"})
    with running_service(config) as running:
        yield running


def preflight(service: Service, path: str, origin: str, method: str = "POST"):  # type: ignore[no-untyped-def]
    return service.client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/settings/save-auto-sync", "POST"),
        ("/api/settings/load-auto-sync", "GET"),
        ("/api/email-accounts", "POST"),
        ("/api/email-accounts/00000000-0000-0000-0000-000000000000", "DELETE"),
        ("/api/sync/history", "GET"),
    ],
)
def test_user_facing_preflights_are_answered_for_allowed_origins(
    cors_service: Service, path: str, method: str
) -> None:
    response = preflight(cors_service, path, ALLOWED, method)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert method in response.headers["access-control-allow-methods"]
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "access-control-allow-credentials" not in response.headers
    assert response.headers["access-control-allow-origin"] != "*"


def test_other_origins_get_no_cors(cors_service: Service) -> None:
    response = preflight(cors_service, "/api/settings/save-auto-sync", "https://evil.example")
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "path", ["/functions/v1/auto-sync", "/functions/v1/import-emails", "/healthz", "/metrics"]
)
def test_service_and_operational_endpoints_never_answer_preflights(cors_service: Service, path: str) -> None:
    response = preflight(cors_service, path, ALLOWED)
    assert "access-control-allow-origin" not in response.headers
    assert response.status_code in (404, 405)
    plain = cors_service.client.get(path, headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in plain.headers


def test_the_actual_request_carries_the_origin(cors_service: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        response = cors_service.client.get(
            "/api/settings/load-auto-sync", headers={**cors_service.as_user(user), "Origin": ALLOWED}
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED


def test_no_origins_by_default(service: Service) -> None:
    response = preflight(service, "/api/settings/save-auto-sync", ALLOWED)
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("value", ["*", "https://*.example.com", "app.example.com", "https://a.example/path"])
def test_wildcards_and_non_origins_are_refused(database_url: str, value: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        make_config(database_url, cors_allowed_origins=value)
