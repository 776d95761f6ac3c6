"""Upgrading a seed installation: every user's choice and schedule kept, tables adopted, jobs moved.

The database is built first as the seed's migration left it (tests/support/seed.py says what was
assumed about its shape), then `alembic upgrade head` runs on it, and the test checks that nothing
was lost; then that the downgrade to before the adoption gives the seed back.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg
import pytest

from harness import mailgen
from harness.dovecot import DovecotServer
from harness.service import WorkerThread, make_config, running_service
from infra import migrations
from infra.containers import PostgresConfig
from sync_function import doctor, preferences
from tests.support import managed
from tests.support.api import add_account
from tests.support.db import catalog_snapshot, cron_jobs, job_rows
from tests.support.seed import RENAMED, SIGNATURES, STALE, SeedInstallation, SeedUser, build_seed, seed_rows

pytestmark = pytest.mark.docker

# The revision before 0004, which adopts the seed's first table: downgrading there undoes the adoption.
BEFORE_ADOPTION = "0003"


def upgrade_logged(url: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Upgrade to head; the server's warnings as Alembic logged them."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="alembic.runtime.postgres"):
        assert migrations.upgrade(url) == migrations.head()
    return [r.getMessage() for r in caplog.records if r.name == "alembic.runtime.postgres"]


def supported(conn: psycopg.Connection) -> list[int]:
    row = conn.execute("SELECT public.auto_sync_supported_intervals()").fetchone()
    assert row is not None
    return list(row[0])


def documented_interval(seed_interval: int, intervals: list[int]) -> int:
    """The README's rule: the longest supported interval not longer than the seed's (at least the shortest)."""
    return max([m for m in intervals if m <= seed_interval] or [intervals[0]])


def oid(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute("SELECT %s::regclass::oid", (f"public.{table}",)).fetchone()
    assert row is not None
    return int(row[0])


def table_rows(conn: psycopg.Connection, table: str) -> dict[uuid.UUID, dict[str, Any]]:
    """A table's rows as JSON, by user."""
    query = psycopg.sql.SQL("SELECT t.user_id, to_jsonb(t) FROM {} AS t").format(
        psycopg.sql.Identifier("public", table)
    )
    return dict(conn.execute(query).fetchall())


