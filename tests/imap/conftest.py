"""Fixtures for import tests: a Dovecot user with a matching auth.users row and email_accounts row."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from harness.dovecot import LOOPBACK_ALLOWED, DovecotServer
from sync_function.importer import ImapAccount, ImportResult, import_mailbox
from tests.support.db import delete_users, new_user
from tests.support.mailboxes import Mailbox


@pytest.fixture
def service_conn(database_url: str) -> Iterator[psycopg.Connection]:
    """A connection acting as service_role, the role the worker runs the import as."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET ROLE service_role")
        yield conn


@pytest.fixture
def make_mailbox(db: psycopg.Connection, dovecot: DovecotServer) -> Iterator[Callable[..., Mailbox]]:
    users: list[uuid.UUID] = []

    def make(*, tls_mode: str = "plain", mailbox: str = "INBOX") -> Mailbox:
        name, password = dovecot.new_user("imp")
        user_id = new_user(db)
        users.append(user_id)
        port = dovecot.tls_port if tls_mode == "tls" else dovecot.port
        row = db.execute(
            """
            INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted, mailbox)
            VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id
            """,
            (user_id, dovecot.host, port, tls_mode, name, b"encrypted-elsewhere", mailbox),
        ).fetchone()
        assert row is not None
        account = ImapAccount(
            account_id=row[0],
            host=dovecot.host,
            port=port,
            tls_mode=tls_mode,  # type: ignore[arg-type]
            username=name,
            password=password,
            mailbox=mailbox,
        )
        return Mailbox(user=name, password=password, user_id=user_id, account=account)

    yield make
    delete_users(db, users)


@pytest.fixture
def mailbox(make_mailbox: Callable[..., Mailbox]) -> Mailbox:
    return make_mailbox()


@pytest.fixture
def run_import(service_conn: psycopg.Connection, dovecot: DovecotServer) -> Callable[..., ImportResult]:
    def run(box: Mailbox, **kwargs: object) -> ImportResult:
        kwargs.setdefault("ssl_context", dovecot.ssl_context())
        kwargs.setdefault("allowed", LOOPBACK_ALLOWED)
        account = kwargs.pop("account", box.account)
        assert isinstance(account, ImapAccount)
        return import_mailbox(service_conn, account=account, user_id=box.user_id, **kwargs)  # type: ignore[arg-type]

    return run


