"""Revisions 0009-0010: who sees what (RLS and grants), and the constraints that keep rows honest."""

from __future__ import annotations

import uuid
from dataclasses import fields
from typing import get_args, get_type_hints

import psycopg
import pytest

from sync_function.importer import StoredMessage
from tests.support.db import as_role, delete_users, new_user

pytestmark = pytest.mark.docker


def add_account(db: psycopg.Connection, user_id: uuid.UUID, username: str = "alice") -> uuid.UUID:
    row = db.execute(
        "INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)"
        " VALUES (%s, 'imap.example.com', 993, 'tls', %s, '\\x00ff'::bytea) RETURNING id",
        (user_id, username),
    ).fetchone()
    assert row is not None
    return row[0]


def add_message(db: psycopg.Connection, user_id: uuid.UUID, account_id: uuid.UUID, uid: int) -> None:
    db.execute(
        "INSERT INTO public.mailbox_state (account_id, mailbox, uidvalidity, last_uid) VALUES (%s, 'INBOX', 7, %s)"
        " ON CONFLICT (account_id, mailbox) DO UPDATE SET last_uid = excluded.last_uid",
        (account_id, uid),
    )
    db.execute(
        "INSERT INTO public.messages (user_id, account_id, mailbox, uidvalidity, uid, sha256, size, raw)"
        " VALUES (%s, %s, 'INBOX', 7, %s, sha256('x'::bytea), 1, 'x'::bytea)",
        (user_id, account_id, uid),
    )


@pytest.fixture
def two_users(db: psycopg.Connection):  # type: ignore[no-untyped-def]
    alice, bob = new_user(db), new_user(db)
    accounts = {alice: add_account(db, alice), bob: add_account(db, bob)}
    add_message(db, alice, accounts[alice], 1)
    add_message(db, bob, accounts[bob], 1)
    add_message(db, bob, accounts[bob], 2)
    yield alice, bob, accounts
    delete_users(db, [alice, bob])


def test_authenticated_users_see_only_their_own_rows(db: psycopg.Connection, two_users) -> None:  # type: ignore[no-untyped-def]
    alice, bob, accounts = two_users
    with as_role(db, "authenticated", sub=bob):
        assert db.execute("SELECT id FROM public.email_accounts").fetchall() == [(accounts[bob],)]
        assert db.execute("SELECT account_id FROM public.mailbox_state").fetchall() == [(accounts[bob],)]
        assert db.execute("SELECT user_id, uid FROM public.messages ORDER BY uid").fetchall() == [(bob, 1), (bob, 2)]
    with as_role(db, "authenticated", sub=alice):
        assert db.execute("SELECT count(*) FROM public.messages").fetchone() == (1,)


def test_the_encrypted_password_is_not_readable_by_users(db: psycopg.Connection, two_users) -> None:  # type: ignore[no-untyped-def]
    _, bob, _ = two_users
    with as_role(db, "authenticated", sub=bob):
        assert db.execute("SELECT username, tls_mode FROM public.email_accounts").fetchall() == [("alice", "tls")]
        with db.transaction(), pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("SELECT password_encrypted FROM public.email_accounts")
        with db.transaction(), pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("SELECT * FROM public.email_accounts")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO public.messages (user_id, account_id, mailbox, uidvalidity, uid, size, skipped_reason)"
        " SELECT user_id, id, 'INBOX', 1, 99, 1, 'x' FROM public.email_accounts",
        "UPDATE public.messages SET subject = 'changed'",
        "DELETE FROM public.messages",
        "UPDATE public.mailbox_state SET last_uid = 0",
        "UPDATE public.email_accounts SET host = 'evil.example.com'",
    ],
)
def test_users_cannot_write_mail_tables(db: psycopg.Connection, two_users, statement: str) -> None:  # type: ignore[no-untyped-def]
    _, bob, _ = two_users
    with as_role(db, "authenticated", sub=bob), db.transaction(), pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute(statement)  # type: ignore[arg-type]


@pytest.mark.parametrize("table", ["email_accounts", "mailbox_state", "messages"])
def test_anon_sees_nothing(db: psycopg.Connection, two_users, table: str) -> None:  # type: ignore[no-untyped-def]
    with as_role(db, "anon"), db.transaction(), pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute(f"SELECT count(*) FROM public.{table}")  # type: ignore[arg-type]


