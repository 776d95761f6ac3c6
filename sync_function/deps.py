"""Request dependencies, as `Annotated` aliases so route signatures read like sentences.

They are `async def` because they do no I/O (or, for JWKS keys, only off the event loop): FastAPI
runs a plain `def` dependency in a worker thread, and under load each such hop (thread pool
hand-off, GIL hand-back) cost the event loop more than the work itself.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sync_function.auth import TokenVerifier, Unauthorized, bearer_token, service_key_index
from sync_function.config import Config


async def get_config(request: Request) -> Config:
    config: Config = request.app.state.config
    return config


async def get_pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


async def get_read_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.read_pool
    return pool


ConfigDep = Annotated[Config, Depends(get_config)]
PoolDep = Annotated[ConnectionPool, Depends(get_pool)]
# For `async def` routes that only read: no thread-pool hop per request.
ReadPoolDep = Annotated[AsyncConnectionPool, Depends(get_read_pool)]


async def current_user(request: Request, authorization: Annotated[str | None, Header()] = None) -> uuid.UUID:
    token = bearer_token(authorization)
    verifier: TokenVerifier = request.app.state.token_verifier
    if verifier.jwks is None:
        return verifier.user(token)  # HS256 only: tens of microseconds of CPU, no I/O
    # A JWKS key may have to be fetched over the network: never on the event loop.
    return await run_in_threadpool(verifier.user, token)


async def require_service(config: ConfigDep, authorization: Annotated[str | None, Header()] = None) -> int:
    """The index of the service key the caller presented (0 current, 1 previous); 401 for any other."""
    index = service_key_index(bearer_token(authorization), service_keys=config.service_keys())
    if index is None:
        raise Unauthorized("invalid service key")
    return index


CurrentUser = Annotated[uuid.UUID, Depends(current_user)]
ServiceCaller = Depends(require_service)
# The same check, when the route needs to know which key it was (FastAPI runs it once per request).
ServiceKeyIndex = Annotated[int, Depends(require_service)]
