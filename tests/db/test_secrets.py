"""The service key: stored privately, readable by no API role, absent from GUCs, cron and logs."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from harness.http_recorder import Recorder
from infra import dbsettings
from tests.support.db import as_role, delete_users, new_user

pytestmark = pytest.mark.docker


@pytest.fixture
def key(database_url: str, http_recorder: Recorder) -> Iterator[str]:
    service_key = secrets.token_urlsafe(48)
    dbsettings.configure(database_url, function_url=http_recorder.url, service_key=service_key)
    yield service_key
    dbsettings.reset(database_url)


@pytest.mark.parametrize("role", ["authenticated", "anon", "service_role"])
def test_key_unreadable_by_api_roles(db: psycopg.Connection, key: str, role: str) -> None:
    user = new_user(db)
    try:
        db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user,))
        with as_role(db, role, sub=user):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute("SELECT * FROM autosync_private.service_key")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute("SELECT autosync_private.set_service_key(%s)", ("x" * 40,))
            settings = db.execute("SELECT name, setting FROM pg_settings").fetchall()
            assert not [name for name, value in settings if value and key in value]
            custom = db.execute(
                "SELECT current_setting('app.settings.service_key', true), "
                "current_setting('app.settings.sync_function_key', true)"
            ).fetchone()
            assert custom == (None, None)
            stored = db.execute(
                "SELECT coalesce(string_agg(array_to_string(setconfig, ','), ','), '') FROM pg_db_role_setting"
            ).fetchone()
            assert stored is not None and key not in stored[0]
            # The API roles cannot even look into pg_cron's tables (what is in them is checked below).
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="schema cron"):
                db.execute("SELECT command FROM cron.job")
    finally:
        db.execute("SELECT public.unschedule_auto_sync(%s)", (user,))
        delete_users(db, [user])


def test_key_never_in_cron_tables_or_server_log(  # type: ignore[no-untyped-def]
    db: psycopg.Connection, database_url: str, key: str, docker_engine, postgres_server
) -> None:
    user = new_user(db)
    try:
        db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user,))
        # A failing call too: error messages must not carry the key either.
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("SELECT public.trigger_auto_sync(%s)", (user,))
            with pytest.raises(psycopg.errors.InvalidTextRepresentation):
                conn.execute("SELECT public.trigger_auto_sync('not-a-uuid')")
        everything = db.execute(
            """SELECT coalesce(string_agg(command, ' '), '') FROM cron.job
               UNION ALL SELECT coalesce(string_agg(command || ' ' || coalesce(return_message, ''), ' '), '')
               FROM cron.job_run_details"""
        ).fetchall()
        assert all(key not in text for (text,) in everything)
        log = docker_engine.containers.get(postgres_server.name).logs().decode(errors="replace")
        assert "trigger_auto_sync" in log or "not-a-uuid" in log, "the server log is being read"
        assert key not in log
    finally:
        db.execute("SELECT public.unschedule_auto_sync(%s)", (user,))
        delete_users(db, [user])


def test_only_the_owner_sets_the_key(db: psycopg.Connection) -> None:
    rows = db.execute(
        """SELECT grantee FROM information_schema.role_routine_grants
           WHERE routine_schema = 'autosync_private' AND routine_name = 'set_service_key'"""
    ).fetchall()
    owner = db.execute(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'autosync_private'"
    ).fetchone()
    assert {grantee for (grantee,) in rows} == {owner[0]}  # type: ignore[index]


def test_security_definer_functions_pin_search_path(db: psycopg.Connection) -> None:
    unpinned = db.execute(
        """SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE p.prosecdef AND n.nspname IN ('public', 'auth', 'autosync_private')
             AND NOT coalesce('search_path=""' = ANY (p.proconfig), false)"""
    ).fetchall()
    assert unpinned == []
    count = db.execute(
        """SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE p.prosecdef AND n.nspname = 'public'"""
    ).fetchone()
    assert count is not None and count[0] >= 5


def test_every_user_owned_table_has_rls(db: psycopg.Connection) -> None:
    without = db.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped
           WHERE n.nspname = 'public' AND c.relkind = 'r' AND NOT c.relrowsecurity"""
    ).fetchall()
    assert without == []


def test_unknown_uuid_string_is_not_an_injection(db: psycopg.Connection) -> None:
    hostile = str(uuid.uuid4()) + "'); DROP TABLE public.user_settings; --"
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        db.execute("SELECT public.schedule_auto_sync(%s::uuid, 15)", (hostile,))
    assert db.execute("SELECT to_regclass('public.user_settings') IS NOT NULL").fetchone() == (True,)
