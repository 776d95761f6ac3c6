"""Email accounts: stored with the password encrypted, listed without secrets."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row

from sync_function.crypto import decrypt_password, encrypt_password
from sync_function.importer import ImapAccount

INSERT = """
INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted, mailbox)
VALUES (%(user_id)s, %(host)s, %(port)s, %(tls_mode)s, %(username)s, %(password)s, %(mailbox)s)
RETURNING id, host, port, tls_mode, username, mailbox, created_at
"""

LIST = """
SELECT id, host, port, tls_mode, username, mailbox, created_at
FROM public.email_accounts WHERE user_id = %(user_id)s ORDER BY created_at, id
"""

WITH_SECRETS = """
SELECT id, host, port, tls_mode, username, password_encrypted, mailbox
FROM public.email_accounts WHERE user_id = %(user_id)s ORDER BY created_at, id
"""

DELETE = "DELETE FROM public.email_accounts WHERE id = %(id)s AND user_id = %(user_id)s"


@dataclass(frozen=True)
class AccountView:
    """What the API shows of an account: never the password."""

    id: uuid.UUID
    host: str
    port: int
    tls_mode: str
    username: str
    mailbox: str
    created_at: Any


def create(
    conn: Connection,
    *,
    user_id: uuid.UUID,
    host: str,
    port: int,
    tls_mode: str,
    username: str,
    password: str,
    mailbox: str,
    encryption_key: str,
) -> AccountView:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            INSERT,
            {
                "user_id": user_id,
                "host": host,
                "port": port,
                "tls_mode": tls_mode,
                "username": username,
                "password": encrypt_password(encryption_key, password),
                "mailbox": mailbox,
            },
        ).fetchone()
    assert row is not None
    return AccountView(**row)


def list_for_user(conn: Connection, *, user_id: uuid.UUID) -> list[AccountView]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [AccountView(**row) for row in cur.execute(LIST, {"user_id": user_id}).fetchall()]


def delete(conn: Connection, *, user_id: uuid.UUID, account_id: uuid.UUID) -> bool:
    return conn.execute(DELETE, {"id": account_id, "user_id": user_id}).rowcount > 0


def imap_accounts(conn: Connection, *, user_id: uuid.UUID, encryption_key: str) -> list[ImapAccount]:
    """The user's accounts with decrypted passwords, for the importer only."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(WITH_SECRETS, {"user_id": user_id}).fetchall()
    return [
        ImapAccount(
            account_id=row["id"],
            host=row["host"],
            port=row["port"],
            tls_mode=row["tls_mode"],
            username=row["username"],
            password=decrypt_password(encryption_key, row["password_encrypted"]),
            mailbox=row["mailbox"],
        )
        for row in rows
    ]
