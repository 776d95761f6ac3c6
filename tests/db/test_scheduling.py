"""schedule / update / unschedule: one job and one row per user, always in step; who may call."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.db import as_role, cron_jobs, delete_users, job_rows, new_user

pytestmark = pytest.mark.docker


@pytest.fixture
def user(db: psycopg.Connection) -> Iterator[uuid.UUID]:
    user_id = new_user(db)
    yield user_id
    db.execute("SELECT public.unschedule_auto_sync(%s)", (user_id,))
    delete_users(db, [user_id])


def schedule_of(db: psycopg.Connection, user_id: uuid.UUID, minutes: int) -> str:
    row = db.execute("SELECT public.auto_sync_cron_schedule(%s, %s)", (user_id, minutes)).fetchone()
    assert row is not None
    return str(row[0])


def test_schedule_creates_named_job_with_nothing_secret(db: psycopg.Connection, user: uuid.UUID) -> None:
    (job_id,) = db.execute("SELECT public.schedule_auto_sync(%s, 30)", (user,)).fetchone()  # type: ignore[misc]
    jobs = cron_jobs(db)
    assert jobs[f"auto-sync-{user}"] == (
        job_id,
        schedule_of(db, user, 30),
        f"SELECT public.trigger_auto_sync('{user}'::uuid)",
        True,
    )
    assert job_rows(db)[user] == (job_id, 30)


def test_scheduling_twice_keeps_one_job_and_one_row(db: psycopg.Connection, user: uuid.UUID) -> None:
    (first,) = db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user,)).fetchone()  # type: ignore[misc]
    (second,) = db.execute("SELECT public.schedule_auto_sync(%s, 60)", (user,)).fetchone()  # type: ignore[misc]
    assert first == second
    assert [name for name in cron_jobs(db) if name == f"auto-sync-{user}"] == [f"auto-sync-{user}"]
    assert db.execute(
        "SELECT count(*) FROM public.auto_sync_jobs WHERE user_id = %s", (user,)
    ).fetchone() == (1,)
    assert job_rows(db)[user] == (first, 60)


def test_rescheduling_reactivates_a_paused_job(db: psycopg.Connection, user: uuid.UUID) -> None:
    (job_id,) = db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user,)).fetchone()  # type: ignore[misc]
    db.execute("SELECT cron.alter_job(%s, active => false)", (job_id,))
    db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user,))
    assert cron_jobs(db)[f"auto-sync-{user}"][3] is True


def test_update_changes_job_schedule_and_row(db: psycopg.Connection, user: uuid.UUID) -> None:
    (job_id,) = db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user,)).fetchone()  # type: ignore[misc]
    (updated,) = db.execute("SELECT public.update_auto_sync_schedule(%s, 240)", (user,)).fetchone()  # type: ignore[misc]
    assert updated == job_id
    assert cron_jobs(db)[f"auto-sync-{user}"][1] == schedule_of(db, user, 240)
    assert job_rows(db)[user] == (job_id, 240)


def test_update_without_schedule_is_a_clear_error_and_changes_nothing(
    db: psycopg.Connection, user: uuid.UUID
) -> None:
    with pytest.raises(psycopg.errors.NoDataFound, match="auto-sync is not scheduled for user"):
        db.execute("SELECT public.update_auto_sync_schedule(%s, 15)", (user,))
    assert user not in job_rows(db)
    assert f"auto-sync-{user}" not in cron_jobs(db)


def test_bad_interval_changes_nothing(db: psycopg.Connection, user: uuid.UUID) -> None:
    db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user,))
    before = (cron_jobs(db), job_rows(db))
    for function in ("schedule_auto_sync", "update_auto_sync_schedule"):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="supported: 5, 6, 10"):
            db.execute(f"SELECT public.{function}(%s, 45)", (user,))
    assert (cron_jobs(db), job_rows(db)) == before


def test_schedule_for_unknown_user_is_refused(db: psycopg.Connection) -> None:
    ghost = uuid.uuid4()
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match=f"no user with id {ghost}"):
        db.execute("SELECT public.schedule_auto_sync(%s, 15)", (ghost,))
    assert f"auto-sync-{ghost}" not in cron_jobs(db)


def test_unschedule_removes_both_and_is_quiet_when_nothing_is_scheduled(
    db: psycopg.Connection, user: uuid.UUID
) -> None:
    db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user,))
    assert db.execute("SELECT public.unschedule_auto_sync(%s)", (user,)).fetchone() == (True,)
    assert user not in job_rows(db)
    assert f"auto-sync-{user}" not in cron_jobs(db)
    assert db.execute("SELECT public.unschedule_auto_sync(%s)", (user,)).fetchone() == (False,)


def test_unschedule_also_removes_an_orphaned_job(db: psycopg.Connection, user: uuid.UUID) -> None:
    db.execute("SELECT cron.schedule(%s, '0 0 * * *', 'SELECT 1')", (f"auto-sync-{user}",))
    assert db.execute("SELECT public.unschedule_auto_sync(%s)", (user,)).fetchone() == (True,)
    assert f"auto-sync-{user}" not in cron_jobs(db)


def test_deleting_the_user_removes_the_cron_job(db: psycopg.Connection) -> None:
    user_id = new_user(db)
    db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user_id,))
    delete_users(db, [user_id])
    assert f"auto-sync-{user_id}" not in cron_jobs(db)
    assert user_id not in job_rows(db)


@pytest.mark.parametrize(
    "call",
    [
        "SELECT public.schedule_auto_sync(%s, 15)",
        "SELECT public.update_auto_sync_schedule(%s, 15)",
        "SELECT public.unschedule_auto_sync(%s)",
    ],
)
def test_authenticated_may_manage_only_their_own(db: psycopg.Connection, user: uuid.UUID, call: str) -> None:
    other = new_user(db)
    try:
        db.execute("SELECT public.schedule_auto_sync(%s, 60)", (user,))
        before = (cron_jobs(db), job_rows(db))
        with as_role(db, "authenticated", sub=other):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not manage auto-sync"):
                db.execute(call, (user,))
        assert (cron_jobs(db), job_rows(db)) == before
        with as_role(db, "authenticated", sub=user):
            db.execute(call, (user,))
    finally:
        delete_users(db, [other])


def test_authenticated_without_claims_is_refused(db: psycopg.Connection, user: uuid.UUID) -> None:
    with as_role(db, "authenticated"), pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user,))


def test_service_role_may_manage_anyone(db: psycopg.Connection, user: uuid.UUID) -> None:
    with as_role(db, "service_role"):
        db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user,))
        db.execute("SELECT public.update_auto_sync_schedule(%s, 30)", (user,))
    assert job_rows(db)[user][1] == 30


@pytest.mark.parametrize("role", ["anon", "public_login"])
def test_other_roles_get_a_permission_error(db: psycopg.Connection, user: uuid.UUID, role: str) -> None:
    if role == "public_login":
        db.execute("DROP ROLE IF EXISTS autosync_test_nobody")
        db.execute("CREATE ROLE autosync_test_nobody")
        role = "autosync_test_nobody"
    try:
        with as_role(db, role, sub=user):
            for call in ("SELECT public.schedule_auto_sync(%s, 15)", "SELECT public.trigger_auto_sync(%s)"):
                with pytest.raises(
                    psycopg.errors.InsufficientPrivilege, match="permission denied for function"
                ):
                    db.execute(call, (user,))
    finally:
        db.execute("DROP ROLE IF EXISTS autosync_test_nobody")
    assert user not in job_rows(db)


def test_rls_users_see_only_their_own_rows(db: psycopg.Connection, user: uuid.UUID) -> None:
    other = new_user(db)
    try:
        for owner in (user, other):
            db.execute(
                "INSERT INTO public.user_settings (user_id, enabled, interval_minutes) VALUES (%s, true, 30)",
                (owner,),
            )
            db.execute("SELECT public.schedule_auto_sync(%s, 30)", (owner,))
        with as_role(db, "authenticated", sub=user):
            assert db.execute("SELECT user_id FROM public.user_settings").fetchall() == [(user,)]
            assert db.execute("SELECT user_id FROM public.auto_sync_jobs").fetchall() == [(user,)]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute("UPDATE public.user_settings SET interval_minutes = 5")
        with as_role(db, "anon"), pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("SELECT * FROM public.user_settings")
    finally:
        db.execute("SELECT public.unschedule_auto_sync(%s)", (other,))
        delete_users(db, [other])


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["schedule", "update", "unschedule"]),
        st.integers(min_value=0, max_value=2),
        st.sampled_from([5, 15, 45, 60, 120, 1440, 0]),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(operations=OPERATIONS)
def test_jobs_and_rows_stay_consistent(database_url: str, operations: list[tuple[str, int, int]]) -> None:
    """Random schedule/update/unschedule sequences, valid and invalid: the model and both tables agree."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        users = [new_user(conn) for _ in range(3)]
        model: dict[uuid.UUID, int] = {}
        try:
            for operation, index, minutes in operations:
                user_id = users[index]
                valid = minutes in (5, 15, 60, 120, 1440)
                try:
                    if operation == "schedule":
                        conn.execute("SELECT public.schedule_auto_sync(%s, %s)", (user_id, minutes))
                    elif operation == "update":
                        conn.execute("SELECT public.update_auto_sync_schedule(%s, %s)", (user_id, minutes))
                    else:
                        conn.execute("SELECT public.unschedule_auto_sync(%s)", (user_id,))
                except (psycopg.errors.InvalidParameterValue, psycopg.errors.NoDataFound):
                    assert not valid or (operation == "update" and user_id not in model)
                else:
                    if operation == "unschedule":
                        model.pop(user_id, None)
                    else:
                        assert valid and (operation == "schedule" or user_id in model)
                        model[user_id] = minutes
            jobs, rows = cron_jobs(conn), job_rows(conn)
            for user_id in users:
                job = jobs.get(f"auto-sync-{user_id}")
                if user_id in model:
                    assert job is not None and rows[user_id] == (job[0], model[user_id])
                    assert job[1] == schedule_of(conn, user_id, model[user_id])
                    assert job[3] is True
                else:
                    assert job is None and user_id not in rows
        finally:
            for user_id in users:
                conn.execute("SELECT public.unschedule_auto_sync(%s)", (user_id,))
            delete_users(conn, users)
