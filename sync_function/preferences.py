"""A user's auto-sync preference (on or off, and how often), saved together with their cron job.

The rules live in SQL, once: which intervals are supported (`auto_sync_check_interval`, whose error
lists them) and how a job is scheduled, moved or removed (`schedule_auto_sync`,
`unschedule_auto_sync`). This module calls them in the right order, in one transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import AsyncConnection, Connection

from sync_function import ratelimits
from sync_function.users import UnknownUser

CHECK_INTERVAL = "SELECT public.auto_sync_check_interval(%(interval)s)"

# An interval left out (NULL) keeps the stored one; a user with none stored gets the default.
UPSERT = """
INSERT INTO public.user_settings AS s (user_id, enabled, interval_minutes)
VALUES (%(user_id)s, %(enabled)s, coalesce(%(interval)s::integer, %(default_interval)s))
ON CONFLICT (user_id) DO UPDATE
    SET enabled = excluded.enabled,
        interval_minutes = coalesce(%(interval)s::integer, s.interval_minutes),
        updated_at = now()
RETURNING interval_minutes
"""

SCHEDULE = "SELECT public.schedule_auto_sync(%(user_id)s, %(interval)s)"
UNSCHEDULE = "SELECT public.unschedule_auto_sync(%(user_id)s)"

SUPPORTED = "SELECT public.auto_sync_supported_intervals()"

# The slot rule lives in SQL (auto_sync_slot_at_or_before, with the dispatcher).
NEXT_RUN = """
SELECT public.auto_sync_slot_at_or_before(s.user_id, s.interval_minutes, now()) + make_interval(mins => s.interval_minutes)
FROM public.user_settings AS s
WHERE s.user_id = %(user_id)s AND s.enabled
"""

LOAD = "SELECT enabled, interval_minutes FROM public.user_settings WHERE user_id = %(user_id)s"

# One row whatever happens: whether the user exists, and whether auto-sync is on (off when never saved).
ENABLED = """
SELECT u.id IS NOT NULL, coalesce(s.enabled, false)
FROM (SELECT %(user_id)s::uuid AS id) AS q
LEFT JOIN auth.users AS u ON u.id = q.id
LEFT JOIN public.user_settings AS s ON s.user_id = q.id
"""


@dataclass(frozen=True)
class Preference:
    enabled: bool
    interval_minutes: int


# What a user who never saved a preference has.
DEFAULT = Preference(enabled=False, interval_minutes=60)


class UnsupportedInterval(ValueError):
    """The interval is not one auto_sync_supported_intervals() lists; the message lists those that are."""


def save_preference(
    conn: Connection,
    *,
    user_id: uuid.UUID,
    enabled: bool,
    interval_minutes: int | None,
    limit: ratelimits.Limit | None = None,
) -> None:
    """Save the user's choice and schedule, move or remove their cron job, all or nothing.

    `interval_minutes=None` keeps the stored interval (the default for a user with none stored), so
    turning auto-sync off and on again comes back at the interval the user chose.

    Raises UnsupportedInterval (also when disabling: a stored preference is always a valid one),
    UnknownUser, or ratelimits.RateLimited when `limit` is given and used up; either way nothing changed.
    """
    params = {
        "user_id": user_id,
        "enabled": enabled,
        "interval": interval_minutes,
        "default_interval": DEFAULT.interval_minutes,
    }
    try:
        with conn.transaction():
            if limit is not None:
                ratelimits.hit(conn, user_id=user_id, limit=limit)
            if interval_minutes is not None:
                conn.execute(CHECK_INTERVAL, params)
            row = conn.execute(UPSERT, params).fetchone()
            assert row is not None
            conn.execute(SCHEDULE if enabled else UNSCHEDULE, {**params, "interval": row[0]})
    except psycopg.errors.InvalidParameterValue as exc:
        raise UnsupportedInterval(exc.diag.message_primary or "invalid interval") from None
    except psycopg.errors.ForeignKeyViolation:
        raise UnknownUser(user_id) from None


async def load_preference(conn: AsyncConnection, *, user_id: uuid.UUID) -> Preference:
    """The user's saved preference, or DEFAULT when they never saved one."""
    row = await (await conn.execute(LOAD, {"user_id": user_id})).fetchone()
    return DEFAULT if row is None else Preference(enabled=row[0], interval_minutes=row[1])


def auto_sync_enabled(conn: Connection, *, user_id: uuid.UUID) -> bool:
    """Whether the user has auto-sync on now; raises UnknownUser."""
    row = conn.execute(ENABLED, {"user_id": user_id}).fetchone()
    assert row is not None  # the query always returns one row
    exists, enabled = row
    if not exists:
        raise UnknownUser(user_id)
    return bool(enabled)


async def supported_intervals(conn: AsyncConnection) -> list[int]:
    """The intervals (minutes) a preference may have, as the database decides."""
    row = await (await conn.execute(SUPPORTED)).fetchone()
    assert row is not None
    return list(row[0])


async def next_run(conn: AsyncConnection, *, user_id: uuid.UUID) -> datetime | None:
    """When the user's auto-sync fires next (pg_cron's clock, UTC), or None when it is off."""
    row = await (await conn.execute(NEXT_RUN, {"user_id": user_id})).fetchone()
    return None if row is None else row[0]
