"""What operators look at: users and their schedules, failing users, the queue, pg_cron's failures, lateness.

Every query here works as service_role (the operator endpoints) and as the owner (the `autosync`
commands). pg_cron's run log is read through `auto_sync_failed_cron_runs`, the one window
service_role has on it. Times of the schedule come from `auto_sync_slot_at_or_before`, so the rule that
staggers users lives in SQL once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row

from sync_function.runs import QUEUE

USERS = """
SELECT u.id AS user_id, u.email, coalesce(s.enabled, false) AS enabled, s.interval_minutes,
       CASE WHEN s.enabled THEN public.auto_sync_cron_schedule(u.id, s.interval_minutes) END AS schedule,
       CASE WHEN s.enabled
            THEN public.auto_sync_slot_at_or_before(u.id, s.interval_minutes, now()) + make_interval(mins => s.interval_minutes)
       END AS next_run,
       r.status AS last_status, r.queued_at AS last_queued_at, r.error AS last_error
FROM auth.users AS u
LEFT JOIN public.user_settings AS s ON s.user_id = u.id
LEFT JOIN LATERAL (
    SELECT status, queued_at, error FROM public.sync_runs WHERE user_id = u.id ORDER BY queued_at DESC LIMIT 1
) AS r ON true
ORDER BY coalesce(s.enabled, false) DESC, u.created_at, u.id
LIMIT %(limit)s
"""

ENABLED_BY_INTERVAL = """
SELECT interval_minutes, count(*) AS users
FROM public.user_settings WHERE enabled
GROUP BY interval_minutes ORDER BY interval_minutes
"""

# A user is failing while their latest finished run failed.
FAILING = """
SELECT DISTINCT ON (r.user_id) r.user_id, r.id AS run_id, r.status, r.error, r.finished_at
FROM public.sync_runs AS r
WHERE r.status IN ('succeeded', 'failed')
ORDER BY r.user_id, r.queued_at DESC
"""

QUEUE_DEPTH = """
SELECT count(*) FILTER (WHERE status = 'todo') AS waiting,
       count(*) FILTER (WHERE status = 'doing') AS running
FROM public.procrastinate_jobs WHERE queue_name = %(queue)s
"""

FAILED_CRON_RUNS = "SELECT * FROM public.auto_sync_failed_cron_runs(%(limit)s)"

# How late recent cron runs were queued and started, against the slot they belong to (the user's
# current interval: a run from before the user changed it is measured against the new one).
LATENESS = """
SELECT r.id AS run_id, r.user_id, slot.at AS slot,
       extract(epoch FROM r.queued_at - slot.at)::float8 AS queued_late_s,
       extract(epoch FROM r.started_at - slot.at)::float8 AS started_late_s
FROM public.sync_runs AS r
JOIN public.user_settings AS s ON s.user_id = r.user_id
CROSS JOIN LATERAL (SELECT public.auto_sync_slot_at_or_before(r.user_id, s.interval_minutes, r.queued_at) AS at) AS slot
WHERE r.trigger = 'cron'
ORDER BY r.queued_at DESC
LIMIT %(limit)s
"""

RECENT_RUNS = """
SELECT id AS run_id, user_id, trigger, status, attempts, messages_imported, progress_done, progress_total,
       error, queued_at, started_at, finished_at
FROM public.sync_runs ORDER BY queued_at DESC LIMIT %(limit)s
"""


@dataclass(frozen=True)
class UserSchedule:
    user_id: uuid.UUID
    email: str | None
    enabled: bool
    interval_minutes: int | None
    schedule: str | None
    next_run: datetime | None
    last_status: str | None
    last_queued_at: datetime | None
    last_error: str | None


def _rows(conn: Connection, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params or {}).fetchall()


def users(conn: Connection, *, limit: int = 1000) -> list[UserSchedule]:
    """Users, auto-sync on first, with their cron schedule, next run and last run."""
    return [UserSchedule(**row) for row in _rows(conn, USERS, {"limit": limit})]


def overview(conn: Connection, *, limit: int = 20) -> dict[str, Any]:
    """Everything the operator view shows, as plain JSON-able rows."""
    failing = [row for row in _rows(conn, FAILING) if row["status"] == "failed"]
    queue = _rows(conn, QUEUE_DEPTH, {"queue": QUEUE})[0]
    return {
        "enabled_by_interval": _rows(conn, ENABLED_BY_INTERVAL),
        "failing_users": failing[:limit],
        "queue": {"waiting": queue["waiting"], "running": queue["running"]},
        "failed_cron_runs": _rows(conn, FAILED_CRON_RUNS, {"limit": limit}),
        "lateness": _rows(conn, LATENESS, {"limit": limit}),
        "recent_runs": _rows(conn, RECENT_RUNS, {"limit": limit}),
    }
