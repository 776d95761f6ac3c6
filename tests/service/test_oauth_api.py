"""OAuth2 accounts through the API and the worker: add, import, revoked grant, reconnect."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from harness import mailgen
from harness.dovecot import DovecotServer
from harness.http_recorder import Recorder
from harness.oauth_provider import FakeProvider
from harness.service import Service, WorkerThread
from tests.support.api import enable, trigger, wait_for_run
from tests.support.users import users

pytestmark = pytest.mark.docker

REDIRECT = "https://app.example.com/oauth/callback"


def body(dovecot: DovecotServer, provider: FakeProvider, name: str, **grant: object) -> dict[str, object]:
    return {
        "host": dovecot.host,
        "port": dovecot.port,
        "tls_mode": "plain",
        "username": name,
        "oauth2": {
            "token_endpoint": provider.token_endpoint,
            "client_id": provider.client_id,
            "client_secret": provider.client_secret,
            **grant,
        },
    }


@pytest.fixture
def alerting_worker(service: Service, http_recorder: Recorder) -> Iterator[WorkerThread]:
    config = service.config.model_copy(update={"failure_webhook_url": http_recorder.url + "/alerts"})
    running = WorkerThread(config, None)
    yield running
    running.stop()
    assert running.error is None


def queue_drained(database_url: str, user: uuid.UUID) -> None:
    """Wait until the user's job has left the queue: a run failed at once still has its retry slot
    queued for a moment (the retry finds the run finished and ends), and a trigger meanwhile collides
    with it on the queueing lock."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM public.procrastinate_jobs WHERE queueing_lock = %s AND status IN ('todo', 'doing')",
                (f"user:{user}",),
            ).fetchone()
        if row == (0,):
            return
        time.sleep(0.1)
    raise AssertionError("the user's job never left the queue")


def account_rows(database_url: str, user: uuid.UUID) -> list[tuple]:  # type: ignore[type-arg]
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT auth_method, password_encrypted, oauth_refresh_token_encrypted FROM public.email_accounts "
            "WHERE user_id = %s",
            (user,),
        ).fetchall()


def test_add_import_revoke_and_reconnect(
    service: Service,
    database_url: str,
    oauth_dovecot: DovecotServer,
    oauth_provider: FakeProvider,
    alerting_worker: WorkerThread,
    http_recorder: Recorder,
) -> None:
    with users(database_url) as (user,):
        name, _ = oauth_dovecot.new_user("oauth")
        refresh_token = oauth_provider.grant(name)
        oauth_dovecot.deliver(name, (g.raw for g in mailgen.generate(4, seed=71)))
        response = service.client.post(
            "/api/email-accounts",
            json=body(
                oauth_dovecot, oauth_provider, name, refresh_token=refresh_token, mechanism="OAUTHBEARER"
            ),
            headers=service.as_user(user),
        )
        assert response.status_code == 201, response.text
        account = response.json()["account"]
        assert (account["auth_method"], account["oauth_mechanism"], account["needs_reconnect_since"]) == (
            "oauth2",
            "OAUTHBEARER",
            None,
        )
        assert refresh_token not in response.text and oauth_provider.client_secret not in response.text
        ((method, password, stored_token),) = account_rows(database_url, user)
        assert method == "oauth2" and password is None and refresh_token.encode() not in bytes(stored_token)

        enable(service, user)
        assert wait_for_run(database_url, trigger(service, user))[:3] == ("succeeded", 1, 4)

        oauth_provider.revoke(refresh_token)
        status, attempts, _, error = wait_for_run(database_url, trigger(service, user))
        assert (status, attempts) == ("failed", 1), "invalid_grant is not retried"
        assert error is not None and "reconnect" in error
        listed = service.client.get("/api/email-accounts", headers=service.as_user(user)).json()["accounts"]
        assert (
            listed[0]["needs_reconnect_since"] is not None
            and "invalid_grant" in listed[0]["needs_reconnect_reason"]
        )
        history = service.client.get("/api/sync/history", headers=service.as_user(user)).json()["runs"]
        assert "reconnect" in history[0]["error"]
        (alert,) = http_recorder.wait_for(1, timeout_s=10)
        payload = json.loads(alert.body)
        assert payload["event"] == "auto_sync.needs_reconnect" and payload["account_id"] == account["id"]
        assert refresh_token not in alert.body.decode()

        # The user signs in again through the product's consent screen (authorization code + PKCE).
        verifier = "pkce-" + "x" * 60
        code = oauth_provider.authorization_code(name, code_verifier=verifier, redirect_uri=REDIRECT)
        again = service.client.post(
            f"/api/email-accounts/{account['id']}/reconnect",
            json={"code": code, "code_verifier": verifier, "redirect_uri": REDIRECT},
            headers=service.as_user(user),
        )
        assert again.status_code == 200, again.text
        assert again.json()["account"]["needs_reconnect_since"] is None
        oauth_dovecot.deliver(name, mailgen.generate(5, seed=71)[4].raw)
        queue_drained(database_url, user)
        assert wait_for_run(database_url, trigger(service, user))[:3] == ("succeeded", 1, 1)


