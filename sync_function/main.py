"""Build the ASGI app. Nothing happens at import time: configuration and pools come from create_app."""

from __future__ import annotations

import gc
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sync_function import errors, metrics
from sync_function.auth import JwksKeys, TokenVerifier
from sync_function.config import Config
from sync_function.cors import UserFacingCors, parse_origins
from sync_function.db import open_async_pool, open_pool
from sync_function.routes import accounts, auto_sync, functions, health, history, operator, page
from sync_function.schemas import ErrorBody


def token_verifier(config: Config) -> TokenVerifier:
    """How user JWTs are checked: the HS256 secret, the JWKS, or both (one key cache per app)."""
    jwks = None
    if config.jwt_jwks_url is not None:
        jwks = JwksKeys(
            str(config.jwt_jwks_url),
            min_refresh_s=config.jwt_jwks_min_refresh_seconds,
            max_age_s=config.jwt_jwks_max_age_seconds,
        )
    secret = config.jwt_secret.get_secret_value() if config.jwt_secret is not None else None
    return TokenVerifier(secret=secret, jwks=jwks, audience=config.jwt_audience)


def app_from_environment() -> FastAPI:
    """The app of one `autosync serve --processes N` process: each builds its own from the environment.

    uvicorn starts every process afresh and imports this factory by name; nothing is built at import.
    """
    from sync_function import logs
    from sync_function.config import load_config

    config = load_config()
    logs.configure(config.log_level)
    return app_for_serving(config)


def app_for_serving(config: Config) -> FastAPI:
    """The app of a server process (`autosync serve`), with the process's startup heap frozen.

    What exists once the app is built (modules, routes, models: ~100,000 objects) lives as long as
    the process. Left to the collector, every full collection walked all of it while every request
    in flight waited: 67-103 ms, 3-5 times in a 20-second load run, most of the API's p99
    (BENCHMARKS.md, "Each server process freezes its startup heap"). Frozen, a full collection
    walks only what requests leave.
    Tests that run several apps in one process build them with `create_app`, which freezes nothing.
    """
    app = create_app(config)
    gc.freeze()
    return app


def create_app(config: Config, *, imap_ssl_context: ssl.SSLContext | None = None) -> FastAPI:
    """The service for `config`. `imap_ssl_context` overrides IMAP certificate checks (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = open_pool(config, name="autosync-api", max_size=config.db_pool_max)
        # The page's reads (load-auto-sync, next-run, intervals) run on the event loop; everything
        # else is a sync route in the thread pool. Each pool holds up to db_pool_max connections.
        read_pool = await open_async_pool(config, name="autosync-api-reads", max_size=config.db_pool_max)
        app.state.pool = pool
        app.state.read_pool = read_pool
        app.state.token_verifier = token_verifier(config)
        app.state.metrics_registry = metrics.api_registry(pool)
        try:
            yield
        finally:
            await read_pool.close()
            pool.close()

    app = FastAPI(
        title="autosync",
        version="0.1.0",
        description="Server-side periodic email import: auto-sync preferences, accounts, sync history, and the "
        "endpoints pg_cron's trigger calls.",
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.imap_ssl_context = imap_ssl_context
    errors.install(app)
    # Every error has the same JSON body; say so in the published document.
    error = {"model": ErrorBody}
    documented = {400: error, 401: error, 403: error, 404: error, 422: error, 429: error, 503: error}
    for module in (auto_sync, accounts, history, functions, operator):
        app.include_router(module.router, responses=documented)  # type: ignore[arg-type]
    app.include_router(health.router)
    app.include_router(page.router)
    origins = parse_origins(config.cors_allowed_origins) if config.cors_allowed_origins else ()
    if origins:
        app.add_middleware(UserFacingCors, origins=origins)
    return app
