"""A user's auto-sync preference: saved with the cron job in one transaction (sync_function.preferences)."""

from __future__ import annotations

from fastapi import APIRouter

from sync_function import preferences, ratelimits
from sync_function.deps import ConfigDep, CurrentUser, PoolDep, ReadPoolDep
from sync_function.errors import ApiError
from sync_function.schemas import AutoSyncPreference, Intervals, LoadAutoSync, NextRun, SaveAutoSync, Success
from sync_function.users import UnknownUser

router = APIRouter(prefix="/api/settings", tags=["settings"])


@router.post("/save-auto-sync", response_model=Success)
def save_auto_sync(body: SaveAutoSync, user_id: CurrentUser, pool: PoolDep, config: ConfigDep) -> Success:
    """Save the user's choice and schedule, move or remove their cron job, atomically (rate-limited per user)."""
    try:
        with pool.connection() as conn:
            preferences.save_preference(
                conn,
                user_id=user_id,
                enabled=body.enabled,
                interval_minutes=body.interval_minutes,
                limit=ratelimits.save_auto_sync(config),
            )
    except preferences.UnsupportedInterval as exc:
        raise ApiError(400, str(exc)) from None
    except UnknownUser:
        raise ApiError(403, "the token's user does not exist") from None
    return Success()


@router.get("/load-auto-sync", response_model=LoadAutoSync)
async def load_auto_sync(user_id: CurrentUser, pool: ReadPoolDep) -> LoadAutoSync:
    async with pool.connection() as conn:
        preference = await preferences.load_preference(conn, user_id=user_id)
    return LoadAutoSync(
        settings=AutoSyncPreference(enabled=preference.enabled, interval_minutes=preference.interval_minutes)
    )


@router.get("/next-run", response_model=NextRun)
async def next_run(user_id: CurrentUser, pool: ReadPoolDep) -> NextRun:
    """When the user's auto-sync fires next, from their cron schedule's slot (null while it is off)."""
    async with pool.connection() as conn:
        return NextRun(next_run=await preferences.next_run(conn, user_id=user_id))


@router.get("/intervals", response_model=Intervals)
async def intervals(user_id: CurrentUser, pool: ReadPoolDep) -> Intervals:
    """The intervals save-auto-sync accepts, from the database (the page's choices)."""
    async with pool.connection() as conn:
        return Intervals(intervals=await preferences.supported_intervals(conn))
