"""The published OpenAPI document tells what the server accepts; a 405 names every method of the path."""

from __future__ import annotations

import psycopg
import pytest

from harness.service import Service
from sync_function.schemas import SUPPORTED_INTERVALS

pytestmark = pytest.mark.docker


def test_the_interval_enum_is_the_databases_list(service: Service, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT public.auto_sync_supported_intervals()").fetchone()
    assert row is not None
    assert list(SUPPORTED_INTERVALS) == row[0]
    document = service.client.get("/openapi.json").json()
    field = document["components"]["schemas"]["SaveAutoSync"]["properties"]["interval_minutes"]
    assert field["type"] == "integer" and field["enum"] == row[0]
    assert "interval_minutes" not in document["components"]["schemas"]["SaveAutoSync"].get("required", [])


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/email-accounts", {"GET", "POST"}),
        ("PATCH", "/api/email-accounts/00000000-0000-0000-0000-000000000000", {"DELETE"}),
        ("DELETE", "/api/settings/save-auto-sync", {"POST"}),
        ("GET", "/functions/v1/auto-sync", {"POST"}),
    ],
)
def test_a_405_lists_every_method_of_the_path(
    service: Service, method: str, path: str, allowed: set[str]
) -> None:
    response = service.client.request(method, path)
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed
    assert response.json()["success"] is False


def test_an_integral_number_is_an_integer(service: Service, database_url: str) -> None:
    from tests.support.users import state_of, users

    with users(database_url) as (user,):
        response = service.client.post(
            "/api/settings/save-auto-sync",
            json={"enabled": True, "interval_minutes": 30.0},
            headers=service.as_user(user),
        )
        assert response.status_code == 200, response.text
        assert state_of(database_url, user)[0] == (True, 30)
