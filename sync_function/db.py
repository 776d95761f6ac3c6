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

import select
import time
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import procrastinate
from psycopg import AsyncConnection, Connection, sql
from psycopg.pq import TransactionStatus
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


# How long after going back to the pool a queue connection is taken for alive without a round trip.
QUEUE_ALIVE_WINDOW_S = 1.0


@dataclass
class RecentlyAlive:
    """The liveness check of procrastinate's pool, minus the round trip for a connection just used.

    procrastinate checks every connection its pool hands out with an empty query, so that a worker
    survives a database restart: one round trip before each fetch and each finish of a job, two of
    the eight a sync that finds nothing new cost. A connection that went back to the pool less than
    `window_s` ago, with nothing arrived on its socket since, skips it: a server that shuts down or
    ends the session sends its reason and closes, which leaves the socket readable, so such a
    connection still gets the full check and is replaced. (HikariCP's aliveBypassWindowMs is the same
    bargain.) What it cannot see, a peer gone silently, the empty query would only see after its own
    timeout; the window bounds how long that goes unchecked.
    """

    window_s: float = QUEUE_ALIVE_WINDOW_S
    _returned: WeakKeyDictionary[AsyncConnection[Any], float] = field(default_factory=WeakKeyDictionary)

    async def returned(self, conn: AsyncConnection[Any]) -> None:
        """The pool's `reset`: called with every connection given back in good order."""
        self._returned[conn] = time.monotonic()

    async def check(self, conn: AsyncConnection[Any]) -> None:
        """The pool's `check`: raises, as psycopg_pool's own check does, for a connection that is gone."""
        returned = self._returned.pop(conn, None)
        if returned is not None and time.monotonic() - returned < self.window_s and _quiet(conn):
            return
        await AsyncConnectionPool.check_connection(conn)


def _quiet(conn: AsyncConnection[Any]) -> bool:
    """Open, idle, and nothing waiting to be read (no notice, no error, no end of stream)."""
    if conn.closed or conn.pgconn.transaction_status != TransactionStatus.IDLE:
        return False
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


def queue_connector(config: Config) -> procrastinate.PsycopgConnector:
    """procrastinate's connector: its pool and its LISTEN connection both work as `database_role`.

    Its pool checks connections with `RecentlyAlive` instead of an empty query each time.
    """
    set_role = _role_statement(config)
    liveness = RecentlyAlive()

    def pool(**kwargs: Any) -> AsyncConnectionPool:
        # procrastinate passes its own `check` (the empty query every time); this one replaces it.
        kwargs["check"] = liveness.check
        return AsyncConnectionPool(**kwargs, reset=liveness.returned)

    async def configure(conn: AsyncConnection[Any]) -> None:
        if set_role is not None:
            await conn.execute(set_role)
            # procrastinate's pooled connections are not autocommit, and the pool only takes a
            # connection back idle: commit so the role outlives this first transaction.
            await conn.commit()
        # Every procrastinate query is one statement (a call of its SQL functions): atomic on its own.
        # In autocommit each costs its own round trip only, not a COMMIT more, and the pool's liveness
        # check (when it runs, see RecentlyAlive) one empty query instead of two autocommit switches
        # around it.
        await conn.set_autocommit(True)

    return procrastinate.PsycopgConnector(
        conninfo=config.database_url.get_secret_value(),
        pool_factory=pool,
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
