"""Endpoints for pg_cron's trigger and for services: authenticated with the service key only."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from sync_function import runs, sync
from sync_function.deps import ConfigDep, PoolDep, ServiceCaller
from sync_function.errors import ApiError
from sync_function.schemas import AutoSyncAccepted, AutoSyncSkipped, ImportCounts, UserRef

router = APIRouter(prefix="/functions/v1", tags=["functions"], dependencies=[ServiceCaller])


@router.post(
    "/auto-sync",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AutoSyncAccepted | AutoSyncSkipped,
    responses={200: {"model": AutoSyncSkipped, "description": "auto-sync is off for this user"}},
)
def auto_sync(body: UserRef, pool: PoolDep, response: Response) -> AutoSyncAccepted | AutoSyncSkipped:
    """Queue one import for the user, unless one is already queued or running. No import work here."""
    with pool.connection() as conn, conn.transaction():
        row = conn.execute(
            """SELECT u.id IS NOT NULL, coalesce(s.enabled, false)
               FROM (SELECT %(user_id)s::uuid AS id) AS q
               LEFT JOIN auth.users AS u ON u.id = q.id
               LEFT JOIN public.user_settings AS s ON s.user_id = q.id""",
            {"user_id": body.user_id},
        ).fetchone()
        assert row is not None
        exists, enabled = row
        if not exists:
            raise ApiError(404, "no such user")
        if not enabled:
            response.status_code = status.HTTP_200_OK
            return AutoSyncSkipped(reason="auto-sync is disabled for this user")
        request = runs.request_run(conn, user_id=body.user_id, trigger="cron", enqueue=True)
    return AutoSyncAccepted(run_id=request.run_id, queued=request.created)


@router.post("/import-emails", response_model=ImportCounts)
async def import_emails(body: UserRef, pool: PoolDep, config: ConfigDep, request: Request) -> ImportCounts:
    """Import the user's mail now and return the counts (rate-limited per user)."""
    run = await run_in_threadpool(_claim_manual_run, pool, config, body)
    try:
        result = await run_in_threadpool(
            sync.run_attempt,
            pool,
            config,
            run_id=run,
            attempt=1,
            final=True,
            ssl_context=getattr(request.app.state, "imap_ssl_context", None),
        )
    except sync.ImportFailed as exc:
        raise ApiError(502, f"import failed: {exc}") from None
    return ImportCounts(
        run_id=result.run_id,
        accounts=result.accounts,
        fetched=result.fetched,
        imported=result.imported,
        skipped=result.skipped,
        duplicates=result.duplicates,
        bytes=result.bytes,
        seconds=round(result.seconds, 3),
    )


def _claim_manual_run(pool: PoolDep, config: ConfigDep, body: UserRef):  # type: ignore[no-untyped-def]
    with pool.connection() as conn, conn.transaction():
        if conn.execute("SELECT 1 FROM auth.users WHERE id = %s", (body.user_id,)).fetchone() is None:
            raise ApiError(404, "no such user")
        runs.user_lock(conn, body.user_id)
        count, oldest = runs.recent_manual_runs(
            conn, user_id=body.user_id, window_s=config.manual_import_window_seconds
        )
        if count >= config.manual_import_limit:
            assert oldest is not None
            elapsed = (datetime.now(UTC) - oldest).total_seconds()
            retry_after = max(1, math.ceil(config.manual_import_window_seconds - elapsed))
            raise ApiError(
                429,
                f"at most {config.manual_import_limit} manual imports per "
                f"{config.manual_import_window_seconds} s; try again in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )
        claimed = runs.request_run(conn, user_id=body.user_id, trigger="manual", enqueue=False)
        if not claimed.created:
            raise ApiError(
                409, f"an import for this user is already queued or running (run {claimed.run_id})"
            )
        return claimed.run_id
