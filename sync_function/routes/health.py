"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sync_function import metrics as process_metrics
from sync_function.db import EXPECTED_REVISION, schema_revision
from sync_function.deps import PoolDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (says nothing about its dependencies)."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(pool: PoolDep) -> JSONResponse:
    """Ready when the database answers and its schema is at the revision this code expects."""
    try:
        with pool.connection(timeout=2.0) as conn:
            revision = schema_revision(conn)
    except Exception:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    if revision != EXPECTED_REVISION:
        return JSONResponse(
            {
                "status": "unavailable",
                "database": "ok",
                "schema": f"at {revision or 'no revision'}, expected {EXPECTED_REVISION}: run alembic upgrade head",
            },
            status_code=503,
        )
    return JSONResponse({"status": "ok", "database": "ok", "schema": revision})


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """This process's counters (manual imports run here) and the database-wide gauges."""
    body = generate_latest(process_metrics.REGISTRY) + generate_latest(request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
