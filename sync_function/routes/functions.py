"""Endpoints for pg_cron's trigger and for services: authenticated with the service key only.

What each may start is decided in sync_function.triggers; these routes map its answers to HTTP.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from sync_function import sync, triggers
from sync_function.deps import ConfigDep, PoolDep, ServiceCaller, ServiceKeyIndex
from sync_function.errors import ApiError
from sync_function.schemas import AutoSyncAccepted, AutoSyncSkipped, ImportCounts, ServiceKeyStatus, UserRef
from sync_function.users import UnknownUser

router = APIRouter(prefix="/functions/v1", tags=["functions"], dependencies=[ServiceCaller])


@router.post(
    "/auto-sync",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AutoSyncAccepted | AutoSyncSkipped,
    responses={200: {"model": AutoSyncSkipped, "description": "auto-sync is off for this user"}},
)
def auto_sync(body: UserRef, pool: PoolDep, response: Response) -> AutoSyncAccepted | AutoSyncSkipped:
    """Queue one import for the user, unless one is already queued or running. No import work here."""
    try:
        with pool.connection() as conn:
            queued = triggers.queue_cron_run(conn, user_id=body.user_id)
    except UnknownUser:
        raise ApiError(404, "no such user") from None
    if queued is None:
        response.status_code = status.HTTP_200_OK
        return AutoSyncSkipped(reason="auto-sync is disabled for this user")
    return AutoSyncAccepted(run_id=queued.run_id, queued=queued.created)


@router.get("/service-key", response_model=ServiceKeyStatus)
def service_key(index: ServiceKeyIndex, config: ConfigDep) -> ServiceKeyStatus:
    """Which key the caller presented, and whether a previous key is still accepted (`autosync doctor`
    sends the database's stored key here: the one pg_cron sends). Names no key."""
    return ServiceKeyStatus(
        key="current" if index == 0 else "previous",
        previous_configured=config.service_key_previous is not None,
    )


# A plain `def`: the import blocks on IMAP and Postgres, so FastAPI runs it in the threadpool.
@router.post("/import-emails", response_model=ImportCounts)
def import_emails(body: UserRef, pool: PoolDep, config: ConfigDep, request: Request) -> ImportCounts:
    """Import the user's mail now and return the counts (rate-limited per user)."""
    try:
        result = triggers.import_now(
            pool,
            config,
            user_id=body.user_id,
            ssl_context=getattr(request.app.state, "imap_ssl_context", None),
        )
    except UnknownUser:
        raise ApiError(404, "no such user") from None
    except triggers.AlreadyRunning as exc:
        raise ApiError(409, str(exc)) from None
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
