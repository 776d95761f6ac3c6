"""The published OpenAPI document tells what the server accepts; a 405 names every method of the path."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import psycopg
import pytest

from harness.service import Service, make_config
from sync_function import oauth, schemas
from sync_function.main import create_app
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


BASE = {"host": "imap.example.com", "port": 993, "tls_mode": "tls", "username": "ana"}
GOOGLE = {"provider": "google", "client_id": "client"}
CODE = {"code": "c0de", "code_verifier": "v" * 43, "redirect_uri": "https://app.example.com/cb"}

# (schema name, body, accepted): the cross-field rules, each way round, null read as left out.
BODIES = [
    ("NewEmailAccount", {**BASE, "password": "pw"}, True),
    ("NewEmailAccount", {**BASE, "oauth2": {**GOOGLE, "refresh_token": "rt"}}, True),
    ("NewEmailAccount", {**BASE, "password": "pw", "oauth2": {**GOOGLE, "refresh_token": "rt"}}, False),
    ("NewEmailAccount", BASE, False),
    ("NewEmailAccount", {**BASE, "password": None, "oauth2": {**GOOGLE, "refresh_token": "rt"}}, True),
    ("NewEmailAccount", {**BASE, "password": "pw", "oauth2": None}, True),
    ("NewEmailAccount", {**BASE, "password": None, "oauth2": None}, False),
    ("NewEmailAccount", {**BASE, "password": "pw", "folders": ["INBOX"], "all_folders": True}, False),
    ("NewEmailAccount", {**BASE, "password": "pw", "folders": ["INBOX"], "all_folders": False}, True),
    ("NewEmailAccount", {**BASE, "password": "pw", "folders": None, "all_folders": True}, True),
    ("NewEmailAccount", {**BASE, "password": "pw", "folders": ["IN\u0001BOX"]}, False),
    ("OAuth2Sign", {**GOOGLE, "refresh_token": "rt"}, True),
    ("OAuth2Sign", {**GOOGLE, **CODE}, True),
    ("OAuth2Sign", {**GOOGLE, **CODE, "refresh_token": "rt"}, False),
    ("OAuth2Sign", {**GOOGLE, "code": "c0de", "redirect_uri": "https://app.example.com/cb"}, False),
    ("OAuth2Sign", {**GOOGLE, **CODE, "code_verifier": None}, False),
    ("OAuth2Sign", GOOGLE, False),
    ("OAuth2Sign", {**GOOGLE, "refresh_token": "rt", "code_verifier": "v" * 43}, True),
    ("OAuth2Sign", {"client_id": "c", "refresh_token": "rt"}, False),
    (
        "OAuth2Sign",
        {**GOOGLE, "token_endpoint": "https://93.184.216.34/token", "refresh_token": "rt"},
        False,
    ),
    (
        "OAuth2Sign",
        {"client_id": "c", "token_endpoint": "https://93.184.216.34/token", "refresh_token": "rt"},
        True,
    ),
    (
        "OAuth2Sign",
        {"client_id": "c", "token_endpoint": "http://93.184.216.34/token", "refresh_token": "rt"},
        False,
    ),
    ("OAuth2Sign", {"client_id": "c", "token_endpoint": "https://[::1/token", "refresh_token": "rt"}, False),
    ("OAuth2Sign", {**GOOGLE, "token_endpoint": None, "refresh_token": "rt", "code": None}, True),
    ("Reconnect", {"refresh_token": "rt"}, True),
    ("Reconnect", CODE, True),
    ("Reconnect", {**CODE, "refresh_token": "rt"}, False),
    ("Reconnect", {}, False),
    ("Reconnect", {"code": "c0de", "code_verifier": "v" * 43}, False),
]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    # Building the document opens nothing: the database URL is never dialled.
    return create_app(make_config("postgresql://unused@127.0.0.1:9/unused")).openapi()


@pytest.mark.parametrize(("name", "body", "accepted"), BODIES)
def test_the_published_schema_states_the_cross_field_rules(
    document: dict[str, Any], name: str, body: dict[str, object], accepted: bool
) -> None:
    """The document and the server's validators agree on every combination, so the fuzz test needs no 422 allowance."""
    validator = jsonschema_rs.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    )
    assert validator.is_valid(body) is accepted, f"the document says {not accepted} for {body}"
    try:
        model = getattr(schemas, name).model_validate(body)
        if isinstance(model, schemas.OAuth2Sign):
            # What the route checks next, before any login (production: no http, not even on loopback). The
            # endpoints are public IP literals: the check resolves host names, and this machine has no DNS.
            oauth.provider(model.provider, token_endpoint=model.token_endpoint)
    except ValueError:  # pydantic's ValidationError is one
        server_accepts = False
    else:
        server_accepts = True
    assert server_accepts is accepted, f"the server says {server_accepts} for {body}"
