"""A database as the seed's Supabase setup left it, built before any of this project's revisions ran.

The seed's own migration is not in this repository; this is a reconstruction from DESIGN.md and the
issue that describes it. Assumptions, each a plausible variant the adoption must survive:

- Supabase's side exists first: the roles `anon`, `authenticated`, `service_role`; the `auth` schema
  with `auth.users` (Supabase's wider column set) and `auth.uid()` reading `request.jwt.claim.sub`;
  `pg_cron`, and `http` in the `extensions` schema. Supabase grants everything in `public` to the three
  API roles (default privileges of the owner): the seed's tables and functions carry those grants, and
  so would every table and function a revision creates, but for what the migrations do about it.
- `public.user_settings` holds each user's choice. Variant "supabase": a surrogate `id` key, `user_id`
  UNIQUE, the columns named `auto_sync_enabled` and `auto_sync_interval_minutes`, all nullable with
  defaults, and policies that let users read, insert and update their own row. Variant "plain": `user_id`
  as the key, `enabled` and a smallint `interval_minutes`, no timestamps.
- `public.auto_sync_jobs`: one row per scheduled user. "supabase": `id`, `user_id` UNIQUE, `job_id`,
  `job_name` NOT NULL, `interval_minutes`, `created_at`. "plain": `user_id` as the key, an integer
  `jobid`, `job_name` NOT NULL, `interval_minutes`, no timestamps.
- `auth.users` as the seed found it: readable by `service_role` or not (here: not; doctor names the grant).
- Four functions with the argument types this project kept, but the seed's parameter names (`p_…`)
  and return types (`void`): `schedule_auto_sync(uuid, integer)` creates the pg_cron job
  `auto-sync-<uuid>` with `*/N * * * *` below an hour and `0 */(N/60) * * *` from an hour (integer
  division: 90 minutes became hourly, since pg_cron refuses `*/90`), running
  `SELECT trigger_auto_sync('<uuid>')`; `update_auto_sync_schedule` re-schedules; `unschedule_auto_sync`
  removes job and row; `trigger_auto_sync(uuid)` POSTs with the http extension to
  `current_setting('app.settings.supabase_url') || '/functions/v1/auto-sync'` with
  `app.settings.service_role_key` as bearer token, both database-level GUCs.
- The seed's frontend saved a preference as a row in user_settings plus a call of schedule_auto_sync
  (on) or unschedule_auto_sync (off). One user is left in a state the seed's code could reach when a
  save failed half-way: auto-sync off, but the job still there.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

SUPABASE_SIDE = [
    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN "
    "CREATE ROLE anon NOLOGIN NOINHERIT; END IF; END $$",
    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN "
    "CREATE ROLE authenticated NOLOGIN NOINHERIT; END IF; END $$",
    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN "
    "CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS; END IF; END $$",
    "CREATE SCHEMA auth",
    "GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role",
    """CREATE TABLE auth.users (
        instance_id uuid,
        id uuid PRIMARY KEY,
        aud varchar(255),
        role varchar(255),
        email varchar(255) UNIQUE,
        encrypted_password varchar(255),
        raw_user_meta_data jsonb,
        created_at timestamptz DEFAULT now(),
        updated_at timestamptz DEFAULT now()
    )""",
    """CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
        SELECT coalesce(
            nullif(current_setting('request.jwt.claim.sub', true), ''),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        )::uuid
    $$""",
    "GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role",
    # What every Supabase project has: whatever its owner creates in public, the API roles may use.
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role",
    "CREATE EXTENSION IF NOT EXISTS pg_cron",
    "CREATE SCHEMA IF NOT EXISTS extensions",
    "CREATE EXTENSION IF NOT EXISTS http WITH SCHEMA extensions",
]

TABLES = {
    "supabase": [
        """CREATE TABLE public.user_settings (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id uuid NOT NULL UNIQUE REFERENCES auth.users (id) ON DELETE CASCADE,
            auto_sync_enabled boolean DEFAULT false,
            auto_sync_interval_minutes integer DEFAULT 15,
            created_at timestamptz DEFAULT now(),
            updated_at timestamptz DEFAULT now()
        )""",
        """CREATE TABLE public.auto_sync_jobs (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id uuid NOT NULL UNIQUE REFERENCES auth.users (id) ON DELETE CASCADE,
            job_id bigint NOT NULL,
            job_name text NOT NULL,
            interval_minutes integer NOT NULL,
            created_at timestamptz DEFAULT now()
        )""",
    ],
    "plain": [
        """CREATE TABLE public.user_settings (
            user_id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
            enabled boolean NOT NULL DEFAULT false,
            interval_minutes smallint DEFAULT 15
        )""",
        """CREATE TABLE public.auto_sync_jobs (
            user_id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
            jobid integer,
            job_name text NOT NULL,
            interval_minutes integer
        )""",
    ],
}

# Column names per variant, for the seed's functions and for reading the seed's rows back.
COLUMNS = {
    "supabase": {"enabled": "auto_sync_enabled", "interval": "auto_sync_interval_minutes", "job": "job_id"},
    "plain": {"enabled": "enabled", "interval": "interval_minutes", "job": "jobid"},
}

# This project's name for each seed column that adoption renames.
RENAMED = {
    "auto_sync_enabled": "enabled",
    "auto_sync_interval_minutes": "interval_minutes",
    "job_id": "cron_job_id",
    "jobid": "cron_job_id",
}

POLICIES = [
    "ALTER TABLE public.user_settings ENABLE ROW LEVEL SECURITY",
    """CREATE POLICY "Users can view own settings" ON public.user_settings
        FOR SELECT USING (auth.uid() = user_id)""",
    """CREATE POLICY "Users can insert own settings" ON public.user_settings
        FOR INSERT WITH CHECK (auth.uid() = user_id)""",
    """CREATE POLICY "Users can update own settings" ON public.user_settings
        FOR UPDATE USING (auth.uid() = user_id)""",
    "ALTER TABLE public.auto_sync_jobs ENABLE ROW LEVEL SECURITY",
    """CREATE POLICY "Users can view own jobs" ON public.auto_sync_jobs
        FOR SELECT USING (auth.uid() = user_id)""",
    "GRANT ALL ON public.user_settings, public.auto_sync_jobs TO anon, authenticated, service_role",
]

FUNCTIONS = [
    """CREATE OR REPLACE FUNCTION public.trigger_auto_sync(p_user_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER AS $$
    DECLARE
        supabase_url text := current_setting('app.settings.supabase_url', true);
        service_key text := current_setting('app.settings.service_role_key', true);
    BEGIN
        PERFORM extensions.http((
            'POST', supabase_url || '/functions/v1/auto-sync',
            ARRAY[extensions.http_header('Authorization', 'Bearer ' || service_key)],
            'application/json', json_build_object('user_id', p_user_id)::text
        )::extensions.http_request);
    END
    $$""",
    """CREATE OR REPLACE FUNCTION public.schedule_auto_sync(p_user_id uuid, p_interval_minutes integer)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
    DECLARE
        v_job_name text := 'auto-sync-' || p_user_id;
        v_schedule text;
        v_job_id bigint;
    BEGIN
        IF p_interval_minutes < 60 THEN
            v_schedule := '*/' || p_interval_minutes || ' * * * *';
        ELSE
            v_schedule := '0 */' || (p_interval_minutes / 60) || ' * * *';
        END IF;
        v_job_id := cron.schedule(v_job_name, v_schedule, format('SELECT trigger_auto_sync(%L)', p_user_id));
        INSERT INTO public.auto_sync_jobs (user_id, {job}, job_name, interval_minutes)
        VALUES (p_user_id, v_job_id, v_job_name, p_interval_minutes)
        ON CONFLICT (user_id) DO UPDATE
            SET {job} = EXCLUDED.{job}, job_name = EXCLUDED.job_name, interval_minutes = EXCLUDED.interval_minutes;
    END
    $$""",
    """CREATE OR REPLACE FUNCTION public.unschedule_auto_sync(p_user_id uuid)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM cron.job WHERE jobname = 'auto-sync-' || p_user_id) THEN
            PERFORM cron.unschedule('auto-sync-' || p_user_id);
        END IF;
        DELETE FROM public.auto_sync_jobs WHERE user_id = p_user_id;
    END
    $$""",
    """CREATE OR REPLACE FUNCTION public.update_auto_sync_schedule(p_user_id uuid, p_interval_minutes integer)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
    BEGIN
        PERFORM public.unschedule_auto_sync(p_user_id);
        PERFORM public.schedule_auto_sync(p_user_id, p_interval_minutes);
    END
    $$""",
    "GRANT EXECUTE ON FUNCTION public.schedule_auto_sync(uuid, integer), "
    "public.update_auto_sync_schedule(uuid, integer), public.unschedule_auto_sync(uuid), "
    "public.trigger_auto_sync(uuid) TO anon, authenticated, service_role",
]

SIGNATURES = (
    "public.trigger_auto_sync(uuid)",
    "public.schedule_auto_sync(uuid, integer)",
    "public.update_auto_sync_schedule(uuid, integer)",
    "public.unschedule_auto_sync(uuid)",
)

# (enabled, interval) per user, as users of the seed chose them.
USERS = [
    (True, 5),
    (True, 15),
    (True, 45),  # fired at :00 and :45
    (True, 90),  # hourly: 0 */1 * * *
    (True, 60),
    (True, 120),
    (False, 30),
    (False, 45),
]
# Auto-sync off in user_settings, but a job left behind: the seed saved the row, then failed.
STALE = (False, 15)


@dataclass(frozen=True)
class SeedUser:
    enabled: bool
    interval: int
    job_id: int | None
    schedule: str | None


@dataclass
class SeedInstallation:
    variant: str
    url: str
    service_key: str
    users: dict[uuid.UUID, SeedUser] = field(default_factory=dict)
    table_oids: dict[str, int] = field(default_factory=dict)
    # Every row of the seed's two tables as JSON, by user: what adoption must keep.
    rows: dict[str, dict[uuid.UUID, dict[str, Any]]] = field(default_factory=dict)
    function_url: str = "https://seed-project.supabase.co"


def build_seed(url: str, database: str, *, variant: str = "supabase") -> SeedInstallation:
    """Apply Supabase's side and the seed's migration, then save every user's choice the seed's way."""
    columns = COLUMNS[variant]
    seed = SeedInstallation(variant=variant, url=url, service_key=secrets.token_urlsafe(48))
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in SUPABASE_SIDE + TABLES[variant] + POLICIES:
            conn.execute(statement)  # type: ignore[arg-type]
        for statement in FUNCTIONS:
            conn.execute(statement.replace("{job}", columns["job"]))  # type: ignore[arg-type]
        for name, value in (
            ("app.settings.supabase_url", seed.function_url),
            ("app.settings.service_role_key", seed.service_key),
        ):
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(database), sql.Identifier(*name.split(".")), sql.Literal(value)
                )
            )
        for enabled, interval in [*USERS, STALE]:
            user = uuid.uuid4()
            conn.execute(
                "INSERT INTO auth.users (id, aud, role, email) VALUES (%s, 'authenticated', 'authenticated', %s)",
                (user, f"{user}@seed.example"),
            )
            conn.execute(
                sql.SQL("INSERT INTO public.user_settings (user_id, {}, {}) VALUES (%s, %s, %s)").format(
                    sql.Identifier(columns["enabled"]), sql.Identifier(columns["interval"])
                ),
                (user, enabled, interval),
            )
            if enabled or (enabled, interval) == STALE:
                conn.execute("SELECT public.schedule_auto_sync(%s, %s)", (user, interval))
            job = conn.execute(
                "SELECT jobid, schedule FROM cron.job WHERE jobname = %s", (f"auto-sync-{user}",)
            ).fetchone()
            seed.users[user] = SeedUser(enabled, interval, job[0] if job else None, job[1] if job else None)
        for table in ("user_settings", "auto_sync_jobs"):
            row = conn.execute("SELECT %s::regclass::oid", (f"public.{table}",)).fetchone()
            assert row is not None
            seed.table_oids[table] = int(row[0])
            seed.rows[table] = dict(
                conn.execute(
                    sql.SQL("SELECT t.user_id, to_jsonb(t) FROM {} AS t").format(
                        sql.Identifier("public", table)
                    )
                ).fetchall()
            )
    return seed


def seed_rows(conn: psycopg.Connection, variant: str) -> dict[uuid.UUID, tuple[bool, int]]:
    """user_settings as the seed's columns name them: (enabled, interval) per user."""
    columns = COLUMNS[variant]
    rows = conn.execute(
        sql.SQL("SELECT user_id, {}, {} FROM public.user_settings").format(
            sql.Identifier(columns["enabled"]), sql.Identifier(columns["interval"])
        )
    ).fetchall()
    return {user: (enabled, interval) for user, enabled, interval in rows}
