"""Sync runs and attempts: the queue's bookkeeping and each user's history.

A run is one request to import a user's mail; at most one is active (queued or running) per user,
enforced by a partial unique index. Creating a run and enqueueing its job happen in one
transaction, so there is never a queued run without a job, nor a job without a run.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg import Connection, Cursor
from psycopg.rows import dict_row

QUEUE = "imports"
TASK_NAME = "autosync.import_user"

Trigger = Literal["cron", "manual"]

INSERT_RUN = """
INSERT INTO public.sync_runs (user_id, trigger, status)
VALUES (%(user_id)s, %(trigger)s, %(status)s)
ON CONFLICT (user_id) WHERE status IN ('queued', 'running') DO NOTHING
RETURNING id
"""

ACTIVE_RUN = """
SELECT id FROM public.sync_runs WHERE user_id = %(user_id)s AND status IN ('queued', 'running')
"""

# procrastinate's own versioned SQL entry point, called inside our transaction so that the run and
# its job commit together.
DEFER_JOB = """
SELECT unnest(public.procrastinate_defer_jobs_v1(ARRAY[
    ROW(%(queue)s, %(task)s, 0, %(lock)s, %(lock)s, %(args)s::jsonb, NULL)
]::public.procrastinate_job_to_defer_v1[]))
"""

SET_JOB = "UPDATE public.sync_runs SET job_id = %(job_id)s WHERE id = %(run_id)s"

# One statement, so one round trip (a no-op run is a handful of them: each counts). The run moves to
# 'running' and returns its user; only then (the CTEs read `run`) is an attempt still 'running' from an
# earlier try closed as cut short (its worker died or lost the database) and this attempt opened.
START_ATTEMPT = """
WITH run AS (
    UPDATE public.sync_runs
    SET status = 'running', attempts = %(attempt)s, started_at = coalesce(started_at, now()),
        progress_done = 0, progress_total = NULL
    WHERE id = %(run_id)s AND status IN ('queued', 'running')
    RETURNING user_id
), interrupted AS (
    UPDATE public.sync_run_attempts
    SET status = 'failed',
        error = 'interrupted: the attempt ended without recording an outcome (worker stopped or lost the database)',
        finished_at = now()
    WHERE run_id = %(run_id)s AND status = 'running' AND attempt < %(attempt)s AND EXISTS (SELECT FROM run)
), opened AS (
    INSERT INTO public.sync_run_attempts (run_id, attempt, user_id, worker)
    SELECT %(run_id)s, %(attempt)s, run.user_id, %(worker)s FROM run
    ON CONFLICT (run_id, attempt) DO UPDATE
        SET status = 'running', started_at = now(), error = NULL, worker = excluded.worker
)
SELECT user_id FROM run
"""

# The attempt closed and the run moved on in one statement (one round trip). A run that will be
# retried goes back to 'queued' and keeps its last error visible.
FINISH_ATTEMPT = """
WITH attempt AS (
    UPDATE public.sync_run_attempts
    SET status = %(attempt_status)s, messages_imported = %(messages)s, error = %(error)s, finished_at = now()
    WHERE run_id = %(run_id)s AND attempt = %(attempt)s
)
UPDATE public.sync_runs
SET status = %(status)s,
    messages_imported = messages_imported + %(messages)s,
    error = %(error)s,
    finished_at = CASE WHEN %(status)s IN ('succeeded', 'failed') THEN now() END
WHERE id = %(run_id)s
"""

CONSECUTIVE_FAILURES = """
SELECT count(*) FROM public.sync_runs
WHERE user_id = %(user_id)s AND status = 'failed'
  AND queued_at > coalesce(
      (SELECT max(queued_at) FROM public.sync_runs WHERE user_id = %(user_id)s AND status = 'succeeded'),
      '-infinity')
"""

HISTORY = """
SELECT id, trigger, status, attempts, messages_imported, error, queued_at, started_at, finished_at,
       progress_done, progress_total
