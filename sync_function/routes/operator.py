"""What operators see (the page's operator view): service key only."""

from __future__ import annotations

from fastapi import APIRouter

from sync_function import operations
from sync_function.deps import PoolDep, ServiceCaller
from sync_function.schemas import OperatorOverview

router = APIRouter(prefix="/api/operator", tags=["operator"], dependencies=[ServiceCaller])


@router.get("/overview", response_model=OperatorOverview)
def overview(pool: PoolDep) -> OperatorOverview:
    """Enabled users by interval, failing users, queue depth, pg_cron's failed runs, lateness, recent runs."""
    with pool.connection() as conn:
        return OperatorOverview(**operations.overview(conn))
