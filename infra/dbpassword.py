"""The password of the database's login role: check it, and rotate it (Pulumi's DatabasePassword provider).

The Postgres image applies POSTGRES_PASSWORD only when it initialises an empty data volume, so a new
password in the stack config changes nothing in a database that already exists. Rotation therefore
logs in with the current password and sets the new one with ALTER ROLE. The new password travels as
a SCRAM verifier computed on this side (libpq's PQencryptPasswordConn), so the plain text never
reaches the server, its statement log or `pg_stat_activity`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import psycopg
from psycopg import sql

CONNECT_TIMEOUT_S = 10


class PasswordError(RuntimeError):
    """The role's password cannot be checked or changed; the message says why and what to do."""


@dataclass(frozen=True)
class Login:
    """Where and as whom to log in; the password is passed separately so that it never sits in a repr."""

    host: str
    port: int
    user: str
    database: str

    def url(self, password: str) -> str:
        """The URL clients use; the password is percent-encoded (a configured one may contain '@' or '/')."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(password, safe='')}"
            f"@{self.host}:{self.port}/{self.database}"
        )

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


def login_error(login: Login, password: str) -> str | None:
    """None when `password` logs in, else the server's reason (which never contains the password)."""
    try:
        with psycopg.connect(login.url(password), connect_timeout=CONNECT_TIMEOUT_S):
            return None
    except psycopg.OperationalError as exc:
        return str(exc).strip()


def check(login: Login, password: str) -> None:
    """Raise `PasswordError` unless `password` logs in."""
    reason = login_error(login, password)
    if reason is not None:
        raise PasswordError(
            f"cannot log in as {login.describe()} with the stack's database password: {reason}. "
            "If the data volume already existed, it keeps the user and password it was initialised "
            "with (POSTGRES_PASSWORD applies only to an empty volume): set autosync:databasePassword "
            "to that password, then change it to rotate."
        )


def rotate(login: Login, *, current: str, new: str) -> bool:
    """Make `new` the role's password, logging in with `current`; True when it changed something.

    Idempotent: when `new` logs in already (a retried `pulumi up`), nothing is done. When neither
    password logs in, nothing is changed and `PasswordError` says so.
    """
    if login_error(login, new) is None:
        return False
    try:
        connection = psycopg.connect(login.url(current), connect_timeout=CONNECT_TIMEOUT_S, autocommit=True)
    except psycopg.OperationalError as exc:
        raise PasswordError(
            f"cannot rotate the password of {login.describe()}: neither the new password nor the "
            f"current one (from the stack state) logs in: {str(exc).strip()}"
        ) from None
    with connection:
        # algorithm None: the server's own password_encryption (scram-sha-256 by default).
        verifier = connection.pgconn.encrypt_password(new.encode(), login.user.encode(), None)
        connection.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(login.user), sql.Literal(verifier.decode("ascii"))
            )
        )
    check(login, new)
    return True
