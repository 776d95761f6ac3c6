"""Revision 0015: the job name, the per-user lock and the function URL, each defined once in SQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import sql

from infra import dbsettings, migrations
from infra.containers import PostgresConfig
from sync_function import doctor, runs
from tests.support.db import (
    as_role,
    catalog_snapshot,
    cron_jobs,
    delete_users,
    function_definitions,
    new_user,
)

pytestmark = pytest.mark.docker

# What the code derived by hand before 0015, kept here as the oracle the functions must agree with.
OLD_JOB_USER = r"""
SELECT CASE WHEN %(name)s::text ~ '^auto-sync-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
            THEN substr(%(name)s::text, 11)::uuid END
"""
OLD_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('auto-sync-' || %s::text, 0))"
OLD_FUNCTION_URL = """
SELECT substr(setting, length('app.settings.sync_function_url=') + 1)
FROM pg_db_role_setting AS s JOIN pg_database AS d ON d.oid = s.setdatabase AND s.setrole = 0,
     unnest(s.setconfig) AS setting
WHERE d.datname = current_database() AND setting LIKE 'app.settings.sync_function_url=%'
"""

NEW_FUNCTIONS = {
    "public.auto_sync_job_name(uuid)": "SELECT public.auto_sync_job_name(%s)",
    "public.auto_sync_job_user(text)": "SELECT public.auto_sync_job_user('auto-sync-' || %s)",
    "public.auto_sync_lock_user(uuid)": "SELECT public.auto_sync_lock_user(%s)",
    "public.auto_sync_function_url()": "SELECT public.auto_sync_function_url() WHERE %s IS NOT NULL",
}
REPLACED = {
    "autosync_private.lock_user(uuid)",
    "autosync_private.upsert_auto_sync_job(uuid,integer)",
    "unschedule_auto_sync(uuid)",
}


@pytest.fixture
def user(db: psycopg.Connection) -> Iterator[uuid.UUID]:
    user_id = new_user(db)
    yield user_id
    db.execute("SELECT public.unschedule_auto_sync(%s)", (user_id,))
    delete_users(db, [user_id])


def value(
    conn: psycopg.Connection, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


# --- the job name -------------------------------------------------------------------------------


def test_job_name_is_the_documented_name_and_the_one_scheduling_uses(
    db: psycopg.Connection, user: uuid.UUID
) -> None:
    name = value(db, "SELECT public.auto_sync_job_name(%s)", (user,))
    assert name == f"auto-sync-{user}"
    (job_id,) = db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user,)).fetchone()  # type: ignore[misc]
    assert cron_jobs(db)[str(name)][0] == job_id
    assert (
        value(
            db, "SELECT provolatile FROM pg_proc WHERE oid = 'public.auto_sync_job_name(uuid)'::regprocedure"
        )
        == "i"
    )


def test_job_name_of_null_is_a_clear_error(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="user_id must not be null"):
        db.execute("SELECT public.auto_sync_job_name(NULL)")


def test_job_user_inverts_job_name(db: psycopg.Connection) -> None:
    ids = [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), *(uuid.uuid4() for _ in range(200))]
    rows = db.execute(
        "SELECT u, public.auto_sync_job_user(public.auto_sync_job_name(u)) FROM unnest(%s::uuid[]) AS u",
        (ids,),
    ).fetchall()
    assert len(rows) == len(ids) and all(original == parsed for original, parsed in rows)


def test_job_user_recognises_exactly_what_doctor_recognised(db: psycopg.Connection) -> None:
    u = uuid.uuid4()
    names = [
        f"auto-sync-{u}",
        f"auto-sync-{str(u).upper()}",
        f"AUTO-SYNC-{u}",
        f"auto-sync-test-{u}",
        f"xauto-sync-{u}",
        f"auto-sync-{u}x",
        f"auto-sync-{u.hex}",
        f"auto-sync-{{{u}}}",
        f"auto-sync--{u}",
        str(u),
        "auto-sync-",
        "auto-sync-not-a-user",
        "autosync-purge-run-details",
        "",
    ]
    for name in names:
        assert value(db, "SELECT public.auto_sync_job_user(%s)", (name,)) == value(
            db, OLD_JOB_USER, {"name": name}
        ), name
    assert value(db, "SELECT public.auto_sync_job_user(%s)", (f"auto-sync-{u}",)) == u
    assert value(db, "SELECT public.auto_sync_job_user(NULL)") is None


# --- the per-user lock ----------------------------------------------------------------------------


def must_wait(conn: psycopg.Connection, query: str, params: tuple[object, ...]) -> bool:
    """Whether `query` has to wait for a lock another session holds. Rolls back what it did."""
    try:
        conn.execute("SET LOCAL lock_timeout = '300ms'")
        conn.execute(query, params)  # type: ignore[arg-type]
    except psycopg.errors.LockNotAvailable:
        return True
    finally:
        conn.rollback()
    return False


@pytest.fixture
def sessions(database_url: str, user: uuid.UUID) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    """Two sessions with explicit transactions, as the service and a scheduling call would have.

    Set up after `user`, so torn down first: their locks are gone before the user is unscheduled.
    """
    with psycopg.connect(database_url) as first, psycopg.connect(database_url) as second:
        yield first, second
        first.rollback()
        second.rollback()


def test_lock_serialises_one_user_and_not_two(
    sessions: tuple[psycopg.Connection, psycopg.Connection], db: psycopg.Connection, user: uuid.UUID
) -> None:
    first, second = sessions
    other = new_user(db)
    try:
        first.execute("SELECT public.auto_sync_lock_user(%s)", (user,))
        assert must_wait(second, "SELECT public.auto_sync_lock_user(%s)", (user,))
        assert not must_wait(second, "SELECT public.auto_sync_lock_user(%s)", (other,))
        first.rollback()
        assert not must_wait(second, "SELECT public.auto_sync_lock_user(%s)", (user,))
    finally:
        delete_users(db, [other])


def test_a_waiting_session_goes_on_once_the_holder_commits(
    sessions: tuple[psycopg.Connection, psycopg.Connection], db: psycopg.Connection, user: uuid.UUID
) -> None:
    first, second = sessions
    first.execute("SELECT public.auto_sync_lock_user(%s)", (user,))
    waiter_pid = second.info.backend_pid

    def take() -> float:
        second.execute("SELECT public.auto_sync_lock_user(%s)", (user,))
        return time.monotonic()

    with ThreadPoolExecutor(max_workers=1) as pool:
        acquired = pool.submit(take)
        try:
            deadline = time.monotonic() + 10
            while not db.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND NOT granted)",
                (waiter_pid,),
            ).fetchone()[0]:  # type: ignore[index]
                assert time.monotonic() < deadline, "the second session never waited for the lock"
                time.sleep(0.05)
            time.sleep(0.3)
            assert not acquired.done()
            released = time.monotonic()
        finally:
            first.commit()
        assert acquired.result(timeout=10) >= released


def test_lock_has_the_key_the_code_before_0015_used(
    sessions: tuple[psycopg.Connection, psycopg.Connection], user: uuid.UUID
) -> None:
    """Code on either side of the revision (a service not yet redeployed) still serialises."""
    first, second = sessions
    first.execute(OLD_LOCK, (user,))
    assert must_wait(second, "SELECT public.auto_sync_lock_user(%s)", (user,))
    first.rollback()
    second.execute("SELECT public.auto_sync_lock_user(%s)", (user,))
    assert must_wait(first, OLD_LOCK, (user,))


@pytest.mark.parametrize(
    "call",
    [
        "SELECT public.schedule_auto_sync(%s, 15)",
        "SELECT public.update_auto_sync_schedule(%s, 30)",
        "SELECT public.unschedule_auto_sync(%s)",
    ],
)
def test_scheduling_waits_for_the_service_holding_the_user_lock(
    sessions: tuple[psycopg.Connection, psycopg.Connection],
    db: psycopg.Connection,
    user: uuid.UUID,
    call: str,
) -> None:
    first, second = sessions
    db.execute("SELECT public.schedule_auto_sync(%s, 60)", (user,))
    before = cron_jobs(db)[f"auto-sync-{user}"]
    first.execute("SET ROLE service_role")
    runs.user_lock(first, user)  # what the service does before it requests a run
    assert must_wait(second, call, (user,))
    assert cron_jobs(db)[f"auto-sync-{user}"] == before
    first.rollback()
    assert not must_wait(second, call, (user,))


def test_lock_of_null_is_a_clear_error(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="user_id must not be null"):
        db.execute("SELECT public.auto_sync_lock_user(NULL)")


# --- who may call them ----------------------------------------------------------------------------


@pytest.mark.parametrize("function", NEW_FUNCTIONS)
def test_service_role_may_call(db: psycopg.Connection, user: uuid.UUID, function: str) -> None:
    with as_role(db, "service_role"):
        db.execute(NEW_FUNCTIONS[function], (user,))


@pytest.mark.parametrize("role", ["anon", "authenticated"])
@pytest.mark.parametrize("function", NEW_FUNCTIONS)
def test_api_roles_may_not_call(db: psycopg.Connection, user: uuid.UUID, function: str, role: str) -> None:
    # Even for their own id: under PostgREST these would be endpoints, and the lock a way to stall others.
    with as_role(db, role, sub=user):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for function"):
            db.execute(NEW_FUNCTIONS[function], (user,))


@pytest.mark.parametrize("function", NEW_FUNCTIONS)
def test_only_the_owner_and_service_role_hold_execute(db: psycopg.Connection, function: str) -> None:
    holders = db.execute(
        """SELECT coalesce(r.rolname, 'PUBLIC') FROM pg_proc AS p
           CROSS JOIN LATERAL aclexplode(p.proacl) AS a
           LEFT JOIN pg_roles AS r ON r.oid = a.grantee
           WHERE p.oid = %s::regprocedure AND a.privilege_type = 'EXECUTE'""",
        (function,),
    ).fetchall()
    owner = value(
        db, "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE oid = %s::regprocedure", (function,)
    )
    assert sorted(row[0] for row in holders) == sorted([owner, "service_role"])


def test_users_still_manage_their_own_schedule_through_the_helpers(
    db: psycopg.Connection, user: uuid.UUID
) -> None:
    # schedule/unschedule run as the owner, so the helpers need no grant to authenticated.
    with as_role(db, "authenticated", sub=user):
        db.execute("SELECT public.schedule_auto_sync(%s, 15)", (user,))
    assert f"auto-sync-{user}" in cron_jobs(db)
    with as_role(db, "authenticated", sub=user):
        assert db.execute("SELECT public.unschedule_auto_sync(%s)", (user,)).fetchone() == (True,)
    assert f"auto-sync-{user}" not in cron_jobs(db)


# --- the function URL -----------------------------------------------------------------------------


@pytest.fixture
def saved_url(database_url: str) -> Iterator[str | None]:
    """The session database's URL setting, put back afterwards (other tests rely on it)."""
    before = dbsettings.function_url(database_url)
    yield before
    with psycopg.connect(database_url, autocommit=True) as conn:
        if before is None:
            conn.execute("SELECT autosync_private.reset_sync_function_url()")
        else:
            conn.execute("SELECT autosync_private.set_sync_function_url(%s)", (before,))