def test_an_authorization_code_is_exchanged_and_a_bad_one_stores_nothing(
    service: Service, database_url: str, oauth_dovecot: DovecotServer, oauth_provider: FakeProvider
) -> None:
    with users(database_url) as (user,):
        name, _ = oauth_dovecot.new_user("oauth")
        verifier = "pkce-" + "y" * 60
        code = oauth_provider.authorization_code(name, code_verifier=verifier, redirect_uri=REDIRECT)
        wrong = service.client.post(
            "/api/email-accounts",
            json=body(
                oauth_dovecot, oauth_provider, name, code=code, code_verifier="z" * 64, redirect_uri=REDIRECT
            ),
            headers=service.as_user(user),
        )
        assert wrong.status_code == 400, wrong.text
        assert "invalid_grant" in wrong.json()["error"]
        assert account_rows(database_url, user) == []

        code = oauth_provider.authorization_code(name, code_verifier=verifier, redirect_uri=REDIRECT)
        right = service.client.post(
            "/api/email-accounts",
            json=body(
                oauth_dovecot, oauth_provider, name, code=code, code_verifier=verifier, redirect_uri=REDIRECT
            ),
            headers=service.as_user(user),
        )
        assert right.status_code == 201, right.text
        assert len(account_rows(database_url, user)) == 1


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"password": "also"}, "either password or oauth2"),
        ({"oauth2": {"provider": "google", "client_id": "c"}}, "refresh_token or code"),
        ({"oauth2": {"provider": "google", "client_id": "c", "code": "x"}}, "code_verifier"),
        ({"oauth2": {"client_id": "c", "refresh_token": "r"}}, "provider or token_endpoint"),
        (
            {"oauth2": {"token_endpoint": "http://example.com/t", "client_id": "c", "refresh_token": "r"}},
            "https",
        ),
        ({"oauth2": {"provider": "yahoo", "client_id": "c", "refresh_token": "r"}}, "oauth2"),
    ],
    ids=["both", "no-grant", "code-alone", "no-provider", "plain-http", "unknown-preset"],
)
def test_bad_oauth2_requests_are_refused_and_store_nothing(
    change: dict[str, object], says: str, service: Service, database_url: str, oauth_dovecot: DovecotServer
) -> None:
    with users(database_url) as (user,):
        request = {
            "host": oauth_dovecot.host,
            "port": oauth_dovecot.port,
            "tls_mode": "plain",
            "username": "u",
        }
        if "password" in change:
            request["oauth2"] = {"provider": "google", "client_id": "c", "refresh_token": "r"}
        request.update(change)
        response = service.client.post("/api/email-accounts", json=request, headers=service.as_user(user))
        assert response.status_code == 422, response.text
        assert says in response.json()["error"]
        assert account_rows(database_url, user) == []


def test_a_rotated_refresh_token_is_kept_for_the_next_run(
    service: Service,
    database_url: str,
    oauth_dovecot: DovecotServer,
    oauth_provider: FakeProvider,
    alerting_worker: WorkerThread,
) -> None:
    oauth_provider.rotate = True  # each refresh replaces the refresh token and voids the old one
    oauth_provider.expires_in = 60  # below the cache margin: every run refreshes
    with users(database_url) as (user,):
        name, _ = oauth_dovecot.new_user("oauth")
        response = service.client.post(
            "/api/email-accounts",
            json=body(oauth_dovecot, oauth_provider, name, refresh_token=oauth_provider.grant(name)),
            headers=service.as_user(user),
        )
        assert response.status_code == 201, response.text
        enable(service, user)
        for seed in (81, 82):
            oauth_dovecot.deliver(name, mailgen.generate(1, seed=seed)[0].raw)
            assert wait_for_run(database_url, trigger(service, user))[:3] == ("succeeded", 1, 1)
            queue_drained(database_url, user)
