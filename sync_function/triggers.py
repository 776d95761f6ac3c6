"""What may start a run, one function per trigger (`runs.Trigger`), each deciding in one transaction.

pg_cron's trigger queues a run for a worker when the user has auto-sync on. A manual import claims a
run and imports at once (or, from the page, queues it for a worker), within the per-user manual
import limit (`ratelimits.manual_import`).
"""

from __future__ import annotations

import ssl
import uuid

from psycopg import Connection
from psycopg_pool import ConnectionPool

from sync_function import preferences, ratelimits, runs, sync
from sync_function.config import Config
from sync_function.users import require_user


class AlreadyRunning(Exception):
    """An import for this user is already queued or running: two at once would import the same mail."""

    def __init__(self, run_id: uuid.UUID) -> None:
        super().__init__(f"an import for this user is already queued or running (run {run_id})")
        self.run_id = run_id


def queue_cron_run(conn: Connection, *, user_id: uuid.UUID) -> runs.RunRequest | None:
    """Queue one import for a worker, or return the run already queued or running.

    None when the user has auto-sync off (the cron job may fire once more after they turned it off).
    Raises UnknownUser.
    """
    with conn.transaction():
        if not preferences.auto_sync_enabled(conn, user_id=user_id):
            return None
        return runs.request_run(conn, user_id=user_id, trigger="cron", enqueue=True)


def claim_manual_run(conn: Connection, *, user_id: uuid.UUID, limit: ratelimits.Limit) -> uuid.UUID:
    """Create a manual run for the caller to import right away; returns its id.

    Raises UnknownUser, ratelimits.RateLimited, or AlreadyRunning; then nothing was created (and
    the refused request does not count against the limit).
    """
    return _manual_run(conn, user_id=user_id, limit=limit, enqueue=False)


def queue_manual_run(conn: Connection, *, user_id: uuid.UUID, limit: ratelimits.Limit) -> uuid.UUID:
    """Queue a manual run for a worker (the page's "sync now"); returns its id at once.

    Counts against the same per-user limit as import_now. Raises what claim_manual_run raises.
    """
    return _manual_run(conn, user_id=user_id, limit=limit, enqueue=True)


def _manual_run(conn: Connection, *, user_id: uuid.UUID, limit: ratelimits.Limit, enqueue: bool) -> uuid.UUID:
    with conn.transaction():
        require_user(conn, user_id=user_id)
        ratelimits.hit(conn, user_id=user_id, limit=limit)
        claimed = runs.request_run(conn, user_id=user_id, trigger="manual", enqueue=enqueue)
        if not claimed.created:
            raise AlreadyRunning(claimed.run_id)
        return claimed.run_id


def import_now(
    pool: ConnectionPool, config: Config, *, user_id: uuid.UUID, ssl_context: ssl.SSLContext | None
) -> sync.AttemptResult:
    """Claim a manual run and import the user's mail in this thread; one attempt, no retries.

    Raises what claim_manual_run raises, and sync.ImportFailed when an account failed.
    """
    # The claim's connection goes back to the pool before the import takes its own.
    with pool.connection() as conn:
        run_id = claim_manual_run(
            conn,
            user_id=user_id,
            limit=ratelimits.manual_import(config),
        )
    return sync.run_attempt(pool, config, run_id=run_id, attempt=1, final=True, ssl_context=ssl_context)