def test_function_url_follows_alter_database_set_and_reset(
    database_url: str, db: psycopg.Connection, saved_url: str | None
) -> None:
    db.execute("SELECT autosync_private.set_sync_function_url('http://127.0.0.1:9/base/')")
    url = value(db, "SELECT public.auto_sync_function_url()")
    assert url == "http://127.0.0.1:9/base" == value(db, OLD_FUNCTION_URL)
    assert doctor.function_url(db) == dbsettings.function_url(database_url) == url
    with psycopg.connect(database_url) as fresh:  # what a new session (a pg_cron run) starts with
        assert value(fresh, "SELECT current_setting('app.settings.sync_function_url')") == url
    # This session's own value is not what pg_cron sees, and does not count.
    db.execute("SELECT set_config('app.settings.sync_function_url', 'http://elsewhere:1', false)")
    assert value(db, "SELECT public.auto_sync_function_url()") == url
    with as_role(db, "service_role"):
        assert value(db, "SELECT public.auto_sync_function_url()") == url

    db.execute("SELECT autosync_private.reset_sync_function_url()")
    assert value(db, "SELECT public.auto_sync_function_url()") is None
    assert db.execute(OLD_FUNCTION_URL).fetchone() is None
    assert doctor.function_url(db) is None and dbsettings.function_url(database_url) is None


