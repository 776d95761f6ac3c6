"""The users the service acts for: rows of auth.users, which the service only reads."""

from __future__ import annotations

import uuid

from psycopg import Connection

EXISTS = "SELECT 1 FROM auth.users WHERE id = %(user_id)s"


class UnknownUser(LookupError):
    """No such user in auth.users: deleted since, or a token or trigger meant for another database."""

    def __init__(self, user_id: uuid.UUID) -> None:
        super().__init__(f"no such user: {user_id}")
        self.user_id = user_id


def require_user(conn: Connection, *, user_id: uuid.UUID) -> None:
    """Raise UnknownUser unless `user_id` is a user."""
    if conn.execute(EXISTS, {"user_id": user_id}).fetchone() is None:
        raise UnknownUser(user_id)
