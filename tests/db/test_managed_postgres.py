"""Managed Postgres: the migrations run as a non-superuser owner, with pg_cron and http created by an admin.

The setup mirrors Supabase, RDS and Cloud SQL: the extensions exist, the migration role owns the
database and may create roles (CREATEROLE) but is not superuser, and pg_cron's functions are granted
to it.
"""

from __future__ import annotations

import time
import uuid
from urllib.parse import quote

import psycopg
import pytest

from harness import mailgen
from harness.dovecot import DovecotServer
from harness.service import WorkerThread, make_config, running_service
from infra import dbsettings, migrations
from infra.containers import PostgresConfig
from tests.support.api import add_account, enable
from tests.support.managed import ADMIN_SETUP, OWNER, OWNER_PASSWORD, prepare

pytestmark = pytest.mark.docker


def test_upgrade_and_downgrade_as_a_non_superuser_owner(fresh_postgres: PostgresConfig) -> None:
    url = prepare(fresh_postgres)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    assert row == (False,)
    assert migrations.upgrade(url) == migrations.head()
    assert migrations.downgrade(url, "base") is None
    assert migrations.upgrade(url) == migrations.head()


def test_a_missing_grant_is_named_with_the_statement_to_run(fresh_postgres: PostgresConfig) -> None:
    url = prepare(fresh_postgres)
    migrations.upgrade(url)
    with psycopg.connect(fresh_postgres.url, autocommit=True) as conn:
        conn.execute(f"REVOKE SET ON PARAMETER app.settings.sync_function_url FROM {OWNER}")  # type: ignore[arg-type]
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
        dbsettings.configure(url, function_url="http://127.0.0.1:9", service_key="k" * 40)
    diag = caught.value.diag
    assert f"role {OWNER} may not set app.settings.sync_function_url" in str(diag.message_primary)
    assert f"GRANT SET ON PARAMETER app.settings.sync_function_url TO {OWNER}" in str(diag.message_hint)


SERVICE_LOGIN = "autosync_service"
SERVICE_PASSWORD = "service-password-for-tests"  # noqa: S105 - a throwaway test container's role


def test_service_and_a_cron_fired_sync_with_a_dedicated_login_role(
    fresh_postgres: PostgresConfig, dovecot: DovecotServer
) -> None:
    """The owner migrates and schedules; the service logs in as its own role, a member of service_role."""
    url = prepare(fresh_postgres)
    migrations.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        # What infra/README.md tells an administrator (or the owner, with CREATEROLE) to run.
        conn.execute(
            f"CREATE ROLE {SERVICE_LOGIN} LOGIN NOINHERIT PASSWORD '{SERVICE_PASSWORD}' IN ROLE service_role"  # type: ignore[arg-type]
        )
    service_url = url.replace(
        f"{OWNER}:{quote(OWNER_PASSWORD)}", f"{SERVICE_LOGIN}:{quote(SERVICE_PASSWORD)}"
    )
    config = make_config(service_url)
    worker = None
    with running_service(config, imap_ssl_context=dovecot.ssl_context()) as service:
        dbsettings.configure(url, function_url=service.url, service_key=config.service_key.get_secret_value())
        with psycopg.connect(url, autocommit=True) as conn:
            user = uuid.uuid4()
            conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, %s)", (user, f"{user}@example.org"))
        try:
            mailbox_user = add_account(service, user, dovecot)
            dovecot.deliver(mailbox_user, [m.raw for m in mailgen.generate(3, seed=5)])
            enable(service, user)
            worker = WorkerThread(config, dovecot.ssl_context())
            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT jobid, username FROM cron.job WHERE jobname = public.auto_sync_job_name(%s)",
                    (user,),
                ).fetchone()
                assert row is not None and row[1] == OWNER, row
                conn.execute("SELECT cron.alter_job(%s, schedule => '2 seconds')", (row[0],))
            deadline = time.monotonic() + 60
            status = None
            while time.monotonic() < deadline and status != "succeeded":
                with psycopg.connect(url, autocommit=True) as conn:
                    found = conn.execute(
                        "SELECT status, messages_imported FROM public.sync_runs "
                        "WHERE user_id = %s AND trigger = 'cron' ORDER BY queued_at DESC LIMIT 1",
                        (user,),
                    ).fetchone()
                status = found[0] if found else None
                time.sleep(0.5)
            assert status == "succeeded", found
            with psycopg.connect(url, autocommit=True) as conn:
                count = conn.execute(
                    "SELECT count(*) FROM public.messages WHERE user_id = %s", (user,)
                ).fetchone()
            assert count == (3,)
        finally:
            if worker is not None:
                worker.stop()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT public.unschedule_auto_sync(%s)", (user,))


@pytest.mark.parametrize(
    ("left_out", "message", "statement"),
    [
        ("GRANT USAGE ON SCHEMA cron", "may not use pg_cron", f"GRANT USAGE ON SCHEMA cron TO {OWNER}"),
        ("CREATEROLE", "may not create the roles", f"ALTER ROLE {OWNER} CREATEROLE"),
    ],
)
def test_a_missing_privilege_stops_the_upgrade_with_the_admin_statement(
    fresh_postgres: PostgresConfig,
    left_out: str,
    message: str,
    statement: str,
) -> None:
    setup = [s for s in ADMIN_SETUP if left_out not in s]
    if left_out == "CREATEROLE":
        setup.insert(0, f"CREATE ROLE {OWNER} LOGIN PASSWORD '{OWNER_PASSWORD}' BYPASSRLS")
    url = prepare(fresh_postgres, setup)
    with pytest.raises(Exception, match=message) as caught:
        migrations.upgrade(url)
    cause = caught.value.__cause__ or caught.value
    assert statement in str(getattr(getattr(cause, "diag", None), "message_hint", "")), cause
    assert migrations.current(url) is None, "nothing was applied"