def check_adopted(seed: SeedInstallation, log: list[str]) -> None:
    with psycopg.connect(seed.url, autocommit=True) as conn:
        intervals = supported(conn)
        assert {t: oid(conn, t) for t in seed.table_oids} == seed.table_oids, "tables were recreated"

        # Every seed row kept, every value of it, under this project's column names (intervals aside).
        for table, images in seed.rows.items():
            current = table_rows(conn, table)
            for user, image in images.items():
                if table == "auto_sync_jobs" and not seed.users[user].enabled:
                    assert user not in current, "a job row of a user with auto-sync off stays"
                    continue
                kept = {
                    RENAMED.get(c, c): v for c, v in image.items() if RENAMED.get(c, c) != "interval_minutes"
                }
                assert {c: current[user][c] for c in kept} == kept, (table, user)

        settings = {
            user: (enabled, minutes)
            for user, enabled, minutes in conn.execute(
                "SELECT user_id, enabled, interval_minutes FROM public.user_settings"
            ).fetchall()
        }
        expected = {
            user: (before.enabled, documented_interval(before.interval, intervals))
            for user, before in seed.users.items()
        }
        assert settings == expected

        # Same names and argument types, one function each, this project's bodies (search_path '').
        for signature in SIGNATURES:
            name = signature.split("(")[0].split(".")[1]
            found = conn.execute(
                "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc AS p "
                "WHERE p.pronamespace = 'public'::regnamespace AND p.proname = %s",
                (name,),
            ).fetchall()
            assert len(found) == 1, found
            assert found[0][0] == signature.removeprefix("public.").replace(", ", ",")
            assert found[0][1] == ['search_path=""'], f"{signature} is still the seed's"

        # Each scheduled user keeps their pg_cron job (same jobid), on their staggered schedule.
        jobs = cron_jobs(conn)
        scheduled = {user: before for user, before in seed.users.items() if before.enabled}
        assert set(jobs) == {f"auto-sync-{user}" for user in scheduled}
        for user, before in scheduled.items():
            jobid, schedule, command, active = jobs[f"auto-sync-{user}"]
            row = conn.execute(
                "SELECT public.auto_sync_cron_schedule(%s, %s)", (user, expected[user][1])
            ).fetchone()
            assert (jobid, schedule, command, active) == (
                before.job_id,
                row[0] if row else None,
                f"SELECT public.trigger_auto_sync('{user}'::uuid)",
                True,
            )
        assert job_rows(conn) == {
            user: (before.job_id, expected[user][1]) for user, before in scheduled.items()
        }

        # Unsupported intervals, reported per user: in the migration's log and by doctor.
        moved = {
            user: (before.interval, expected[user][1])
            for user, before in seed.users.items()
            if before.interval not in intervals
        }
        assert moved, "the seed must hold unsupported intervals for this test to mean anything"
        for user, (was, now) in moved.items():
            line = f"user {user}: auto-sync interval {was} min is not supported; now every {now} min"
            assert any(line in entry for entry in log), f"{line!r} not in the upgrade's log"
        for user in scheduled:
            assert any(entry.startswith(f"user {user}: auto-sync job ") for entry in log), user
        report = {m.user_id: (m.seed_interval, m.interval_minutes) for m in doctor.seed_intervals(conn)}
        assert report == moved
        assert doctor.find_drift(conn) == []


def grants(url: str) -> dict[str, set[tuple]]:
    """Who may do what on this project's tables and functions (Supabase's own auth schema left out)."""
    with psycopg.connect(url) as conn:
        found = catalog_snapshot(conn)
        defaults = conn.execute(
            "SELECT defaclnamespace::regnamespace::text, defaclobjtype, defaclacl::text FROM pg_default_acl"
        ).fetchall()
    return {
        "tables": {row for row in found["table_grants"] if row[0] != "auth"},
        "functions": {row for row in found["function_grants"] if row[0] != "auth"},
        "defaults": set(defaults),
    }


