"""What may start a run, one function per trigger (`runs.Trigger`), each deciding in one transaction.

pg_cron's trigger queues a run for a worker when the user has auto-sync on. A manual import claims a
run and imports at once (or, from the page, queues it for a worker), at most `manual_import_limit`
per user per window.
"""

from __future__ import annotations

import math
import ssl
import uuid
from datetime import UTC, datetime

from psycopg import Connection
from psycopg_pool import ConnectionPool

from sync_function import preferences, runs, sync
from sync_function.config import Config
from sync_function.users import require_user


class AlreadyRunning(Exception):
    """An import for this user is already queued or running: two at once would import the same mail."""

    def __init__(self, run_id: uuid.UUID) -> None:
        super().__init__(f"an import for this user is already queued or running (run {run_id})")
        self.run_id = run_id


class RateLimited(Exception):
    """The user had their manual imports for this window; `retry_after_s` says when the next one may run."""

    def __init__(self, *, retry_after_s: int, limit: int, window_s: int) -> None:
        super().__init__(f"at most {limit} manual imports per {window_s} s; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


def queue_cron_run(conn: Connection, *, user_id: uuid.UUID) -> runs.RunRequest | None:
    """Queue one import for a worker, or return the run already queued or running.

    None when the user has auto-sync off (the cron job may fire once more after they turned it off).
    Raises UnknownUser.
    """
    with conn.transaction():
        if not preferences.auto_sync_enabled(conn, user_id=user_id):
            return None
        return runs.request_run(conn, user_id=user_id, trigger="cron", enqueue=True)


def claim_manual_run(conn: Connection, *, user_id: uuid.UUID, limit: int, window_s: int) -> uuid.UUID:
    """Create a manual run for the caller to import right away; returns its id.

    Raises UnknownUser, RateLimited, or AlreadyRunning; then nothing was created.
    """
    return _manual_run(conn, user_id=user_id, limit=limit, window_s=window_s, enqueue=False)


def queue_manual_run(conn: Connection, *, user_id: uuid.UUID, limit: int, window_s: int) -> uuid.UUID:
    """Queue a manual run for a worker (the page's "sync now"); returns its id at once.

    Counts against the same per-user limit as import_now. Raises what claim_manual_run raises.
    """
    return _manual_run(conn, user_id=user_id, limit=limit, window_s=window_s, enqueue=True)


def _manual_run(
    conn: Connection, *, user_id: uuid.UUID, limit: int, window_s: int, enqueue: bool
) -> uuid.UUID:
    with conn.transaction():
        require_user(conn, user_id=user_id)
        # Serialised per user, so that concurrent requests cannot all pass the count below.
        runs.user_lock(conn, user_id)
        count, oldest = runs.recent_manual_runs(conn, user_id=user_id, window_s=window_s)
        if count >= limit:
            assert oldest is not None
            elapsed = (datetime.now(UTC) - oldest).total_seconds()
            retry_after_s = max(1, math.ceil(window_s - elapsed))
            raise RateLimited(retry_after_s=retry_after_s, limit=limit, window_s=window_s)
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
            limit=config.manual_import_limit,
            window_s=config.manual_import_window_seconds,
        )
    return sync.run_attempt(pool, config, run_id=run_id, attempt=1, final=True, ssl_context=ssl_context)