FROM public.sync_runs
WHERE user_id = %(user_id)s
ORDER BY queued_at DESC
LIMIT %(limit)s
"""

# Only while the run is running: a late callback cannot touch a finished run.
SET_PROGRESS = """
UPDATE public.sync_runs SET progress_done = %(done)s, progress_total = %(total)s
WHERE id = %(run_id)s AND status = 'running'
"""


@dataclass(frozen=True)
class RunRequest:
    run_id: uuid.UUID
    created: bool


@dataclass(frozen=True)
class RunRecord:
    id: uuid.UUID
    trigger: str
    status: str
    attempts: int
    messages_imported: int
    error: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress_done: int = 0
    progress_total: int | None = None


def user_lock(conn: Connection, user_id: uuid.UUID) -> None:
    """Serialise this transaction with others for the same user (the lock the SQL functions take)."""
    conn.execute("SELECT public.auto_sync_lock_user(%(user_id)s)", {"user_id": user_id})


def request_run(conn: Connection, *, user_id: uuid.UUID, trigger: Trigger, enqueue: bool) -> RunRequest:
    """Create a run for `user_id` (and its queue job when `enqueue`), or return the active one.

    Must be called inside a transaction.
    """
    row = conn.execute(INSERT_RUN, {"user_id": user_id, "trigger": trigger, "status": "queued"}).fetchone()
    if row is None:
        active = conn.execute(ACTIVE_RUN, {"user_id": user_id}).fetchone()
        if active is None:  # finished between the two statements: one more try settles it
            return request_run(conn, user_id=user_id, trigger=trigger, enqueue=enqueue)
        return RunRequest(run_id=active[0], created=False)
    run_id: uuid.UUID = row[0]
    if enqueue:
        job = conn.execute(
            DEFER_JOB,
            {
                "queue": QUEUE,
                "task": TASK_NAME,
                "lock": f"user:{user_id}",
                "args": json.dumps({"run_id": str(run_id)}),
            },
        ).fetchone()
        assert job is not None
        conn.execute(SET_JOB, {"job_id": job[0], "run_id": run_id})
    return RunRequest(run_id=run_id, created=True)


def start_attempt(
    conn: Connection, *, run_id: uuid.UUID, attempt: int, worker: str | None = None
) -> uuid.UUID | None:
    """Mark the run running and open attempt `attempt`; returns the user, or None if the run is over."""
    row = _atomic(conn, START_ATTEMPT, {"run_id": run_id, "attempt": attempt, "worker": worker}).fetchone()
    if row is None:
        return None
    user_id: uuid.UUID = row[0]
    return user_id


def finish_attempt(
    conn: Connection,
    *,
    run_id: uuid.UUID,
    attempt: int,
    messages: int,
    error: str | None,
    final: bool,
) -> str:
    """Close the attempt and move the run on; returns the run's new status."""
    if error is None:
        status = "succeeded"
    else:
        status = "failed" if final else "queued"
    _atomic(
        conn,
        FINISH_ATTEMPT,
        {
            "run_id": run_id,
            "attempt": attempt,
            "attempt_status": "succeeded" if error is None else "failed",
            "status": status,
            "messages": messages,
            "error": error,
        },
    )
    return status


def _atomic(conn: Connection, query: str, params: dict[str, Any]) -> Cursor[Any]:
    """Run one statement atomically: as is in autocommit (one round trip, no BEGIN/COMMIT around it),
    in a transaction (or a savepoint in the caller's) otherwise."""
    if conn.autocommit:
        return conn.execute(query, params)
    with conn.transaction():
        return conn.execute(query, params)


def set_progress(conn: Connection, *, run_id: uuid.UUID, done: int, total: int) -> None:
    """Record how many messages of `total` the running attempt has handled (its own statement)."""
    conn.execute(SET_PROGRESS, {"run_id": run_id, "done": done, "total": total})
    if not conn.autocommit:
        conn.commit()


def consecutive_failures(conn: Connection, *, user_id: uuid.UUID) -> int:
    row = conn.execute(CONSECUTIVE_FAILURES, {"user_id": user_id}).fetchone()
    return int(row[0]) if row else 0


def history(conn: Connection, *, user_id: uuid.UUID, limit: int) -> list[RunRecord]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows: list[dict[str, Any]] = cur.execute(HISTORY, {"user_id": user_id, "limit": limit}).fetchall()
    return [RunRecord(**row) for row in rows]
