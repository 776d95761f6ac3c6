"""Outages: each one ends as a recorded failed run (or a failed cron run) with a reason a person can
act on, and the service keeps serving everyone else."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from harness import docker_local, mailgen
from harness.dovecot import DovecotServer
from harness.ports import free_port
from harness.service import Service, WorkerThread, make_config, run_uvicorn, running_service
from infra import dbsettings, migrations
from infra.containers import PostgresConfig
from sync_function.crypto import encrypt_password
from tests.support.api import enable, trigger, wait_for_run
from tests.support.reliability import SilentServer, attempts_of, closed_port, wait_until
from tests.support.users import users

pytestmark = pytest.mark.docker


def insert_account(
    database_url: str,
    settings,
    user: uuid.UUID,
    *,
    port: int,
    tls_mode: str,
    username: str,
    password: str,  # type: ignore[no-untyped-def]
) -> None:
    """An account that went bad after it was added (the API verifies logins, so straight to SQL)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)
               VALUES (%s, '127.0.0.1', %s, %s, %s, %s)""",
            (
                user,
                port,
                tls_mode,
                username,
                encrypt_password(settings.encryption_key.get_secret_value(), password),
            ),
        )


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_imap_outages_are_failed_runs_with_clear_reasons(
    service: Service, database_url: str, dovecot: DovecotServer, silent_server: SilentServer
) -> None:
    """Down, wrong password, TLS on a plain port, an untrusted certificate, a stalled server."""
    settings = service.config.model_copy(
        update={"max_attempts": 2, "retry_base_seconds": 0.2, "imap_timeout_seconds": 4.0}
    )
    good_name, good_password = dovecot.new_user()
    dovecot.deliver(good_name, [m.raw for m in mailgen.generate(5, seed=3)])
    cases = {
        # name: (port, tls_mode, username, password, words the reason must contain).
        # Dovecot answers a wrong password after a 2 s delay: the IMAP timeout is above that.
        "server down": (closed_port(), "plain", "x", "pw-" + uuid.uuid4().hex, "connection refused"),
        "wrong password": (
            dovecot.port,
            "plain",
            good_name,
            "wrong-" + uuid.uuid4().hex,
            "rejected the login",
        ),
        "tls on the plain port": (
            dovecot.port,
            "tls",
            good_name,
            good_password,
            "right port for the tls_mode",
        ),
        "untrusted certificate": (dovecot.tls_port, "tls", good_name, good_password, "is not trusted"),
        "stalled server": (
            silent_server.port,
            "plain",
            "x",
            "pw-" + uuid.uuid4().hex,
            "did not answer in time",
        ),
    }
    # ssl_context=None: the system trust store, which does not know the test Dovecot's certificate.
    worker = WorkerThread(settings, None, concurrency=4)
    try:
        with users(database_url, len(cases) + 1) as user_ids:
            runs: dict[str, tuple[str, str]] = {}
            for (case, (port, tls_mode, username, password, _)), user in zip(
                cases.items(), user_ids, strict=False
            ):
                insert_account(
                    database_url,
                    settings,
                    user,
                    port=port,
                    tls_mode=tls_mode,
                    username=username,
                    password=password,
                )
                enable(service, user)
                runs[case] = (trigger(service, user), password)
            healthy = user_ids[-1]
            insert_account(
                database_url,
                settings,
                healthy,
                port=dovecot.port,
                tls_mode="plain",
                username=good_name,
                password=good_password,
            )
            enable(service, healthy)
            healthy_run = trigger(service, healthy)

            for case, (run_id, password) in runs.items():
                status, attempts, imported, error = wait_for_run(database_url, run_id, timeout_s=60)
                # Transient failures are retried; the others cannot succeed by trying again.
                expected = 2 if case in ("server down", "stalled server") else 1
                assert (status, attempts, imported) == ("failed", expected, 0), (case, error)
                assert error is not None and cases[case][4] in error, (case, error)
                assert "127.0.0.1:" in error, (case, error)  # says which server
                assert password not in error
                assert [a[1] for a in attempts_of(database_url, run_id)] == ["failed"] * expected
                # The user sees the same reason in their history.
                history = service.client.get(
                    "/api/sync/history", headers=service.as_user(user_ids[list(cases).index(case)])
                )
                assert history.json()["runs"][0]["error"] == error
            # Everyone else is served: the healthy user's import went through meanwhile. (It may
            # need its retry: after failed logins Dovecot delays every login from the same address,
            # here the one worker host, beyond the 4 s timeout.)
            status, attempts, imported, _ = wait_for_run(database_url, healthy_run, timeout_s=60)
            assert (status, imported) == ("succeeded", 5) and attempts <= 2, attempts_of(
                database_url, healthy_run
            )
            assert service.client.get("/healthz").status_code == 200
            assert service.client.get("/readyz").status_code == 200
    finally:
        worker.stop()
    assert worker.error is None


@pytest.fixture
def own_database(fresh_postgres: PostgresConfig) -> str:
    migrations.upgrade(fresh_postgres.url)
    return fresh_postgres.url


def test_database_down_at_trigger_time(  # type: ignore[no-untyped-def]
    own_database: str, fresh_postgres: PostgresConfig, database_url: str, docker_engine
) -> None:
    """The function's database is down when pg_cron's trigger arrives: 503 with a reason, cron sees it."""
    settings = make_config(own_database)
    container = docker_engine.containers.get(fresh_postgres.name)  # this test's own container
    with running_service(settings) as api, users(own_database) as (user,):
        enable(api, user)
        container.stop(timeout=10)
        try:
            response = api.client.post(
                "/functions/v1/auto-sync", json={"user_id": str(user)}, headers=api.as_service
            )
            assert response.status_code == 503
            assert response.json() == {
                "success": False,
                "error": "the database is unavailable; try again shortly",
            }
            assert response.headers["retry-after"] == "5"
            # What pg_cron's trigger (running in another database) records: a failure naming the status.
            dbsettings.configure(
                database_url, function_url=api.url, service_key=settings.service_key.get_secret_value()
            )
            try:
                with psycopg.connect(database_url, autocommit=True) as conn:
                    with pytest.raises(
                        psycopg.errors.ExternalRoutineException,
                        match=r"answered HTTP 503: .*the database is unavailable",
                    ):
                        conn.execute("SELECT public.trigger_auto_sync(%s)", (user,))
            finally:
                dbsettings.reset(database_url)
            # The process keeps serving what needs no database, and says it is not ready.
            assert api.client.get("/healthz").status_code == 200
            assert api.client.get("/readyz").status_code == 503
            assert (
                api.client.get("/api/settings/load-auto-sync", headers=api.as_user(user)).status_code == 503
            )
        finally:
            container.start()
            docker_local.wait_healthy(container, timeout_s=60)
            # Docker may still report the health of the previous start: wait for a real session.
            wait_until(lambda: accepts_sessions(own_database), timeout_s=60, what="Postgres back")
        wait_until(lambda: api.client.get("/readyz").status_code == 200, timeout_s=30, what="readyz")
        response = api.client.post(
            "/functions/v1/auto-sync", json={"user_id": str(user)}, headers=api.as_service
        )
        assert response.status_code == 202 and response.json()["queued"] is True
        with psycopg.connect(own_database, autocommit=True) as conn:
            conn.execute("DELETE FROM public.procrastinate_jobs WHERE lock = %s", (f"user:{user}",))


def accepts_sessions(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def cron_runs(conn: psycopg.Connection, job_id: int) -> list[tuple[str, str]]:
    return conn.execute(  # type: ignore[return-value]
        """SELECT status, coalesce(return_message, '') FROM cron.job_run_details
           WHERE jobid = %s AND status IN ('succeeded', 'failed') ORDER BY runid""",
        (job_id,),
    ).fetchall()


def test_function_down_when_pg_cron_fires(service: Service, database_url: str) -> None:
    """Real pg_cron runs every 2 s: while the function is down they fail visibly; then one works."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key = service.config.service_key.get_secret_value()
    dbsettings.configure(database_url, function_url=url, service_key=key)
    try:
        with users(database_url) as (user,), psycopg.connect(database_url, autocommit=True) as conn:
            enable(service, user)
            (job_id,) = conn.execute(  # type: ignore[misc]
                "SELECT cron.schedule(%s, '2 seconds', %s)",
                (f"reliability-cron-{user}", f"SELECT public.trigger_auto_sync('{user}'::uuid)"),
            ).fetchone()
            try:
                # Nothing listens on the function's port yet.
                wait_until(lambda: len(cron_runs(conn, job_id)) >= 1, timeout_s=20, what="a cron run")
                status, message = cron_runs(conn, job_id)[0]
                assert status == "failed"
                assert f"POST {url}/functions/v1/auto-sync failed" in message
                assert key not in message
                # The function comes up (the same app, on the port pg_cron calls); the next slot works.
                from sync_function.main import create_app

                server, thread = run_uvicorn(create_app(service.config), port)
                try:
                    wait_until(
                        lambda: any(s == "succeeded" for s, _ in cron_runs(conn, job_id)),
                        timeout_s=20,
                        what="a successful cron run",
                    )
                finally:
                    conn.execute("SELECT cron.unschedule(%s)", (job_id,))
                    server.should_exit = True
                    thread.join(timeout=10)
                history = cron_runs(conn, job_id)
                first_ok = [s for s, _ in history].index("succeeded")
                assert all(s == "failed" for s, _ in history[:first_ok])
                row = conn.execute(
                    "SELECT count(*), min(trigger) FROM public.sync_runs WHERE user_id = %s", (user,)
                ).fetchone()
                assert row == (1, "cron"), "every successful slot after the first joins the one queued run"
                details = json.dumps(history)
                assert key not in details
            finally:
                conn.execute("DELETE FROM public.procrastinate_jobs WHERE lock = %s", (f"user:{user}",))
                conn.execute("DELETE FROM cron.job_run_details WHERE jobid = %s", (job_id,))
    finally:
        dbsettings.reset(database_url)
        time.sleep(0)