def test_the_seed_is_adopted_and_nothing_is_lost(
    seed_installation: SeedInstallation, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    seed = seed_installation
    defaults = grants(seed.url)["defaults"]
    log = upgrade_logged(seed.url, caplog)
    check_adopted(seed, log)
    # Supabase's default privileges gave the API roles nothing: the grants are a fresh database's
    # (the session database, migrated from nothing), and the defaults are Supabase's again.
    adopted, fresh = grants(seed.url), grants(database_url)
    assert adopted["tables"] == fresh["tables"]
    assert adopted["functions"] == fresh["functions"]
    assert adopted["defaults"] == defaults
    with psycopg.connect(seed.url, autocommit=True) as conn:
        # The seed's settings GUCs moved too (revision 0024): the key to the private store.
        assert conn.execute("SELECT key FROM autosync_private.service_key").fetchone() == (seed.service_key,)
        # The service's own save works on the adopted table, as service_role; a user who chooses again
        # leaves doctor's report.
        user = next(u for u, b in seed.users.items() if (b.enabled, b.interval) == (False, 45))
        assert user in {m.user_id for m in doctor.seed_intervals(conn)}
        conn.execute("SET ROLE service_role")
        with conn.transaction():
            preferences.save_preference(conn, user_id=user, enabled=True, interval_minutes=20)
        conn.execute("RESET ROLE")
        assert job_rows(conn)[user][1] == 20
        assert user not in {m.user_id for m in doctor.seed_intervals(conn)}
        assert doctor.find_drift(conn) == []


def test_doctor_lists_the_moved_users(
    seed_installation: SeedInstallation, caplog: pytest.LogCaptureFixture
) -> None:
    seed = seed_installation
    upgrade_logged(seed.url, caplog)
    with psycopg.connect(seed.url, autocommit=True) as conn:
        # Loopback, nothing listening: doctor's reachability check fails fast without leaving the machine.
        conn.execute("SELECT autosync_private.set_sync_function_url('http://127.0.0.1:9')")
        intervals = supported(conn)
    result = subprocess.run(
        [sys.executable, "-m", "sync_function.cli", "doctor"],
        env={"PATH": os.environ.get("PATH", ""), "DATABASE_URL": seed.url, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert "intervals moved when the seed was adopted" in result.stdout, result.stdout + result.stderr
    table = result.stdout.split("intervals moved when the seed was adopted", 1)[1]
    for user, before in seed.users.items():
        if before.interval not in intervals:
            line = next(line for line in table.splitlines() if str(user) in line)
            now = documented_interval(before.interval, intervals)
            assert f"{before.interval} min" in line and f"{now} min" in line, line


def test_downgrade_gives_the_seed_back(
    seed_installation: SeedInstallation, caplog: pytest.LogCaptureFixture
) -> None:
    seed = seed_installation
    upgrade_logged(seed.url, caplog)
    with psycopg.connect(seed.url, autocommit=True) as conn:
        # A user who signs up after the upgrade and turns auto-sync on: kept by the downgrade too.
        newcomer = uuid.uuid4()
        conn.execute(
            "INSERT INTO auth.users (id, email) VALUES (%s, %s)", (newcomer, f"{newcomer}@seed.example")
        )
        with conn.transaction():
            preferences.save_preference(conn, user_id=newcomer, enabled=True, interval_minutes=30)

    assert migrations.downgrade(seed.url, BEFORE_ADOPTION) == BEFORE_ADOPTION
    with psycopg.connect(seed.url, autocommit=True) as conn:
        assert {t: oid(conn, t) for t in seed.table_oids} == seed.table_oids
        # Every seed row back as it was, column for column (the re-created job of a user with auto-sync
        # off has a new job id).
        for table, images in seed.rows.items():
            current = table_rows(conn, table)
            for user, image in images.items():
                if (
                    table == "auto_sync_jobs"
                    and (seed.users[user].enabled, seed.users[user].interval) == STALE
                ):
                    image = {c: v for c, v in image.items() if c not in RENAMED}
                assert {c: current[user][c] for c in image} == image, (table, user)
                assert set(current[user]) == set(images[user]), f"{table}: columns left behind or lost"
        rows = seed_rows(conn, seed.variant)
        assert rows == {user: (b.enabled, b.interval) for user, b in seed.users.items()} | {
            newcomer: (True, 30)
        }
        # The seed's functions are back (its parameter names and void results).
        for signature in SIGNATURES:
            row = conn.execute(
                "SELECT prorettype::regtype::text, proargnames[1] FROM pg_proc WHERE oid = to_regprocedure(%s)",
                (signature,),
            ).fetchone()
            assert row == ("void", "p_user_id"), signature
        # Every seed job on its old schedule and command, the one removed (auto-sync off) back too.
        jobs = cron_jobs(conn)
        for user, before in seed.users.items():
            if before.job_id is None:
                continue
            _, schedule, command, _ = jobs[f"auto-sync-{user}"]
            assert (schedule, command) == (before.schedule, f"SELECT trigger_auto_sync('{user}')"), user
            if (before.enabled, before.interval) != STALE:
                assert jobs[f"auto-sync-{user}"][0] == before.job_id
        newcomer_job = jobs[f"auto-sync-{newcomer}"][0]  # a job scheduled since the upgrade stays
        assert conn.execute("SELECT to_regnamespace('autosync_seed')").fetchone() == (None,)
        # The seed's own scheduling function works on its tables again.
        user = next(u for u, b in seed.users.items() if b.enabled)
        conn.execute("SELECT public.schedule_auto_sync(%s, 10)", (user,))
        assert cron_jobs(conn)[f"auto-sync-{user}"][1] == "*/10 * * * *"
        conn.execute("SELECT public.schedule_auto_sync(%s, %s)", (user, seed.users[user].interval))

    # And up again: adopted a second time, as the first.
    log = upgrade_logged(seed.url, caplog)
    seed.users[newcomer] = SeedUser(True, 30, newcomer_job, None)
    check_adopted(seed, log)


def test_a_non_superuser_owner_adopts_the_seed(
    managed_seed_installation: SeedInstallation, caplog: pytest.LogCaptureFixture
) -> None:
    seed = managed_seed_installation
    with psycopg.connect(seed.url) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (
            False,
        )
    log = upgrade_logged(seed.url, caplog)
    check_adopted(seed, log)
    assert migrations.downgrade(seed.url, BEFORE_ADOPTION) == BEFORE_ADOPTION
    with psycopg.connect(seed.url) as conn:
        assert seed_rows(conn, seed.variant) == {
            user: (b.enabled, b.interval) for user, b in seed.users.items()
        }


def test_jobs_of_another_role_stop_the_upgrade_with_the_statement_to_run(
    seed_installation: SeedInstallation,
) -> None:
    """pg_cron names jobs per role: moving another role's job would leave the seed's beside ours."""
    seed = seed_installation
    with psycopg.connect(seed.url, autocommit=True) as conn:
        conn.execute("CREATE ROLE seed_admin NOLOGIN")
        conn.execute(
            "UPDATE cron.job SET username = 'seed_admin' WHERE jobid = %s",
            (next(b.job_id for b in seed.users.values() if b.enabled),),
        )
    with pytest.raises(Exception, match="belong to seed_admin") as caught:
        migrations.upgrade(seed.url)
    cause = caught.value.__cause__ or caught.value
    hint = str(getattr(getattr(cause, "diag", None), "message_hint", ""))
    assert "UPDATE cron.job SET username = 'postgres' WHERE jobname LIKE 'auto-sync-%';" in hint, hint
    # Each revision runs in its own transaction: the ones before the jobs' move stay applied, nothing of it.
    with psycopg.connect(seed.url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM cron.job WHERE schedule LIKE '%-59/%'").fetchone() == (0,)


def test_tables_of_another_role_stop_the_upgrade_with_the_statement_to_run(
    fresh_postgres: PostgresConfig,
) -> None:
    """The seed ran as the superuser; the upgrade runs as a managed owner: it names the ALTER … OWNER to run."""
    build_seed(fresh_postgres.url, fresh_postgres.database)
    url = managed.prepare(fresh_postgres)
    with psycopg.connect(fresh_postgres.url, autocommit=True) as conn:
        # As on Supabase, where the migration role may read and reference Supabase's users.
        conn.execute(f"GRANT USAGE ON SCHEMA auth TO {managed.OWNER}")  # type: ignore[arg-type]
        conn.execute(f"GRANT SELECT, REFERENCES ON auth.users TO {managed.OWNER}")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="belongs to postgres, not to autosync_owner") as caught:
        migrations.upgrade(url)
    cause = caught.value.__cause__ or caught.value
    hint = str(getattr(getattr(cause, "diag", None), "message_hint", ""))
    assert f"ALTER TABLE public.user_settings OWNER TO {managed.OWNER};" in hint, hint
    assert migrations.current(url) == BEFORE_ADOPTION


def test_each_revision_round_trips_on_the_seed_and_the_way_down_ends_at_the_seed(
    fresh_postgres: PostgresConfig,
) -> None:
    """Step by step from head down to before the adoption: each step down and up again is a round trip,
    and at the bottom the catalog is the seed's again, but for what 0001-0003 add and the key GUC."""
    url = fresh_postgres.url
    build_seed(url, fresh_postgres.database)
    seed_catalog = snapshot(url)
    migrations.upgrade(url)
    while (current := migrations.current(url)) != BEFORE_ADOPTION:
        before = snapshot(url)
        migrations.downgrade(url, "-1")
        migrations.upgrade(url, "+1")
        again = snapshot(url)
        # 0006's downgrade resets the function URL, which only 0024 (from the seed's GUC) or an operator sets.
        before.pop("database_settings"), again.pop("database_settings")
        assert again == before, f"revision {current}: downgrade then upgrade is not a round trip"
        migrations.downgrade(url, "-1")
    after = snapshot(url)
    # What 0001-0003 add (the interval functions) and what no downgrade puts back (the key in a GUC).
    added = ("auto_sync_supported_intervals", "auto_sync_check_interval", "auto_sync_cron_schedule")
    for name in ("functions", "function_grants"):
        after[name] = [row for row in after[name] if not any(f in str(row[1]) for f in added)]
    seed_catalog["database_settings"] = [
        row
        for row in seed_catalog["database_settings"]
        if not str(row[0]).startswith("app.settings.service_role_key=")
    ]
    assert after == seed_catalog


def snapshot(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return catalog_snapshot(conn)


def test_a_moved_seed_job_fires_and_imports(
    seed_installation: SeedInstallation, dovecot: DovecotServer, caplog: pytest.LogCaptureFixture
) -> None:
    """End to end after the upgrade: the seed's own pg_cron job, moved, calls the service with the key that
    was the seed's GUC, and the user's mail is imported."""
    seed = seed_installation
    upgrade_logged(seed.url, caplog)
    user = next(u for u, b in seed.users.items() if b.enabled)
    # The seed's key (now in the private store) is the service's key, as the README's steps say.
    config = make_config(seed.url, service_key=seed.service_key)
    with psycopg.connect(seed.url, autocommit=True) as conn:
        # The seed's Supabase side did not let service_role read auth.users: doctor says what to grant.
        check = doctor.users_readable_check(conn)
        assert not check.ok and "GRANT SELECT ON auth.users TO service_role" in check.detail
        conn.execute("GRANT SELECT ON auth.users TO service_role")
        assert doctor.users_readable_check(conn).ok
    worker = None
    with running_service(config, imap_ssl_context=dovecot.ssl_context()) as service:
        with psycopg.connect(seed.url, autocommit=True) as conn:
            conn.execute("SELECT autosync_private.set_sync_function_url(%s)", (service.url,))
        mailbox_user = add_account(service, user, dovecot)
        dovecot.deliver(mailbox_user, [m.raw for m in mailgen.generate(3, seed=13)])
        worker = WorkerThread(config, dovecot.ssl_context())
        try:
            with psycopg.connect(seed.url, autocommit=True) as conn:
                # The seed's job itself (same jobid), brought forward so that the test need not wait a slot.
                conn.execute("SELECT cron.alter_job(%s, schedule => '2 seconds')", (seed.users[user].job_id,))
            deadline = time.monotonic() + 60
            found = None
            while time.monotonic() < deadline and (found is None or found[0] != "succeeded"):
                with psycopg.connect(seed.url, autocommit=True) as conn:
                    found = conn.execute(
                        "SELECT status, messages_imported FROM public.sync_runs "
                        "WHERE user_id = %s AND trigger = 'cron' ORDER BY queued_at DESC LIMIT 1",
                        (user,),
                    ).fetchone()
                time.sleep(0.5)
            assert found is not None and found[0] == "succeeded", found
            with psycopg.connect(seed.url, autocommit=True) as conn:
                assert conn.execute(
                    "SELECT count(*) FROM public.messages WHERE user_id = %s", (user,)
                ).fetchone() == (3,)
        finally:
            worker.stop()
            with psycopg.connect(seed.url, autocommit=True) as conn:
                conn.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname LIKE 'auto-sync-%'")
