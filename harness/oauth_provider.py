"""A real OAuth2 provider on loopback for tests: a token endpoint and an RFC 7662 introspection endpoint.

It issues access tokens for refresh tokens and for authorization codes (with PKCE), lets a test
expire access tokens, revoke refresh tokens (the next refresh answers `invalid_grant`), go down
(503) or answer garbage. Dovecot checks bearer tokens against its introspection endpoint.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs

Mode = Literal["normal", "down", "garbage"]


@dataclass
class _Code:
    user: str
    challenge: str
    redirect_uri: str


@dataclass
class FakeProvider:
    """State of the provider; change it from the test, the server thread reads it under the lock."""

    url: str = ""
    client_id: str = "autosync-test-client"
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    expires_in: int = 3600
    mode: Mode = "normal"
    # Rotate the refresh token at each refresh, as Microsoft does.
    rotate: bool = False
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> user
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (user, expires)
    codes: dict[str, _Code] = field(default_factory=dict)
    token_requests: int = 0
    introspections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.url}/introspect"

    def grant(self, user: str) -> str:
        """A refresh token for `user`, as the consent screen would have obtained."""
        token = "rt-" + secrets.token_urlsafe(24)
        with self.lock:
            self.refresh_tokens[token] = user
        return token

    def authorization_code(self, user: str, *, code_verifier: str, redirect_uri: str) -> str:
        """A one-time code for `user`, bound to the S256 challenge of `code_verifier`."""
        code = "code-" + secrets.token_urlsafe(16)
        digest = hashlib.sha256(code_verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        with self.lock:
            self.codes[code] = _Code(user, challenge, redirect_uri)
        return code

    def access_token(self, user: str, *, expires_in: float | None = None) -> str:
        token = "at-" + secrets.token_urlsafe(24)
        with self.lock:
            self.access_tokens[token] = (user, time.time() + (expires_in or self.expires_in))
        return token

    def revoke(self, refresh_token: str) -> None:
        """Consent revoked: the refresh token and every access token of its user stop working."""
        with self.lock:
            user = self.refresh_tokens.pop(refresh_token, None)
            self.access_tokens = {t: v for t, v in self.access_tokens.items() if v[0] != user}

    def expire_access_tokens(self) -> None:
        with self.lock:
            self.access_tokens = {t: (user, 0.0) for t, (user, _) in self.access_tokens.items()}

    # -- what the endpoints answer --------------------------------------------------------------

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client"}
        grant = form.get("grant_type")
        if grant == "refresh_token":
            user = self.refresh_tokens.get(form.get("refresh_token", ""))
            if user is None:
                return 400, {"error": "invalid_grant", "error_description": "token revoked or unknown"}
            rotated = None
            if self.rotate:
                rotated = "rt-" + secrets.token_urlsafe(24)
                del self.refresh_tokens[form["refresh_token"]]
                self.refresh_tokens[rotated] = user
            return 200, self._issue(user, rotated)
        if grant == "authorization_code":
            code = self.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if code is None or code.challenge != challenge or code.redirect_uri != form.get("redirect_uri"):
                return 400, {"error": "invalid_grant", "error_description": "bad code, verifier or redirect"}
            refresh_token = "rt-" + secrets.token_urlsafe(24)
            self.refresh_tokens[refresh_token] = code.user
            return 200, self._issue(code.user, refresh_token)
        return 400, {"error": "unsupported_grant_type"}

    def _issue(self, user: str, refresh_token: str | None) -> dict[str, object]:
        token = "at-" + secrets.token_urlsafe(24)
        self.access_tokens[token] = (user, time.time() + self.expires_in)
        body: dict[str, object] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        return body

    def _introspect(self, form: dict[str, str]) -> dict[str, object]:
        found = self.access_tokens.get(form.get("token", ""))
        if found is None or found[1] <= time.time():
            return {"active": False}
        return {"active": "true", "username": found[0]}


def _handler(provider: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            form = {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}
            with provider.lock:
                mode = provider.mode
                if self.path == "/introspect":
                    provider.introspections += 1
                    status, body = 200, provider._introspect(form)
                elif self.path == "/token":
                    provider.token_requests += 1
                    status, body = (200, {}) if mode != "normal" else provider._token(form)
                else:
                    status, body = 404, {"error": "not_found"}
            if self.path == "/token" and mode == "down":
                self._send(503, b"<html>service unavailable</html>", "text/html")
            elif self.path == "/token" and mode == "garbage":
                self._send(200, b"<html>this is not a token</html>", "text/html")
            else:
                self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def running_provider() -> Iterator[FakeProvider]:
    """The provider on a free loopback port until the block ends."""
    provider = FakeProvider()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(provider))
    server.daemon_threads = True
    provider.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
