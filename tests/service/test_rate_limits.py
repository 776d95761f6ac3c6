"""Per-user limits on the user-facing writes: save-auto-sync and adding an email account (429, Retry-After)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from harness.dovecot import DovecotServer
from harness.service import Service, running_service
from sync_function.config import Config
from tests.support.users import state_of, users

pytestmark = pytest.mark.docker

SAVE = "/api/settings/save-auto-sync"
ACCOUNTS = "/api/email-accounts"


@pytest.fixture(scope="module")
def limited(service_config: Config, dovecot: DovecotServer) -> Iterator[Service]:
    """The API with small limits, so that a test reaches them in a few requests."""
    config = service_config.model_copy(
        update={
            "save_auto_sync_limit": 3,
            "save_auto_sync_window_seconds": 120,
            "add_email_account_limit": 2,
            "add_email_account_window_seconds": 300,
        }
    )
    with running_service(config, imap_ssl_context=dovecot.ssl_context()) as running:
        yield running


def _hits(database_url: str, user: uuid.UUID, action: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM public.rate_limit_hits WHERE user_id = %s AND action = %s", (user, action)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_save_auto_sync_is_limited_per_user_and_the_refusal_changes_nothing(
    limited: Service, database_url: str
) -> None:
    with users(database_url, 2) as (user, other):
        for interval in (15, 30, 60):
            response = limited.client.post(
                SAVE, json={"enabled": True, "interval_minutes": interval}, headers=limited.as_user(user)
            )
            assert response.status_code == 200, response.text
        before = state_of(database_url, user)
        response = limited.client.post(
            SAVE, json={"enabled": False, "interval_minutes": 120}, headers=limited.as_user(user)
        )
        assert response.status_code == 429, response.text
        retry_after = int(response.headers["retry-after"])
        assert 1 <= retry_after <= 120
        body = response.json()
        assert body["success"] is False and f"try again in {retry_after} s" in body["error"]
        assert state_of(database_url, user) == before, "a refused save changes nothing"
        # Another user is not affected.
        response = limited.client.post(
            SAVE, json={"enabled": True, "interval_minutes": 15}, headers=limited.as_user(other)
        )
        assert response.status_code == 200


def test_an_invalid_save_does_not_count(limited: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        for _ in range(5):
            response = limited.client.post(
                SAVE, json={"enabled": True, "interval_minutes": 7}, headers=limited.as_user(user)
            )
            assert response.status_code == 400
        assert _hits(database_url, user, "save_auto_sync") == 0


def test_concurrent_saves_cannot_pass_the_limit_together(limited: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        headers = limited.as_user(user)

        def save(_: int) -> int:
            with httpx.Client(base_url=limited.url, timeout=30) as client:
                return client.post(
                    SAVE, json={"enabled": True, "interval_minutes": 15}, headers=headers
                ).status_code

        with ThreadPoolExecutor(max_workers=10) as pool:
            statuses = sorted(pool.map(save, range(10)))
        assert statuses == [200] * 3 + [429] * 7
        assert _hits(database_url, user, "save_auto_sync") == 3


def test_adding_accounts_is_limited_per_user_failed_logins_included(
    limited: Service, database_url: str, dovecot: DovecotServer
) -> None:
    with users(database_url) as (user,):
        name, password = dovecot.new_user()
        account = {"host": dovecot.host, "port": dovecot.port, "tls_mode": "plain", "username": name}
        wrong = limited.client.post(
            ACCOUNTS, json={**account, "password": "wrong"}, headers=limited.as_user(user)
        )
        assert wrong.status_code == 400, wrong.text
        right = limited.client.post(
            ACCOUNTS, json={**account, "password": password}, headers=limited.as_user(user)
        )
        assert right.status_code == 201, right.text
        other_name, other_password = dovecot.new_user()
        third = limited.client.post(
            ACCOUNTS,
            json={**account, "username": other_name, "password": other_password},
            headers=limited.as_user(user),
        )
        assert third.status_code == 429, third.text
        assert 1 <= int(third.headers["retry-after"]) <= 300
        assert "email accounts added" in third.json()["error"]
        with psycopg.connect(database_url) as conn:
            stored = conn.execute(
                "SELECT username FROM public.email_accounts WHERE user_id = %s", (user,)
            ).fetchall()
        assert stored == [(name,)], "nothing stored beyond the limit"


def test_the_limits_are_in_the_published_document(limited: Service) -> None:
    document = limited.client.get("/openapi.json").json()
    for path in (SAVE, ACCOUNTS):
        assert "429" in document["paths"][path]["post"]["responses"]