def test_empty_function_url_counts_as_unset(db: psycopg.Connection, saved_url: str | None) -> None:
    # trigger_auto_sync treats '' as not configured; so does the function (doctor used to report '' as set).
    db.execute(
        sql.SQL("ALTER DATABASE {} SET app.settings.sync_function_url = ''").format(
            sql.Identifier(str(value(db, "SELECT current_database()")))
        )
    )
    assert value(db, OLD_FUNCTION_URL) == ""
    assert value(db, "SELECT public.auto_sync_function_url()") is None
    assert doctor.function_url(db) is None


# --- the revision ---------------------------------------------------------------------------------


def test_downgrade_to_0014_restores_its_exact_catalog(fresh_postgres: PostgresConfig) -> None:
    url = fresh_postgres.url
    assert migrations.upgrade(url, "0014") == "0014"
    with psycopg.connect(url, autocommit=True) as conn:
        user_id = new_user(conn)
        conn.execute("SELECT public.schedule_auto_sync(%s, 15)", (user_id,))  # data made under 0014
        at_0014 = (catalog_snapshot(conn), function_definitions(conn))

    assert migrations.upgrade(url, "0015") == "0015"
    with psycopg.connect(url, autocommit=True) as conn:
        definitions = function_definitions(conn)
        # regprocedure spells names as the search path sees them ('public.' dropped).
        added = {str(value(conn, "SELECT %s::regprocedure::text", (name,))) for name in NEW_FUNCTIONS}
    assert set(definitions) - set(at_0014[1]) == added
    changed = {name for name in at_0014[1] if definitions[name] != at_0014[1][name]}
    assert changed == REPLACED

    assert migrations.downgrade(url, "0014") == "0014"
    with psycopg.connect(url, autocommit=True) as conn:
        assert catalog_snapshot(conn) == at_0014[0]
        assert function_definitions(conn) == at_0014[1]

    assert migrations.upgrade(url) == migrations.head()
    with psycopg.connect(url, autocommit=True) as conn:
        # The job 0014 created carries the name 0015 derives, so 0015's unschedule finds it.
        assert conn.execute("SELECT public.unschedule_auto_sync(%s)", (user_id,)).fetchone() == (True,)
        assert cron_jobs(conn) == {}
