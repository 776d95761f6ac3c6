"""The user's sync history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from sync_function import runs
from sync_function.deps import CurrentUser, PoolDep
from sync_function.schemas import History, Run

router = APIRouter(prefix="/api/sync", tags=["sync"])


@router.get("/history", response_model=History)
def sync_history(
    user_id: CurrentUser, pool: PoolDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> History:
    """The user's most recent runs, newest first."""
    with pool.connection() as conn:
        records = runs.history(conn, user_id=user_id, limit=limit)
    return History(runs=[Run(**vars(r)) for r in records])
