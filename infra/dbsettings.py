"""Configure a migrated database for the sync function (Pulumi's DatabaseSettings provider, the harness).

The function URL is a database setting (`ALTER DATABASE … SET`), so that every pg_cron session sees
it. The service key is a secret: it goes into the private store through
`autosync_private.set_service_key`, as a bind parameter so that it never appears in statement text.
"""

from __future__ import annotations

import psycopg


def configure(
    database_url: str, *, function_url: str, service_key: str, scheduling_mode: str | None = None
) -> None:
    """Point pg_cron's trigger at `function_url`, store `service_key`, and (when given) switch the
    scheduling mode ('per_user' or 'dispatcher'; a switch moves every user's cron job). Idempotent."""
    with psycopg.connect(database_url) as connection:
        connection.execute("SELECT autosync_private.set_sync_function_url(%s)", (function_url,))
        connection.execute("SELECT autosync_private.set_service_key(%s)", (service_key,), prepare=False)
        if scheduling_mode is not None and scheduling_mode != _mode(connection):
            connection.execute("SELECT public.set_auto_sync_mode(%s)", (scheduling_mode,))


def set_scheduling_mode(database_url: str, mode: str) -> None:
    """Switch to `mode` in one transaction (nothing happens when it is the current one)."""
    with psycopg.connect(database_url) as connection:
        if mode != _mode(connection):
            connection.execute("SELECT public.set_auto_sync_mode(%s)", (mode,))


def scheduling_mode(database_url: str) -> str:
    with psycopg.connect(database_url) as connection:
        return _mode(connection)


def _mode(connection: psycopg.Connection) -> str:
    row = connection.execute("SELECT public.auto_sync_mode()").fetchone()
    assert row is not None
    return str(row[0])


def reset(database_url: str) -> None:
    """Remove the function URL setting and the stored key, and go back to the default per-user
    scheduling (whose jobs, unlike the dispatcher's, need the URL and key to do anything). Idempotent."""
    with psycopg.connect(database_url) as connection:
        connection.execute("SELECT autosync_private.reset_sync_function_url()")
        connection.execute("SELECT autosync_private.clear_service_key()")
        if _mode(connection) != "per_user":
            connection.execute("SELECT public.set_auto_sync_mode('per_user')")


def function_url(database_url: str) -> str | None:
    """The function URL that new sessions (and so pg_cron runs) will see (the database setting)."""
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SELECT public.auto_sync_function_url()").fetchone()
    return None if row is None or row[0] is None else str(row[0])


def service_key_is_set(database_url: str) -> bool:
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SELECT public.auto_sync_service_key_is_set()").fetchone()
    return bool(row and row[0])
