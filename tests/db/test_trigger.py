"""trigger_auto_sync against a real HTTP server, called directly and by real pg_cron runs."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from harness.http_recorder import Recorder
from infra import dbsettings
from tests.support.db import delete_users, new_user

pytestmark = pytest.mark.docker


@pytest.fixture
def service_key() -> str:
    return secrets.token_urlsafe(48)


@pytest.fixture
def configured(database_url: str, http_recorder: Recorder, service_key: str) -> Iterator[Recorder]:
    dbsettings.configure(database_url, function_url=http_recorder.url, service_key=service_key)
    yield http_recorder
    dbsettings.reset(database_url)


@pytest.fixture
def user(db: psycopg.Connection) -> Iterator[uuid.UUID]:
    user_id = new_user(db)
    yield user_id
    delete_users(db, [user_id])


def fresh(database_url: str) -> psycopg.Connection:
    """A new session: database settings apply to sessions opened after ALTER DATABASE."""
    return psycopg.connect(database_url, autocommit=True)


def test_posts_user_id_with_bearer_key(
    database_url: str, configured: Recorder, service_key: str, user: uuid.UUID
) -> None:
    with fresh(database_url) as conn:
        assert conn.execute("SELECT public.trigger_auto_sync(%s)", (user,)).fetchone() == (202,)
    (received,) = configured.requests
    assert received.path == "/functions/v1/auto-sync"
    assert json.loads(received.body) == {"user_id": str(user)}
    assert received.headers["content-type"].startswith("application/json")
    assert received.headers["authorization"] == f"Bearer {service_key}"


@pytest.mark.parametrize("status", [400, 401, 404, 500, 503])
def test_error_status_raises_with_the_status(
    database_url: str, configured: Recorder, user: uuid.UUID, status: int
) -> None:
    configured.status = status
    with fresh(database_url) as conn:
        with pytest.raises(psycopg.errors.ExternalRoutineException, match=f"answered HTTP {status}"):
            conn.execute("SELECT public.trigger_auto_sync(%s)", (user,))


def test_unreachable_function_raises(database_url: str, service_key: str, user: uuid.UUID) -> None:
    # Port 9 (discard) on loopback: nothing listens there.
    dbsettings.configure(database_url, function_url="http://127.0.0.1:9", service_key=service_key)
    try:
        with fresh(database_url) as conn:
            with pytest.raises(
                psycopg.errors.ConnectionFailure,
                match=r"POST http://127.0.0.1:9/functions/v1/auto-sync failed",
            ):
                conn.execute("SELECT public.trigger_auto_sync(%s)", (user,))
    finally:
        dbsettings.reset(database_url)


def test_stalled_function_times_out(database_url: str, configured: Recorder, user: uuid.UUID) -> None:
    configured.delay_s = 3
    with fresh(database_url) as conn:
        conn.execute("SET app.settings.sync_function_timeout_ms = '500'")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.ConnectionFailure, match="failed"):
            conn.execute("SELECT public.trigger_auto_sync(%s)", (user,))
        assert time.monotonic() - started < 2.5


def test_not_configured_is_a_clear_error(database_url: str, user: uuid.UUID) -> None:
    dbsettings.reset(database_url)
    with fresh(database_url) as conn:
        with pytest.raises(
            psycopg.errors.ObjectNotInPrerequisiteState, match="sync_function_url is not configured"
        ):
            conn.execute("SELECT public.trigger_auto_sync(%s)", (user,))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT autosync_private.set_sync_function_url('http://127.0.0.1:9')")
    try:
        with fresh(database_url) as conn:
            with pytest.raises(
                psycopg.errors.ObjectNotInPrerequisiteState, match="service key is not configured"
            ):
                conn.execute("SELECT public.trigger_auto_sync(%s)", (user,))
    finally:
        dbsettings.reset(database_url)


@pytest.mark.parametrize("bad", ["ftp://host", "not a url", "", "http://", "http://host/ path"])
def test_bad_function_url_is_refused_and_changes_nothing(database_url: str, bad: str) -> None:
    before = dbsettings.function_url(database_url)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid sync function URL"):
        dbsettings.configure(database_url, function_url=bad, service_key=secrets.token_urlsafe(48))
    assert dbsettings.function_url(database_url) == before


def test_short_service_key_is_refused(database_url: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="at least 32 characters"):
        dbsettings.configure(database_url, function_url="http://127.0.0.1:9", service_key="short")
    assert not dbsettings.service_key_is_set(database_url)


def wait_for_run(conn: psycopg.Connection, job_id: int, timeout_s: float) -> tuple[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = conn.execute(
            """SELECT status, return_message FROM cron.job_run_details
               WHERE jobid = %s AND status IN ('succeeded', 'failed') ORDER BY runid DESC LIMIT 1""",
            (job_id,),
        ).fetchone()
        if row:
            return str(row[0]), str(row[1])
        time.sleep(0.2)
    raise AssertionError(f"pg_cron job {job_id} did not finish a run within {timeout_s} s")


def test_real_pg_cron_run_reaches_the_function(
    database_url: str, configured: Recorder, service_key: str, user: uuid.UUID
) -> None:
    with fresh(database_url) as conn:
        # Seconds syntax keeps the test short; the command is exactly what schedule_auto_sync uses.
        (job_id,) = conn.execute(
            "SELECT cron.schedule(%s, '1 seconds', %s)",
            (f"auto-sync-test-{user}", f"SELECT public.trigger_auto_sync('{user}'::uuid)"),
        ).fetchone()  # type: ignore[misc]
        try:
            received = configured.wait_for(1, timeout_s=15)
            status, message = wait_for_run(conn, job_id, timeout_s=15)
        finally:
            conn.execute("SELECT cron.unschedule(%s)", (job_id,))
    assert received, "pg_cron's run never reached the function"
    assert json.loads(received[0].body) == {"user_id": str(user)}
    assert received[0].headers["authorization"] == f"Bearer {service_key}"
    assert status == "succeeded", message


def test_failed_pg_cron_run_shows_as_failed(database_url: str, configured: Recorder, user: uuid.UUID) -> None:
    configured.status = 503
    with fresh(database_url) as conn:
        (job_id,) = conn.execute(
            "SELECT cron.schedule(%s, '1 seconds', %s)",
            (f"auto-sync-test-{user}", f"SELECT public.trigger_auto_sync('{user}'::uuid)"),
        ).fetchone()  # type: ignore[misc]
        try:
            status, message = wait_for_run(conn, job_id, timeout_s=15)
        finally:
            conn.execute("SELECT cron.unschedule(%s)", (job_id,))
    assert status == "failed"
    assert "answered HTTP 503" in message
