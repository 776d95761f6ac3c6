"""`autosync doctor` / `autosync reconcile` on real drift, and the run-details purge."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from sync_function import doctor
from tests.support.db import cron_jobs, delete_users, job_rows, new_user

pytestmark = pytest.mark.docker


@pytest.fixture
def drifted(db: psycopg.Connection) -> Iterator[dict[str, uuid.UUID]]:
    """One user per kind of drift, made the way it happens: by hand, behind the functions' back."""
    users = {
        kind: new_user(db)
        for kind in (
            "missing_job",
            "orphan_row",
            "missing_cron",
            "orphan_cron",
            "wrong_schedule",
            "inactive",
            "healthy",
        )
    }
    enabled = ("missing_job", "missing_cron", "wrong_schedule", "inactive", "healthy")
    for kind in enabled:
        db.execute(
            "INSERT INTO public.user_settings (user_id, enabled, interval_minutes) VALUES (%s, true, 15)",
            (users[kind],),
        )
    for kind in ("orphan_row", "missing_cron", "wrong_schedule", "inactive", "healthy"):
        db.execute("SELECT public.schedule_auto_sync(%s, 15)", (users[kind],))
    # orphan_row: scheduled while settings say off (no settings row at all).
    # missing_cron: the cron job vanished (someone ran cron.unschedule).
    db.execute("DELETE FROM cron.job WHERE jobname = %s", (f"auto-sync-{users['missing_cron']}",))
    # orphan_cron: a job without a row, e.g. left by a failed manual cleanup.
    db.execute(
        "SELECT cron.schedule(%s, '0 * * * *', %s)",
        (
            f"auto-sync-{users['orphan_cron']}",
            f"SELECT public.trigger_auto_sync('{users['orphan_cron']}'::uuid)",
        ),
    )
    # wrong_schedule: the settings moved to 60 min, the job did not.
    db.execute(
        "UPDATE public.user_settings SET interval_minutes = 60 WHERE user_id = %s", (users["wrong_schedule"],)
    )
    # inactive: paused in pg_cron.
    jobid = cron_jobs(db)[f"auto-sync-{users['inactive']}"][0]
    db.execute("SELECT cron.alter_job(%s, active => false)", (jobid,))
    yield users
    for user_id in users.values():
        db.execute("SELECT public.unschedule_auto_sync(%s)", (user_id,))
    delete_users(db, list(users.values()))


def test_doctor_finds_every_kind_of_drift(db: psycopg.Connection, drifted: dict[str, uuid.UUID]) -> None:
    found = {(d.kind, d.user_id) for d in doctor.find_drift(db)}
    for kind, user_id in drifted.items():
        if kind == "healthy":
            assert not [f for f in found if f[1] == user_id]
        else:
            assert (kind, user_id) in found, f"{kind} not detected"
    check = {c.name: c for c in doctor.run_checks(db)}["schedules match settings"]
    assert not check.ok and "autosync reconcile" in check.detail


def test_reconcile_repairs_everything_and_is_idempotent(
    db: psycopg.Connection, drifted: dict[str, uuid.UUID]
) -> None:
    planned = doctor.reconcile(db, dry_run=True)
    assert planned and all(f.detail == "dry run: not applied" for f in planned)
    assert doctor.find_drift(db), "a dry run changes nothing"

    fixes = doctor.reconcile(db)
    assert all(fix.ok for fix in fixes), fixes
    assert [d for d in doctor.find_drift(db) if d.user_id in drifted.values()] == []
    jobs, rows = cron_jobs(db), job_rows(db)
    for kind in ("missing_job", "missing_cron", "wrong_schedule", "inactive", "healthy"):
        user_id = drifted[kind]
        expected_minutes = 60 if kind == "wrong_schedule" else 15
        job = jobs[f"auto-sync-{user_id}"]
        assert rows[user_id] == (job[0], expected_minutes) and job[3] is True
    for kind in ("orphan_row", "orphan_cron"):
        assert f"auto-sync-{drifted[kind]}" not in jobs and drifted[kind] not in rows
    assert [f for f in doctor.reconcile(db) if f.user_id in drifted.values()] == []


