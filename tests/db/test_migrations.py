"""The Alembic chain: up, down to nothing, up again; offline SQL; clear errors; step-by-step mirrors."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from infra import migrations
from infra.containers import PostgresConfig
from tests.support.db import catalog_snapshot, new_user

pytestmark = pytest.mark.docker

PROJECT_ROLES = {"anon", "authenticated", "service_role"}


def snapshot(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return catalog_snapshot(conn)


def test_upgrade_then_downgrade_leaves_nothing_and_upgrades_again(fresh_postgres: PostgresConfig) -> None:
    url = fresh_postgres.url
    empty = snapshot(url)

    assert migrations.upgrade(url) == migrations.head()
    migrated = snapshot(url)
    assert {"pg_cron", "http"} <= {row[0] for row in migrated["extensions"]}
    assert {("anon",), ("authenticated",), ("service_role",)} <= {r[:1] for r in migrated["roles"]}
    # Leave data behind that the downgrade must clean up: a scheduled user, settings, a URL and a key.
    with psycopg.connect(url, autocommit=True) as conn:
        user = new_user(conn)
        conn.execute(
            "INSERT INTO public.user_settings (user_id, enabled, interval_minutes) VALUES (%s, true, 15)",
            (user,),
        )
        conn.execute("SELECT public.schedule_auto_sync(%s, 15)", (user,))
        conn.execute("SELECT autosync_private.set_sync_function_url('http://127.0.0.1:9')")
        conn.execute("SELECT autosync_private.set_service_key(%s)", ("k" * 40,))

    assert migrations.downgrade(url, "base") is None
    after = snapshot(url)
    assert after == empty, "downgrade to base left objects behind"
    with psycopg.connect(url, autocommit=True) as conn:
        roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
    assert not roles & PROJECT_ROLES

    assert migrations.upgrade(url) == migrations.head()
    assert snapshot(url) == migrated


def test_every_revision_downgrades_and_upgrades_one_step(fresh_postgres: PostgresConfig) -> None:
    url = fresh_postgres.url
    migrations.upgrade(url)
    at_head = snapshot(url)
    revisions: list[str] = []
    while (current := migrations.current(url)) is not None:
        revisions.append(current)
        before = snapshot(url)
        migrations.downgrade(url, "-1")
        migrations.upgrade(url, "+1")
        assert snapshot(url) == before, f"revision {current}: downgrade then upgrade is not a round trip"
        migrations.downgrade(url, "-1")
    assert revisions[-1] == "0001"
    migrations.upgrade(url)
    assert snapshot(url) == at_head


def test_offline_sql_builds_the_same_schema(fresh_postgres: PostgresConfig, database_url: str) -> None:
    sql = migrations.offline_sql()
    assert "%%" not in sql, "offline SQL must not carry doubled percent signs"
    with psycopg.connect(fresh_postgres.url, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[call-overload]
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == (migrations.head(),)
    online, offline = snapshot(database_url), snapshot(fresh_postgres.url)
    # The session database may hold rows of other tests, never other schema objects.
    for key in ("database_settings", "cron_jobs"):
        online.pop(key), offline.pop(key)
    assert offline == online


def test_cli_without_database_url_says_what_to_set(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=migrations.REPO_ROOT,
        check=False,
    )
    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr


def test_cli_offline_needs_no_database() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head", "--sql"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=migrations.REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "CREATE FUNCTION public.trigger_auto_sync(user_id uuid)" in result.stdout


def test_pg_cron_in_another_database_is_refused_clearly(postgres_server: PostgresConfig) -> None:
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS other_db")
        conn.execute("CREATE DATABASE other_db")
    other = postgres_server.url.rsplit("/", 1)[0] + "/other_db"
    try:
        with pytest.raises(Exception, match=r'pg_cron can only be created in database "autosync"'):
            migrations.upgrade(other)
        assert migrations.current(other) is None
    finally:
        with psycopg.connect(postgres_server.url, autocommit=True) as conn:
            conn.execute("DROP DATABASE other_db")


def test_missing_http_extension_is_named_with_how_to_get_it(
    fresh_postgres: PostgresConfig, docker_engine
) -> None:  # type: ignore[no-untyped-def]
    container = docker_engine.containers.get(fresh_postgres.name)
    control = "/usr/share/postgresql/17/extension/http.control"
    exit_code, _ = container.exec_run(["mv", control, control + ".hidden"])
    assert exit_code == 0
    with pytest.raises(Exception, match=r'extension "http" is not available') as raised:
        migrations.upgrade(fresh_postgres.url)
    assert "postgresql-17-http" in str(raised.value)
    # Nothing was applied: the failed revision rolled back whole.
    assert migrations.current(fresh_postgres.url) is None
    with psycopg.connect(fresh_postgres.url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone() == (0,)
