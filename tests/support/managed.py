"""A managed Postgres as Supabase, RDS and Cloud SQL give one: a non-superuser owner, extensions made by an admin."""

from __future__ import annotations

from urllib.parse import quote

import psycopg

from infra.containers import PostgresConfig

OWNER = "autosync_owner"
OWNER_PASSWORD = "owner-password-for-tests"  # noqa: S105 - a throwaway test container's role

# What the README tells an administrator to run.
ADMIN_SETUP = [
    f"CREATE ROLE {OWNER} LOGIN PASSWORD '{OWNER_PASSWORD}' CREATEROLE BYPASSRLS",
    "CREATE EXTENSION IF NOT EXISTS pg_cron",
    "CREATE SCHEMA IF NOT EXISTS extensions",
    "CREATE EXTENSION IF NOT EXISTS http WITH SCHEMA extensions",
    f"GRANT USAGE ON SCHEMA cron TO {OWNER}",
    f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA cron TO {OWNER}",
    f"GRANT SELECT, DELETE ON ALL TABLES IN SCHEMA cron TO {OWNER}",
    f"GRANT USAGE, CREATE ON SCHEMA extensions TO {OWNER}",
    # Storing the function URL is ALTER DATABASE ... SET of a custom parameter (PostgreSQL 15+).
    f"GRANT SET ON PARAMETER app.settings.sync_function_url TO {OWNER}",
]


def owner_url(config: PostgresConfig) -> str:
    return f"postgresql://{OWNER}:{quote(OWNER_PASSWORD)}@{config.host}:{config.port}/{config.database}"


def prepare(config: PostgresConfig, setup: list[str] | None = None) -> str:
    """Run the administrator's setup as the superuser; the owner's URL, for everything after."""
    with psycopg.connect(config.url, autocommit=True) as conn:
        for statement in ADMIN_SETUP if setup is None else setup:
            conn.execute(statement)  # type: ignore[arg-type]
        conn.execute(f"ALTER DATABASE {config.database} OWNER TO {OWNER}")  # type: ignore[arg-type]
        conn.execute(f"ALTER SCHEMA public OWNER TO {OWNER}")  # type: ignore[arg-type]
    return owner_url(config)
