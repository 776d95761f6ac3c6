"""Every database connection the service makes is built here, and works as the configured role.

The API's pool, the worker's pool and procrastinate's connector all come from this module
(`open_pool`, `queue_connector`), and all of them go through `_role_statement`: each new connection
runs `SET ROLE <Config.database_role>` (default `service_role`, revision 0014) before anything else.
The service therefore has that role's privileges whatever the login role in DATABASE_URL may do, and
a login role needs nothing but membership in it. An empty `database_role` keeps the login role's own
privileges (for a login role that is itself least-privileged).

Not here, by design: `autosync doctor` and `autosync reconcile` (cli.py) connect as the database
owner, because they read pg_cron's tables and repair schedules, which service_role may not.
"""

from __future__ import annotations

from typing import Any

import procrastinate
from psycopg import AsyncConnection, Connection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sync_function.config import Config

# The schema revision this code is written against; /readyz compares it with the database's.
# tests/service/test_health.py keeps it equal to Alembic's head.
EXPECTED_REVISION = "0029"


def _role_statement(config: Config) -> sql.Composed | None:
    """`SET ROLE` to the configured role, or None when the service keeps the login role."""
    if not config.database_role:
        return None
    return sql.SQL("SET ROLE {}").format(sql.Identifier(config.database_role))


def _pool_settings(config: Config, *, name: str, max_size: int) -> dict[str, Any]:
    """What the service's pools, sync and async, have in common."""
    return {
        "conninfo": config.database_url.get_secret_value(),
        "min_size": 1,
        "max_size": max_size,
        "name": name,
        # Below trigger_auto_sync's default 5 s HTTP timeout: with the database unreachable, pg_cron's
        # run must record our 503 and its reason, not a timeout of its own.
        "timeout": 3.0,
        "kwargs": {"autocommit": True, "application_name": name, "connect_timeout": 5},
    }


def open_pool(config: Config, *, name: str, max_size: int) -> ConnectionPool:
    """A pool that opens lazily: the service starts (and /healthz answers) while Postgres is down.

    Each connection works as `config.database_role` before the pool hands it out; a login role that
    may not SET ROLE to it gets no connection at all.
    """
    set_role = _role_statement(config)

    def configure(conn: Connection) -> None:
        if set_role is not None:
            conn.execute(set_role)  # autocommit: the role holds for the whole session

    return ConnectionPool(
        **_pool_settings(config, name=name, max_size=max_size), open=True, configure=configure
    )


async def open_async_pool(config: Config, *, name: str, max_size: int) -> AsyncConnectionPool:
    """`open_pool` for coroutines: the same role, timeouts and lazy opening, on the event loop.

    The API's hot reads use it: a sync route costs the event loop a thread-pool hand-off per
    request, which under load was more than the query itself (BENCHMARKS.md, API under load).
    """
    set_role = _role_statement(config)

    async def configure(conn: AsyncConnection[Any]) -> None:
        if set_role is not None:
            await conn.execute(set_role)

    pool: AsyncConnectionPool = AsyncConnectionPool(
        # An async pool opens on the running loop, below.
        **_pool_settings(config, name=name, max_size=max_size),
        open=False,
        configure=configure,
    )
    await pool.open(wait=False)
    return pool


def queue_connector(config: Config) -> procrastinate.PsycopgConnector:
    """procrastinate's connector: its pool and its LISTEN connection both work as `database_role`."""
    set_role = _role_statement(config)

    async def configure(conn: AsyncConnection[Any]) -> None:
        if set_role is not None:
            await conn.execute(set_role)
            # procrastinate's pooled connections are not autocommit, and the pool only takes a
            # connection back idle: commit so the role outlives this first transaction.
            await conn.commit()
        # Every procrastinate query is one statement (a call of its SQL functions): atomic on its own.
        # In autocommit each costs its own round trip only, not a COMMIT more, and the pool's liveness
        # check one empty query instead of two autocommit switches around it: a worker's fetch and
        # finish of a job go from six round trips to four.
        await conn.set_autocommit(True)

    return procrastinate.PsycopgConnector(
        conninfo=config.database_url.get_secret_value(),
        configure=configure,
        kwargs={"application_name": "autosync-queue"},
    )


def schema_revision(conn: Connection) -> str | None:
    row = conn.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    version = conn.execute("SELECT version_num FROM public.alembic_version").fetchone()
    return None if version is None else str(version[0])


__all__ = [
    "EXPECTED_REVISION",
    "ConnectionPool",
    "dict_row",
    "open_pool",
    "queue_connector",
    "schema_revision",
]
