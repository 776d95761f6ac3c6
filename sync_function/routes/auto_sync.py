"""A user's auto-sync preference: saved with the cron job in one transaction."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter

from sync_function.deps import CurrentUser, PoolDep
from sync_function.errors import ApiError
from sync_function.schemas import AutoSyncPreference, LoadAutoSync, SaveAutoSync, Success

router = APIRouter(prefix="/api/settings", tags=["settings"])

DEFAULTS = AutoSyncPreference(enabled=False, interval_minutes=60)

UPSERT = """
INSERT INTO public.user_settings AS s (user_id, enabled, interval_minutes)
VALUES (%(user_id)s, %(enabled)s, %(interval)s)
ON CONFLICT (user_id) DO UPDATE
    SET enabled = excluded.enabled, interval_minutes = excluded.interval_minutes, updated_at = now()
"""


@router.post("/save-auto-sync", response_model=Success)
def save_auto_sync(body: SaveAutoSync, user_id: CurrentUser, pool: PoolDep) -> Success:
    """Save the user's choice and schedule, move or remove their cron job, atomically."""
    params = {"user_id": user_id, "enabled": body.enabled, "interval": body.interval_minutes}
    try:
        with pool.connection() as conn, conn.transaction():
            # The interval rule lives in SQL, once; its error lists the supported values.
            conn.execute("SELECT public.auto_sync_check_interval(%(interval)s)", params)
            conn.execute(UPSERT, params)
            if body.enabled:
                conn.execute("SELECT public.schedule_auto_sync(%(user_id)s, %(interval)s)", params)
            else:
                conn.execute("SELECT public.unschedule_auto_sync(%(user_id)s)", params)
    except psycopg.errors.InvalidParameterValue as exc:
        raise ApiError(400, exc.diag.message_primary or "invalid interval") from None
    except psycopg.errors.ForeignKeyViolation:
        raise ApiError(403, "the token's user does not exist") from None
    return Success()


@router.get("/load-auto-sync", response_model=LoadAutoSync)
def load_auto_sync(user_id: CurrentUser, pool: PoolDep) -> LoadAutoSync:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT enabled, interval_minutes FROM public.user_settings WHERE user_id = %s", (user_id,)
        ).fetchone()
    settings = DEFAULTS if row is None else AutoSyncPreference(enabled=row[0], interval_minutes=row[1])
    return LoadAutoSync(settings=settings)
