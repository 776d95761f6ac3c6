"""User JWTs as the API accepts them: HS256 with the deployment's secret, role `authenticated`.

One place for the claims a user token carries, so the in-process service, the pytest plugin, the
demo link and the benchmarks cannot drift apart from what `sync_function.auth` checks.
"""

from __future__ import annotations

import time
import uuid

import jwt


def user_token(secret: str, user_id: uuid.UUID, *, expires_in: int, **claims: object) -> str:
    """A token for `user_id`, valid for `expires_in` seconds; `claims` add to or override the defaults
    (tests override `role` to show what the API refuses)."""
    payload = {"sub": str(user_id), "role": "authenticated", "exp": int(time.time()) + expires_in, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")
