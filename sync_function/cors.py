"""CORS for browser clients on another origin, for the user-facing endpoints only.

A product's settings page may be served from another origin than this service; its calls to
`/api/*` then need CORS. The service-key endpoints (`/functions/v1/*`, called by pg_cron) and the
operational ones are never offered to browsers: their preflights get no CORS headers. Origins are an
explicit allow-list (no `*`), and credentials mode stays off: the API authenticates with a bearer
token in a header, not with cookies.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

USER_FACING_PREFIX = "/api/"
ALLOWED_METHODS = ("GET", "POST", "DELETE")
ALLOWED_HEADERS = ("Authorization", "Content-Type")
PREFLIGHT_MAX_AGE_S = 600


def parse_origins(value: str) -> tuple[str, ...]:
    """`https://app.example.com, http://localhost:3000` → a tuple; raises ValueError for `*` or a non-origin."""
    origins = []
    for raw in value.split(","):
        origin = raw.strip().rstrip("/")
        if not origin:
            continue
        if origin == "*" or "*" in origin:
            raise ValueError("must list origins explicitly: '*' is not allowed")
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest or "@" in rest:
            raise ValueError(
                f"{raw.strip()!r} is not an origin (scheme://host[:port], e.g. https://app.example.com)"
            )
        origins.append(origin.lower())
    return tuple(origins)


class UserFacingCors:
    """Applies CORSMiddleware to `/api/*` and leaves every other path untouched."""

    def __init__(self, app: ASGIApp, *, origins: tuple[str, ...]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=list(ALLOWED_METHODS),
            allow_headers=list(ALLOWED_HEADERS),
            allow_credentials=False,
            max_age=PREFLIGHT_MAX_AGE_S,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(USER_FACING_PREFIX):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