def test_a_message_cannot_claim_another_users_account(db: psycopg.Connection, two_users) -> None:  # type: ignore[no-untyped-def]
    alice, bob, accounts = two_users
    with db.transaction(), pytest.raises(psycopg.errors.ForeignKeyViolation):
        add_message(db, alice, accounts[bob], 50)


@pytest.mark.parametrize(
    ("columns", "violation"),
    [
        ("sha256, size, raw, skipped_reason) VALUES (sha256('x'::bytea), 1, 'x'::bytea, 'too_large'", "messages_stored_or_skipped"),
        ("sha256, size, raw) VALUES (NULL, 1, 'x'::bytea", "messages_stored_or_skipped"),
        ("sha256, size, raw) VALUES ('\\x00'::bytea, 1, 'x'::bytea", "messages_sha256_length"),
    ],
)
def test_a_message_is_either_stored_or_skipped(db: psycopg.Connection, two_users, columns: str, violation: str) -> None:  # type: ignore[no-untyped-def]
    alice, _, accounts = two_users
    with db.transaction(), pytest.raises(psycopg.errors.CheckViolation, match=violation):
        db.execute(
            "INSERT INTO public.messages (user_id, account_id, mailbox, uidvalidity, uid, "  # type: ignore[arg-type]
            + columns.replace("VALUES (", "VALUES (%s, %s, 'INBOX', 7, 60, ")
            + ")",
            (alice, accounts[alice]),
        )


def test_deleting_a_user_removes_accounts_state_and_messages(db: psycopg.Connection) -> None:
    user = new_user(db)
    account = add_account(db, user)
    add_message(db, user, account, 1)
    delete_users(db, [user])
    for table in ("email_accounts", "mailbox_state", "messages"):
        column = "id" if table == "email_accounts" else "account_id"
        assert db.execute(f"SELECT count(*) FROM public.{table} WHERE {column} = %s", (account,)).fetchone() == (0,)  # type: ignore[arg-type]


def test_invalid_account_values_are_rejected(db: psycopg.Connection) -> None:
    user = new_user(db)
    try:
        for column, value in (("port", "0"), ("port", "70000"), ("tls_mode", "'ssl'"), ("host", "'  '")):
            values = {"host": "'h'", "port": "993", "tls_mode": "'tls'"} | {column: value}
            with db.transaction(), pytest.raises(psycopg.errors.CheckViolation):
                db.execute(
                    "INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)"  # type: ignore[arg-type]
                    f" VALUES (%s, {values['host']}, {values['port']}, {values['tls_mode']}, 'u', 'x'::bytea)",
                    (user,),
                )
    finally:
        delete_users(db, [user])


# Filled by the database on insert; the importer never writes them.
DATABASE_FILLED = {"id", "imported_at"}


def test_the_importers_row_matches_the_migrated_messages_table(db: psycopg.Connection) -> None:
    """importer.StoredMessage is the one definition of a messages row: a migration that adds, drops,
    retypes or changes the nullability of a column fails here until the definition follows."""
    table = {
        name: (pg_type, not_null, filled_by_database)
        for name, pg_type, not_null, filled_by_database in db.execute(
            """SELECT attname, format_type(atttypid, atttypmod), attnotnull, attidentity <> '' OR atthasdef
               FROM pg_catalog.pg_attribute
               WHERE attrelid = 'public.messages'::regclass AND attnum > 0 AND NOT attisdropped"""
        )
    }
    declared = {f.name: f.metadata["pg_type"] for f in fields(StoredMessage)}
    assert set(declared) | DATABASE_FILLED == set(table)
    assert all(table[name][2] for name in DATABASE_FILLED)
    # Canonical names ('timestamptz' is 'timestamp with time zone'), as format_type() prints them.
    canonical = {
        name: db.execute("SELECT %s::regtype::text", (pg_type,)).fetchone()[0]  # type: ignore[index]
        for name, pg_type in declared.items()
    }
    assert canonical == {name: table[name][0] for name in declared}
    hints = get_type_hints(StoredMessage)
    optional = {name: type(None) in get_args(hints[name]) for name in declared}
    assert optional == {name: not table[name][1] for name in declared}
