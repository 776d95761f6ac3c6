"""The page: three static files from sync_function/web, served with headers that keep it to itself.

No template and no data in the HTML: the page calls the same JSON API as any client. The user's
token travels in the URL fragment, which browsers never send, so it reaches neither these routes
nor any log; `no-referrer` keeps the page's address out of other requests too.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from sync_function.errors import ApiError

router = APIRouter(include_in_schema=False)

# name -> media type: the only files served, so no path from the request reaches the file system.
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "accounts.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> Response:
    body = files("sync_function").joinpath("web", name).read_bytes()
    return Response(body, media_type=FILES[name], headers=HEADERS)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/app/")


@router.get("/app/")
def page() -> Response:
    return _file("index.html")


@router.get("/app/{name}")
def asset(name: str) -> Response:
    if name not in FILES or name == "index.html":
        raise ApiError(404, "not found")
    return _file(name)
