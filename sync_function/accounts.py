"""Email accounts: verified by logging in, stored with the password encrypted, listed without secrets."""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import Connection
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from sync_function import imap, ratelimits
from sync_function.crypto import decrypt_password, encrypt_password
from sync_function.destinations import PUBLIC_ONLY, DestinationPolicy, DestinationRefused, InvalidHost
from sync_function.importer import ImapAccount
from sync_function.users import UnknownUser, require_user

# Adding an account waits on the user's IMAP server while the user waits on the page: cap it below
# the import timeout.
VERIFY_TIMEOUT_S = 15.0

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


class LoginFailed(ValueError):
    """The IMAP server did not accept the account (unreachable, TLS, credentials, no such mailbox)."""


class DestinationNotAllowed(ValueError):
    """The host is not one the service may connect to (sync_function.destinations); nothing was dialled."""


class DuplicateAccount(ValueError):
    """The user already has this mailbox."""


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


def verify_login(
    account: ImapAccount,
    *,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None,
    allowed: DestinationPolicy = PUBLIC_ONLY,
) -> None:
    """Log in and STATUS the mailbox; raises LoginFailed with the server's reason in words.

    Raises DestinationNotAllowed (before any connection) for a host that resolves to a refused address.
    """
    try:
        with imap.connect(
            host=account.host,
            port=account.port,
            tls_mode=account.tls_mode,
            username=account.username,
            password=account.password,
            timeout_s=min(timeout_s, VERIFY_TIMEOUT_S),
            ssl_context=ssl_context,
            allowed=allowed,
        ) as session:
            session.status(account.mailbox)
    except (DestinationRefused, InvalidHost) as exc:
        raise DestinationNotAllowed(str(exc)) from None
    except imap.ImapError as exc:
        raise LoginFailed(f"could not verify the account: {exc}") from None


def add(
    pool: ConnectionPool,
    *,
    user_id: uuid.UUID,
    account: ImapAccount,
    encryption_key: str,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None,
    allowed: DestinationPolicy = PUBLIC_ONLY,
    limit: ratelimits.Limit | None = None,
) -> AccountView:
    """Verify the login first, then store the account: nothing is stored for an account that fails.

    The login is checked before a pooled connection is taken: a slow IMAP server must not hold a
    database connection. Raises LoginFailed, DestinationNotAllowed, DuplicateAccount, UnknownUser or
    ratelimits.RateLimited (when `limit` is given and used up).
    """
    if limit is not None:
        # Counted before the login and committed: every attempt is an outbound login, failed or not.
        with pool.connection() as conn, conn.transaction():
            require_user(conn, user_id=user_id)
            ratelimits.hit(conn, user_id=user_id, limit=limit)
    verify_login(account, timeout_s=timeout_s, ssl_context=ssl_context, allowed=allowed)
    try:
        with pool.connection() as conn:
            return create(
                conn,
                user_id=user_id,
                host=account.host,
                port=account.port,
                tls_mode=account.tls_mode,
                username=account.username,
                password=account.password,
                mailbox=account.mailbox,
                encryption_key=encryption_key,
            )
    except psycopg.errors.UniqueViolation:
        raise DuplicateAccount("this mailbox is already added") from None
    except psycopg.errors.ForeignKeyViolation:
        raise UnknownUser(user_id) from None


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
