"""Helpers for database tests: users, roles as PostgREST sets them, and catalog snapshots."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


def new_user(conn: psycopg.Connection) -> uuid.UUID:
    user_id = uuid.uuid4()
    conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, %s)", (user_id, f"{user_id}@example.test"))
    return user_id


def delete_users(conn: psycopg.Connection, user_ids: list[uuid.UUID]) -> None:
    conn.execute("DELETE FROM auth.users WHERE id = ANY(%s)", (user_ids,))


@contextmanager
def as_role(conn: psycopg.Connection, role: str, *, sub: uuid.UUID | None = None) -> Iterator[None]:
    """Act as `role` the way PostgREST does: SET ROLE plus the JWT claims setting."""
    claims = json.dumps({"sub": str(sub), "role": role}) if sub else ""
    conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (claims,))
    conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(role)))
    try:
        yield
    finally:
        conn.execute("RESET ROLE")
        conn.execute("SELECT set_config('request.jwt.claims', '', false)")


def cron_jobs(conn: psycopg.Connection) -> dict[str, tuple[int, str, str, bool]]:
    """Our cron jobs by name: (jobid, schedule, command, active)."""
    rows = conn.execute(
        "SELECT jobname, jobid, schedule, command, active FROM cron.job WHERE jobname LIKE 'auto-sync-%'"
    ).fetchall()
    return {name: (jobid, schedule, command, active) for name, jobid, schedule, command, active in rows}


def job_rows(conn: psycopg.Connection) -> dict[uuid.UUID, tuple[int, int]]:
    """auto_sync_jobs by user: (cron_job_id, interval_minutes)."""
    rows = conn.execute("SELECT user_id, cron_job_id, interval_minutes FROM public.auto_sync_jobs").fetchall()
    return {user_id: (cron_job_id, minutes) for user_id, cron_job_id, minutes in rows}


def catalog_snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """Everything a migration may create, in comparable form (for round-trip and drift tests)."""
    queries = {
        "extensions": "SELECT extname FROM pg_extension ORDER BY 1",
        "schemas": """SELECT nspname FROM pg_namespace
                      WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' ORDER BY 1""",
        "relations": """SELECT n.nspname, c.relname, c.relkind, c.relrowsecurity FROM pg_class c
                        JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
                          AND c.relname NOT LIKE 'alembic_version%' ORDER BY 1, 2""",
        "columns": """SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default
                      FROM information_schema.columns
                      WHERE table_schema IN ('public', 'auth', 'autosync_private')
                        AND table_name <> 'alembic_version' ORDER BY 1, 2, 3""",
        # The body last: it is compared modulo whitespace below.
        "functions": """SELECT n.nspname, p.oid::regprocedure::text, pg_get_function_result(p.oid), l.lanname,
                               p.provolatile, p.proisstrict, p.prosecdef, p.proconfig,
                               obj_description(p.oid, 'pg_proc'), p.prosrc
                        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                        JOIN pg_language l ON l.oid = p.prolang
                        WHERE n.nspname IN ('public', 'auth', 'autosync_private') ORDER BY 2""",
        "policies": "SELECT schemaname, tablename, policyname, roles::text[], cmd, qual FROM pg_policies ORDER BY 1, 2, 3",
        "roles": """SELECT rolname, rolbypassrls, rolcanlogin FROM pg_roles
                    WHERE rolname IN ('anon', 'authenticated', 'service_role') ORDER BY 1""",
        "table_grants": """SELECT table_schema, table_name, grantee, privilege_type
                           FROM information_schema.role_table_grants
                           WHERE table_schema IN ('public', 'auth', 'autosync_private')
                             AND table_name <> 'alembic_version' ORDER BY 1, 2, 3, 4""",
        "function_grants": """SELECT routine_schema, routine_name, grantee FROM information_schema.role_routine_grants
                              WHERE routine_schema IN ('public', 'auth', 'autosync_private') ORDER BY 1, 2, 3""",
        "triggers": """SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
        "database_settings": """SELECT unnest(setconfig) FROM pg_db_role_setting s
                                JOIN pg_database d ON d.oid = s.setdatabase
                                WHERE d.datname = current_database() ORDER BY 1""",
        "cron_jobs": "SELECT jobname FROM cron.job ORDER BY 1"
        if conn.execute("SELECT to_regclass('cron.job') IS NOT NULL").fetchone()[0]  # type: ignore[index]
        else "SELECT NULL::text WHERE false",
    }
    snapshot = {name: conn.execute(query).fetchall() for name, query in queries.items()}
    # Offline SQL output expands tabs in function bodies; compare bodies modulo whitespace.
    snapshot["functions"] = [(*row[:-1], " ".join(str(row[-1]).split())) for row in snapshot["functions"]]
    return snapshot


def function_definitions(conn: psycopg.Connection) -> dict[str, tuple[str, str | None]]:
    """Every project function's full definition and ACL, byte for byte (for exact downgrade checks)."""
    rows = conn.execute(
        """SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proacl::text
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname IN ('public', 'auth', 'autosync_private') AND p.prokind IN ('f', 'p')"""
    ).fetchall()
    return {name: (definition, acl) for name, definition, acl in rows}
