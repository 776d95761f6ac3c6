"""The user's sync history, and "sync now" (a manual run queued for a worker)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from sync_function import ratelimits, runs, triggers
from sync_function.deps import ConfigDep, CurrentUser, PoolDep
from sync_function.errors import ApiError
from sync_function.schemas import ErrorBody, History, Run, SyncQueued
from sync_function.users import UnknownUser

router = APIRouter(prefix="/api/sync", tags=["sync"])


@router.get("/history", response_model=History)
def sync_history(
    user_id: CurrentUser, pool: PoolDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> History:
    """The user's most recent runs, newest first."""
    with pool.connection() as conn:
        records = runs.history(conn, user_id=user_id, limit=limit)
    return History(runs=[Run(**vars(r)) for r in records])


@router.post(
    "/now",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SyncQueued,
    responses={409: {"model": ErrorBody, "description": "an import is already queued or running"}},
)
def sync_now(user_id: CurrentUser, pool: PoolDep, config: ConfigDep) -> SyncQueued:
    """Queue an import of the user's mail for a worker; follow it in the history (rate-limited per user)."""
    try:
        with pool.connection() as conn:
            run_id = triggers.queue_manual_run(
                conn,
                user_id=user_id,
                limit=ratelimits.manual_import(config),
            )
    except UnknownUser:
        raise ApiError(403, "the token's user does not exist") from None
    except triggers.AlreadyRunning as exc:
        raise ApiError(409, str(exc)) from None
    return SyncQueued(run_id=run_id)
