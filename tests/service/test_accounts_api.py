"""Email accounts API: login verified first, password encrypted at rest and never returned."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from harness.service import Service
from sync_function.crypto import decrypt_password
from tests.support.users import users

pytestmark = pytest.mark.docker

PATH = "/api/email-accounts"


def stored_accounts(database_url: str, user: uuid.UUID) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT id, username, password_encrypted FROM public.email_accounts WHERE user_id = %s", (user,)
        ).fetchall()


@pytest.mark.parametrize("mode", ["plain", "starttls", "tls"])
def test_add_verifies_login_and_encrypts(service: Service, database_url: str, dovecot, mode: str) -> None:  # type: ignore[no-untyped-def]
    name, password = dovecot.new_user()
    port = dovecot.tls_port if mode == "tls" else dovecot.port
    with users(database_url) as (user,):
        response = service.client.post(
            PATH,
            json={
                "host": dovecot.host,
                "port": port,
                "tls_mode": mode,
                "username": name,
                "password": password,
            },
            headers=service.as_user(user),
        )
        assert response.status_code == 201, response.text
        account = response.json()["account"]
        assert account["username"] == name and account["mailbox"] == "INBOX" and account["tls_mode"] == mode
        assert password not in response.text and "password" not in account
        ((account_id, username, encrypted),) = stored_accounts(database_url, user)
        assert str(account_id) == account["id"] and username == name
        assert password.encode() not in bytes(encrypted)
        assert decrypt_password(service.config.encryption_key.get_secret_value(), encrypted) == password

        listed = service.client.get(PATH, headers=service.as_user(user))
        assert listed.status_code == 200
        assert [a["id"] for a in listed.json()["accounts"]] == [account["id"]]
        assert password not in listed.text

        duplicate = service.client.post(
            PATH,
            json={
                "host": dovecot.host,
                "port": port,
                "tls_mode": mode,
                "username": name,
                "password": password,
            },
            headers=service.as_user(user),
        )
        assert duplicate.status_code == 409


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"password": "wrong-password"}, "rejected the login"),
        ({"port": 9}, "could not verify the account"),
        ({"mailbox": "No/Such/Box"}, "could not verify the account"),
        ({"tls_mode": "tls"}, "could not verify the account"),
    ],
)
def test_failed_verification_stores_nothing(
    service: Service,
    database_url: str,
    dovecot,
    change: dict[str, object],
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    name, password = dovecot.new_user()
    body = {
        "host": dovecot.host,
        "port": dovecot.port,
        "tls_mode": "plain",
        "username": name,
        "password": password,
    }
    body.update(change)
    with users(database_url) as (user,):
        response = service.client.post(PATH, json=body, headers=service.as_user(user))
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]
        assert str(body["password"]) not in response.text
        assert stored_accounts(database_url, user) == []


@pytest.mark.parametrize(
    "body",
    [
        {"host": "", "port": 143, "tls_mode": "plain", "username": "u", "password": "p"},
        {"host": "imap.example.com/x", "port": 143, "tls_mode": "plain", "username": "u", "password": "p"},
        {"host": "h", "port": 0, "tls_mode": "plain", "username": "u", "password": "p"},
        {"host": "h", "port": 70000, "tls_mode": "plain", "username": "u", "password": "p"},
        {"host": "h", "port": 143, "tls_mode": "ssl", "username": "u", "password": "p"},
        {"host": "h", "port": 143, "tls_mode": "plain", "username": "", "password": "p"},
        {"host": "h", "port": 143, "tls_mode": "plain", "username": "u\r\nA1 LOGOUT", "password": "p"},
        {"host": "h", "port": 143, "tls_mode": "plain", "username": "u"},
        {"host": "h", "port": "143", "tls_mode": "plain", "username": "u", "password": "p"},
    ],
)
def test_invalid_bodies_are_422(service: Service, database_url: str, body: dict[str, object]) -> None:
    with users(database_url) as (user,):
        response = service.client.post(PATH, json=body, headers=service.as_user(user))
        assert response.status_code == 422, response.text
        assert stored_accounts(database_url, user) == []


def test_delete_only_own(service: Service, database_url: str, dovecot) -> None:  # type: ignore[no-untyped-def]
    name, password = dovecot.new_user()
    with users(database_url, 2) as (owner, other):
        created = service.client.post(
            PATH,
            json={
                "host": dovecot.host,
                "port": dovecot.port,
                "tls_mode": "plain",
                "username": name,
                "password": password,
            },
            headers=service.as_user(owner),
        ).json()["account"]
        assert service.client.get(PATH, headers=service.as_user(other)).json()["accounts"] == []
        assert (
            service.client.delete(f"{PATH}/{created['id']}", headers=service.as_user(other)).status_code
            == 404
        )
        assert len(stored_accounts(database_url, owner)) == 1
        assert (
            service.client.delete(f"{PATH}/{created['id']}", headers=service.as_user(owner)).status_code
            == 200
        )
        assert stored_accounts(database_url, owner) == []
        assert (
            service.client.delete(f"{PATH}/{created['id']}", headers=service.as_user(owner)).status_code
            == 404
        )
        assert service.client.delete(f"{PATH}/not-a-uuid", headers=service.as_user(owner)).status_code == 422
