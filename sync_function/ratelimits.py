"""Per-user limits on the user-facing writes: one sliding-window counter in the database.

Each limited action (a manual import, a save of the auto-sync preference, adding an email account)
counts the user's hits within the window under the per-user lock, so concurrent requests cannot all
pass the count, and works the same across any number of API replicas. Call `hit` inside the
transaction that does the work (when the work fails and rolls back, the hit is not counted), or
in a transaction of its own when every attempt must count (an outbound login, failed or not).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Literal

from psycopg import Connection

from sync_function import runs
from sync_function.config import Config

Action = Literal["manual_import", "save_auto_sync", "add_email_account"]

PRUNE = """
DELETE FROM public.rate_limit_hits
WHERE user_id = %(user_id)s AND action = %(action)s AND at <= clock_timestamp() - make_interval(secs => %(window)s)
"""

COUNT = """
SELECT count(*), extract(epoch FROM min(at) + make_interval(secs => %(window)s) - clock_timestamp())
FROM public.rate_limit_hits WHERE user_id = %(user_id)s AND action = %(action)s
"""

RECORD = "INSERT INTO public.rate_limit_hits (user_id, action) VALUES (%(user_id)s, %(action)s)"


@dataclass(frozen=True)
class Limit:
    """At most `count` hits per `window_s` seconds for each user."""

    action: Action
    count: int
    window_s: int
    what: str  # in words, for the error: "manual imports"


class RateLimited(Exception):
    """The user used up `limit` for this window; `retry_after_s` says when the next hit is allowed."""

    def __init__(self, limit: Limit, *, retry_after_s: int) -> None:
        super().__init__(
            f"at most {limit.count} {limit.what} per {limit.window_s} s; try again in {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s
        self.limit = limit


def manual_import(config: Config) -> Limit:
    return Limit(
        "manual_import", config.manual_import_limit, config.manual_import_window_seconds, "manual imports"
    )


def save_auto_sync(config: Config) -> Limit:
    return Limit(
        "save_auto_sync", config.save_auto_sync_limit, config.save_auto_sync_window_seconds, "auto-sync saves"
    )


def add_email_account(config: Config) -> Limit:
    return Limit(
        "add_email_account",
        config.add_email_account_limit,
        config.add_email_account_window_seconds,
        "email accounts added (each is a login to an IMAP server)",
    )


def hit(conn: Connection, *, user_id: uuid.UUID, limit: Limit) -> None:
    """Count one `limit.action` for the user, or raise RateLimited. Must run inside a transaction."""
    params = {"user_id": user_id, "action": limit.action, "window": limit.window_s}
    runs.user_lock(conn, user_id)
    conn.execute(PRUNE, params)
    row = conn.execute(COUNT, params).fetchone()
    assert row is not None
    count, remaining = int(row[0]), row[1]
    if count >= limit.count:
        raise RateLimited(limit, retry_after_s=max(1, math.ceil(float(remaining or 0))))
    conn.execute(RECORD, params)
