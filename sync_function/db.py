"""Database access for the service: one psycopg pool, opened and closed with the app or worker."""

from __future__ import annotations

from psycopg import Connection
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

# The schema revision this code is written against; /readyz compares it with the database's.
# tests/service/test_schema_revision.py keeps it equal to Alembic's head.
EXPECTED_REVISION = "0013"


def open_pool(database_url: str, *, max_size: int, name: str) -> ConnectionPool:
    """A pool that opens lazily: the service starts (and /healthz answers) while Postgres is down."""
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
    )


def schema_revision(conn: Connection) -> str | None:
    row = conn.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    version = conn.execute("SELECT version_num FROM public.alembic_version").fetchone()
    return None if version is None else str(version[0])


__all__ = ["EXPECTED_REVISION", "ConnectionPool", "dict_row", "open_pool", "schema_revision"]
