"""Database access for the service: one psycopg pool, opened and closed with the app or worker."""

from __future__ import annotations

from collections.abc import Callable

from psycopg import Connection, sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

# The schema revision this code is written against; /readyz compares it with the database's.
# tests/service/test_health.py keeps it equal to Alembic's head.
EXPECTED_REVISION = "0014"


def role_setter(role: str | None) -> Callable[[Connection], None] | None:
    """A pool `configure` hook that makes every connection work as `role` (least privilege)."""
    if not role:
        return None
    statement = sql.SQL("SET ROLE {}").format(sql.Identifier(role))

    def configure(conn: Connection) -> None:
        conn.execute(statement)

    return configure


def open_pool(database_url: str, *, max_size: int, name: str, role: str | None = None) -> ConnectionPool:
    """A pool that opens lazily: the service starts (and /healthz answers) while Postgres is down.

    With `role`, each connection runs SET ROLE first, so whatever the login role may do, the service
    only has that role's privileges.
    """
    return ConnectionPool(
        database_url,
        min_size=1,
        max_size=max_size,
        name=name,
        open=True,
        # Below trigger_auto_sync's default 5 s HTTP timeout: with the database unreachable, pg_cron's
        # run must record our 503 and its reason, not a timeout of its own.
        timeout=3.0,
        kwargs={"autocommit": True, "application_name": name, "connect_timeout": 5},
        configure=role_setter(role),
    )


def schema_revision(conn: Connection) -> str | None:
    row = conn.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    version = conn.execute("SELECT version_num FROM public.alembic_version").fetchone()
    return None if version is None else str(version[0])


__all__ = ["EXPECTED_REVISION", "ConnectionPool", "dict_row", "open_pool", "schema_revision"]