def test_stray_jobs_in_the_namespace_are_found_and_removed(db: psycopg.Connection) -> None:
    """A job named like ours but for no user (auto_sync_job_user gives NULL) is drift without an owner."""
    user_id = uuid.uuid4()
    strays = [f"auto-sync-not-a-user-{user_id}", f"auto-sync-{str(user_id).upper()}"]
    for name in strays:
        db.execute("SELECT cron.schedule(%s, '0 0 * * *', 'SELECT 1')", (name,))
    try:
        found = [(d.kind, d.user_id, d.job_name) for d in doctor.find_drift(db) if d.job_name in strays]
        assert sorted(found, key=str) == sorted((("orphan_cron", None, name) for name in strays), key=str)
        fixes = [f for f in doctor.reconcile(db) if f.job_name in strays]
        assert [(f.action, f.ok) for f in fixes] == [("unschedule stray job", True)] * 2
        assert not set(strays) & set(cron_jobs(db))
    finally:
        db.execute("DELETE FROM cron.job WHERE jobname = ANY(%s)", (strays,))


def test_missing_cron_names_the_job_the_schema_would_create(db: psycopg.Connection) -> None:
    user_id = new_user(db)
    try:
        db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user_id,))
        db.execute("DELETE FROM cron.job WHERE jobname = %s", (f"auto-sync-{user_id}",))
        drift = [d for d in doctor.find_drift(db) if d.user_id == user_id and d.kind == "missing_cron"]
        assert [d.job_name for d in drift] == [f"auto-sync-{user_id}"]
    finally:
        db.execute("SELECT public.unschedule_auto_sync(%s)", (user_id,))
        delete_users(db, [user_id])


def test_cli_doctor_exit_codes(database_url: str, drifted: dict[str, uuid.UUID]) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": database_url, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "sync_function.cli", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "schedule drift" in result.stdout and "missing_cron" in result.stdout
    repaired = subprocess.run(
        [sys.executable, "-m", "sync_function.cli", "reconcile"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "0 problem(s) left" in repaired.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "sync_function.cli", "doctor"],
        env={"PATH": env["PATH"]},
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and "DATABASE_URL is not set" in missing.stderr


def test_purge_keeps_recent_run_details(db: psycopg.Connection) -> None:
    assert db.execute(
        "SELECT active FROM cron.job WHERE jobname = 'autosync-purge-run-details'"
    ).fetchone() == (True,)
    marker = f"purge-test-{uuid.uuid4()}"
    db.execute(
        """INSERT INTO cron.job_run_details (jobid, runid, job_pid, database, username, command, status, return_message, start_time, end_time)
           SELECT 0, nextval('cron.runid_seq'), 0, current_database(), current_user, %s, 'succeeded', '', now() - age, now() - age
           FROM unnest(ARRAY[interval '1 hour', interval '6 days', interval '8 days', interval '40 days']) AS age""",
        (marker,),
    )

    def ages() -> list[int]:
        rows = db.execute(
            "SELECT extract(day FROM now() - end_time)::int FROM cron.job_run_details WHERE command = %s ORDER BY 1",
            (marker,),
        ).fetchall()
        return [r[0] for r in rows]

    try:
        removed = db.execute("SELECT autosync_private.purge_cron_run_details()").fetchone()
        assert removed is not None and removed[0] >= 2
        assert ages() == [0, 6]
        db.execute("SELECT autosync_private.purge_cron_run_details(interval '1 day')")
        assert ages() == [0]
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            db.execute("SELECT autosync_private.purge_cron_run_details(interval '-1 day')")
        assert ages() == [0]
    finally:
        db.execute("DELETE FROM cron.job_run_details WHERE command = %s", (marker,))
