"""Errors as JSON a person can act on: {"success": false, "error": "..."}; never a stack trace."""

from __future__ import annotations

import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from sync_function.auth import Unauthorized
from sync_function.ratelimits import RateLimited

log = structlog.get_logger(__name__)


class ApiError(Exception):
    def __init__(self, status_code: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers


def error_response(
    status_code: int, message: str, headers: dict[str, str] | None = None, **extra: object
) -> JSONResponse:
    return JSONResponse(
        {"success": False, "error": message, **extra}, status_code=status_code, headers=headers
    )


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for problem in exc.errors():
        location = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
        if problem.get("type") == "json_invalid":
            parts.append("request body is not valid JSON")
        else:
            parts.append(f"{location or 'body'}: {problem.get('msg')}")
    return "; ".join(parts) or "invalid request"


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's).

    Asked of the routes themselves, one method at a time, through the public `matches` API: included
    routers are routes too, and they answer for the routes inside them.
    """
    return [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.message, exc.headers)

    # Every per-user limit (sync_function.ratelimits) answers the same way, whichever route hit it.
    @app.exception_handler(RateLimited)
    async def _rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
        return error_response(429, str(exc), {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return error_response(401, str(exc), {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(exc.status_code, str(exc.detail), headers)

    @app.exception_handler(psycopg.OperationalError)
    async def _database_down(_: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("database unavailable", error=type(exc).__name__)
        return error_response(503, "the database is unavailable; try again shortly", {"Retry-After": "5"})

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(_: Request, exc: PoolTimeout) -> JSONResponse:
        log.warning("database unavailable", error="PoolTimeout")
        return error_response(503, "the database is unavailable; try again shortly", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return error_response(500, "internal error")
