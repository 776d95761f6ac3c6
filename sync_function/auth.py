"""Who is calling: a user with a Supabase-compatible JWT, or pg_cron with the service key.

User JWTs are signed either with a shared HS256 secret (Supabase's legacy JWT secret) or with an
asymmetric key (RS256, ES256) published in a JWKS (Supabase's `/auth/v1/.well-known/jwks.json`);
either or both may be configured. Only a token whose `role` is `authenticated` acts as a user, as
in Supabase: `anon` and `service_role` tokens carry a `sub` too, but they are not a user's session.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import jwt
import structlog
from jwt import PyJWK, PyJWKSet

log = structlog.get_logger(__name__)

USER_ROLE = "authenticated"
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256"})
# A JWKS answer larger than this is not a key set.
MAX_JWKS_BYTES = 1024 * 1024


class Unauthorized(Exception):
    """No credentials, or credentials that do not verify. The message is safe to return."""


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


class JwksKeys:
    """The signing keys published at a JWKS URL, cached and selected by `kid`.

    PyJWKClient refetches on every unknown `kid` and fails once its cache lifespan is over and the URL
    is down; here a refetch happens at most once per `min_refresh_s` (an unknown `kid` cannot be used
    to hammer the identity provider), keys are refreshed after `max_age_s` to follow rotations, and a
    failed fetch keeps the keys already known, so an outage of the JWKS endpoint does not log users out.
    """

    def __init__(
        self,
        url: str,
        *,
        min_refresh_s: float = 60.0,
        max_age_s: float = 600.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.min_refresh_s = min_refresh_s
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self.fetches = 0  # how many times the URL was asked (tests and logs)

    def key(self, kid: str) -> PyJWK:
        """The key with this `kid`; raises Unauthorized when it is not (or no longer) published."""
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self.max_age_s
            if (kid not in self._keys or stale) and self._may_fetch(now):
                self._refresh(now)
            key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("token is signed with an unknown key")
        return key

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.min_refresh_s

    def _refresh(self, now: float) -> None:
        self._attempted_at = now
        self.fetches += 1
        try:
            keys = self._fetch()
        except Exception as exc:  # an outage: keep serving the keys we have
            log.warning("JWKS fetch failed; keeping cached keys", url=self.url, error=str(exc)[:200])
            return
        self._keys = keys
        self._fetched_at = now

    def _fetch(self) -> dict[str, PyJWK]:
        # The URL is an operator setting validated as http(s) (Config.jwt_jwks_url).
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - an operator's URL
            body = response.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError("JWKS answer too large")
        data: Any = json.loads(body)
        keys: dict[str, PyJWK] = {}
        # PyJWKSet skips keys it cannot use (unknown kty/alg) instead of failing the whole set.
        for key in PyJWKSet.from_dict(data).keys:
            if key.key_id and key.algorithm_name in ASYMMETRIC_ALGORITHMS:
                keys[key.key_id] = key
        return keys


class TokenVerifier:
    """Verifies user JWTs: HS256 with the secret, RS256/ES256 with the JWKS; `exp` and `sub` required."""

    def __init__(self, *, secret: str | None, jwks: JwksKeys | None, audience: str | None) -> None:
        if secret is None and jwks is None:
            raise ValueError("a JWT secret, a JWKS URL or both must be configured")
        self.secret = secret
        self.jwks = jwks
        self.audience = audience

    def user(self, token: str) -> uuid.UUID:
        """The user id of a valid `authenticated` token; raises Unauthorized otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        algorithm = header.get("alg")
        key: Any
        if algorithm == "HS256" and self.secret is not None:
            key = self.secret
        elif algorithm in ASYMMETRIC_ALGORITHMS and self.jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise Unauthorized("token has no key id (kid)")
            jwk = self.jwks.key(kid)
            if jwk.algorithm_name != algorithm:
                raise Unauthorized("invalid token")
            key = jwk.key
        else:
            # `alg: none`, HS256 without a secret, RS256 without a JWKS, and everything else.
            raise Unauthorized("invalid token")
        claims = self._decode(token, key, algorithm)
        if claims.get("role") != USER_ROLE:
            raise Unauthorized(f"token does not act as a user (role must be '{USER_ROLE}')")
        try:
            return uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise Unauthorized("token subject is not a user id") from None

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        options = {"require": ["exp", "sub"], "verify_aud": self.audience is not None}
        try:
            return jwt.decode(token, key, algorithms=[algorithm], audience=self.audience, options=options)  # type: ignore[arg-type]
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token has expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None


def user_from_jwt(token: str, *, secret: str, audience: str | None) -> uuid.UUID:
    """Verify an HS256 JWT (signature, exp, sub, role `authenticated`) and return its user id."""
    return TokenVerifier(secret=secret, jwks=None, audience=audience).user(token)


def service_key_index(token: str, *, service_keys: Sequence[str]) -> int | None:
    """Which of `service_keys` `token` is (0: the current key, 1: the previous one during a
    rotation), or None.

    Each comparison is constant-time and all of them run, so the timing tells neither which key
    matched nor how much of one did.
    """
    matches = [hmac.compare_digest(token.encode(), key.encode()) for key in service_keys]
    return matches.index(True) if any(matches) else None
