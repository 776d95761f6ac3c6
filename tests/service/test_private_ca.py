"""Accounts whose IMAP server has a certificate from a private CA: the PEM comes with the account."""

from __future__ import annotations

import ssl
import uuid
from typing import Any

import psycopg
import pytest

from harness import mailgen
from harness.dovecot import DovecotServer
from harness.service import Service, WorkerThread
from sync_function import certs
from tests.support.api import enable, trigger, wait_for_run
from tests.support.certs import certificate
from tests.support.users import users

pytestmark = pytest.mark.docker


def tls_account(dovecot: DovecotServer, **extra: Any) -> tuple[str, dict[str, Any]]:
    name, password = dovecot.new_user("ca")
    body = {
        "host": dovecot.host,
        "port": dovecot.tls_port,
        "tls_mode": "tls",
        "username": name,
        "password": password,
        **extra,
    }
    return name, body


def stored_accounts(database_url: str, user: uuid.UUID) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM public.email_accounts WHERE user_id = %s", (user,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_without_the_ca_the_account_is_refused_with_what_to_do(
    system_trust_service: Service, database_url: str, dovecot: DovecotServer
) -> None:
    service = system_trust_service
    with users(database_url) as (user,):
        _, body = tls_account(dovecot)
        response = service.client.post("/api/email-accounts", json=body, headers=service.as_user(user))
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert "not trusted" in error and "ca_pem" in error and "certificate authority" in error
        assert "ssl_context" not in error
        assert stored_accounts(database_url, user) == 0


def test_with_the_ca_the_account_is_stored_and_the_worker_imports(
    system_trust_service: Service,
    database_url: str,
    dovecot: DovecotServer,
    system_trust_worker: WorkerThread,
) -> None:
    service = system_trust_service
    with users(database_url) as (user,):
        name, body = tls_account(dovecot, ca_pem=dovecot.cert_pem)
        response = service.client.post("/api/email-accounts", json=body, headers=service.as_user(user))
        assert response.status_code == 201, response.text
        assert response.json()["account"]["ca_pem"] == dovecot.cert_pem.strip()
        listed = service.client.get("/api/email-accounts", headers=service.as_user(user)).json()["accounts"]
        assert [a["ca_pem"] for a in listed] == [dovecot.cert_pem.strip()]

        messages = mailgen.generate(6, seed=21)
        dovecot.deliver(name, [m.raw for m in messages])
        enable(service, user)
        status, _, imported, error = wait_for_run(database_url, trigger(service, user))
        assert (status, imported, error) == ("succeeded", 6, None)


def test_the_context_for_a_private_ca_still_checks_host_names(dovecot: DovecotServer) -> None:
    context = certs.context_trusting(dovecot.cert_pem)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    # The system store stays trusted besides the account's CA.
    assert len(context.get_ca_certs()) > 1


def test_a_ca_that_did_not_sign_the_server_is_named_in_the_error(
    system_trust_service: Service, database_url: str, dovecot: DovecotServer
) -> None:
    service = system_trust_service
    with users(database_url) as (user,):
        _, body = tls_account(dovecot, ca_pem=certificate(ca=True))
        response = service.client.post("/api/email-accounts", json=body, headers=service.as_user(user))
        assert response.status_code == 400, response.text
        assert "not signed by the certificate authority given in ca_pem" in response.json()["error"]
        assert stored_accounts(database_url, user) == 0


@pytest.mark.parametrize(
    ("ca_pem", "says"),
    [
        ("hello", "PEM form"),
        (
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
            "no readable certificate",
        ),
        (certificate(ca=False), "not a certificate authority"),
        (certificate(ca=True, days=-1), "expired"),
        (certificate(ca=True, key_pem=True), "private key"),
        ("-----BEGIN CERTIFICATE-----" + "A" * 70_000, "at most"),
    ],
    ids=["not-pem", "garbage-inside", "leaf", "expired", "with-key", "too-long"],
)
def test_a_ca_pem_that_is_not_a_usable_ca_is_refused_and_nothing_stored(
    ca_pem: str, says: str, system_trust_service: Service, database_url: str, dovecot: DovecotServer
) -> None:
    service = system_trust_service
    with users(database_url) as (user,):
        _, body = tls_account(dovecot, ca_pem=ca_pem)
        response = service.client.post("/api/email-accounts", json=body, headers=service.as_user(user))
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert "ca_pem" in error and says in error
        assert stored_accounts(database_url, user) == 0
