"""Who is calling: a user with a Supabase-compatible JWT, or pg_cron with the service key."""

from __future__ import annotations

import hmac
import uuid

import jwt


class Unauthorized(Exception):
    """No credentials, or credentials that do not verify. The message is safe to return."""


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


def user_from_jwt(token: str, *, secret: str, audience: str | None) -> uuid.UUID:
    """Verify an HS256 JWT (signature, exp required) and return its `sub` as the user id.

    Only HS256 is accepted: `alg: none` and other algorithms are refused by PyJWT's allow-list.
    """
    options = {"require": ["exp", "sub"], "verify_aud": audience is not None}
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=audience, options=options)  # type: ignore[arg-type]
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token has expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("invalid token") from None
    try:
        return uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise Unauthorized("token subject is not a user id") from None


def is_service_key(token: str, *, service_key: str) -> bool:
    return hmac.compare_digest(token.encode(), service_key.encode())
