"""A database that held the seed's settings: the service key GUC moves to the private store, the URL is kept."""

from __future__ import annotations

import secrets

import psycopg
import pytest

from infra import migrations
from infra.containers import PostgresConfig

# The revision that adopts the seed's settings, and the one before it: the test re-runs exactly it.
BEFORE_SEED_SETTINGS = "0023"

pytestmark = pytest.mark.docker


def database_settings(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            """SELECT coalesce(s.setconfig, '{}') FROM pg_db_role_setting AS s
               JOIN pg_database AS d ON d.oid = s.setdatabase
               WHERE d.datname = current_database() AND s.setrole = 0"""
        ).fetchone()
    return list(row[0]) if row else []


def test_the_seed_key_guc_is_moved_and_removed(fresh_postgres: PostgresConfig) -> None:
    url = fresh_postgres.url
    key = secrets.token_urlsafe(48)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {fresh_postgres.database} SET app.settings.service_role_key = '{key}'")  # type: ignore[arg-type]
        conn.execute(
            f"ALTER DATABASE {fresh_postgres.database} SET app.settings.supabase_url = 'https://seed.example.com'"  # type: ignore[arg-type]
        )
    assert migrations.upgrade(url) == migrations.head()
    settings = database_settings(url)
    assert not any(s.startswith("app.settings.service_role_key=") for s in settings), settings
    assert "app.settings.sync_function_url=https://seed.example.com" in settings
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT key FROM autosync_private.service_key").fetchone() == (key,)
        assert conn.execute("SELECT public.auto_sync_service_key_is_set()").fetchone() == (True,)
        # A new session sees no key in any GUC.
        assert conn.execute("SELECT current_setting('app.settings.service_role_key', true)").fetchone() in (
            (None,),
            ("",),
        )


def test_a_stored_key_wins_and_a_fresh_database_is_untouched(fresh_postgres: PostgresConfig) -> None:
    url = fresh_postgres.url
    assert migrations.upgrade(url) == migrations.head()
    assert not any(s.startswith("app.settings.") for s in database_settings(url))
    stored = secrets.token_urlsafe(48)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT autosync_private.set_service_key(%s)", (stored,))
    # Re-running the move (down one step, up again) with a GUC present keeps the stored key, drops the GUC.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {fresh_postgres.database} SET app.settings.service_role_key = 'x'")  # type: ignore[arg-type]
    assert migrations.downgrade(url, BEFORE_SEED_SETTINGS) == BEFORE_SEED_SETTINGS
    assert migrations.upgrade(url) == migrations.head()
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT key FROM autosync_private.service_key").fetchone() == (stored,)
    assert not any(s.startswith("app.settings.service_role_key=") for s in database_settings(url))
