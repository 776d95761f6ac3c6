"""The service needs nothing but service_role: a login role that may only SET ROLE to it runs everything.

The login role made here is a NOINHERIT member of service_role and holds no grant of its own, so
whatever it can do, it can do only after `SET ROLE service_role` (sync_function.db). The same login
role with `AUTOSYNC_DATABASE_ROLE=""` (no SET ROLE) gets nothing, which shows that the role, not the
login, is what grants access.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from psycopg import sql

from harness import mailgen
from harness.dovecot import DovecotServer
from harness.service import WorkerThread, make_config, running_service
from tests.support.api import add_account, enable, trigger, wait_for_run
from tests.support.users import state_of, users

pytestmark = pytest.mark.docker

SAVE = "/api/settings/save-auto-sync"
LOAD = "/api/settings/load-auto-sync"
ACCOUNTS = "/api/email-accounts"
HISTORY = "/api/sync/history"
AUTO_SYNC = "/functions/v1/auto-sync"
IMPORT = "/functions/v1/import-emails"


@dataclass(frozen=True)
class LoginRole:
    name: str
    url: str


def _url_as(database_url: str, user: str, password: str) -> str:
    parts = urlsplit(database_url)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def member_login(database_url: str) -> Iterator[LoginRole]:
    """A login role whose only privilege is membership in service_role, without inheriting it."""
    name = f"autosync_member_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(24)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOINHERIT PASSWORD {} IN ROLE service_role").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
    try:
        yield LoginRole(name=name, url=_url_as(database_url, name, password))
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_the_login_role_alone_may_read_nothing_the_service_uses(member_login: LoginRole) -> None:
    """The premise of the tests below: every privilege comes from SET ROLE service_role."""
    with psycopg.connect(member_login.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT r.rolsuper, r.rolinherit, r.rolbypassrls FROM pg_roles AS r WHERE r.rolname = current_user"
        ).fetchone()
        assert row == (False, False, False)
        for query in (
            "SELECT count(*) FROM public.user_settings",
            "SELECT count(*) FROM public.sync_runs",
            "SELECT count(*) FROM public.procrastinate_jobs",
            "SELECT version_num FROM public.alembic_version",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(query)
        conn.execute("SET ROLE service_role")
        for query in ("SELECT count(*) FROM public.user_settings", "SELECT count(*) FROM public.sync_runs"):
            conn.execute(query)


def test_every_endpoint_works_for_a_member_of_service_role(
    member_login: LoginRole, database_url: str, dovecot: DovecotServer
) -> None:
    config = make_config(member_login.url)
    assert config.database_role == "service_role"
    with (
        users(database_url) as (user,),
        running_service(config, imap_ssl_context=dovecot.ssl_context()) as service,
    ):
        headers = service.as_user(user)
        try:
            ready = service.client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "ok"

            saved = service.client.post(SAVE, json={"enabled": True, "interval_minutes": 30}, headers=headers)
            assert saved.status_code == 200, saved.text
            preference, jobs_row, cron_job = state_of(database_url, user)
            assert preference == (True, 30) and jobs_row is not None and cron_job is not None
            loaded = service.client.get(LOAD, headers=headers)
            assert loaded.json() == {"success": True, "settings": {"enabled": True, "interval_minutes": 30}}

            mailbox_user = add_account(service, user, dovecot)
            messages = mailgen.generate(6, seed=41)
            dovecot.deliver(mailbox_user, [m.raw for m in messages])
            (account,) = service.client.get(ACCOUNTS, headers=headers).json()["accounts"]
            assert account["username"] == mailbox_user

            imported = service.client.post(IMPORT, json={"user_id": str(user)}, headers=service.as_service)
            assert imported.status_code == 200, imported.text
            assert (imported.json()["accounts"], imported.json()["imported"]) == (1, 6)

            history = service.client.get(HISTORY, headers=headers)
            assert history.status_code == 200, history.text
            assert [(r["trigger"], r["status"], r["messages_imported"]) for r in history.json()["runs"]] == [
                ("manual", "succeeded", 6)
            ]

            queued = service.client.post(AUTO_SYNC, json={"user_id": str(user)}, headers=service.as_service)
            assert queued.status_code == 202, queued.text
            assert queued.json()["queued"] is True

            scraped = service.client.get("/metrics")
            assert scraped.status_code == 200
            assert "autosync_database_up 1.0" in scraped.text
            (depth,) = [
                line for line in scraped.text.splitlines() if line.startswith("autosync_queue_depth ")
            ]
            assert float(depth.split()[1]) >= 1, "the job just queued is read from procrastinate_jobs"

            deleted = service.client.delete(f"{ACCOUNTS}/{account['id']}", headers=headers)
            assert deleted.status_code == 200, deleted.text
            assert service.client.get(ACCOUNTS, headers=headers).json()["accounts"] == []

            off = service.client.post(SAVE, json={"enabled": False, "interval_minutes": 30}, headers=headers)
            assert off.status_code == 200, off.text
            assert state_of(database_url, user) == ((False, 30), None, None)
        finally:
            _drop_queued_jobs(database_url, user)


def test_without_set_role_the_same_login_role_gets_nothing(
    member_login: LoginRole, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOSYNC_DATABASE_ROLE", "")
    config = make_config(member_login.url)
    assert config.database_role == ""
    with users(database_url) as (user,), running_service(config) as service:
        headers = service.as_user(user)
        ready = service.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"

        # The database refuses every statement (permission denied): the routes answer 500, not data.
        # One connection per request: uvicorn closes the connection after a request that raised.
        as_service = service.as_service
        refused = [
            _once(service.url, "POST", SAVE, json={"enabled": True, "interval_minutes": 30}, headers=headers),
            _once(service.url, "GET", LOAD, headers=headers),
            _once(service.url, "GET", ACCOUNTS, headers=headers),
            _once(service.url, "DELETE", f"{ACCOUNTS}/{uuid.uuid4()}", headers=headers),
            _once(service.url, "GET", HISTORY, headers=headers),
            _once(service.url, "POST", AUTO_SYNC, json={"user_id": str(user)}, headers=as_service),
            _once(service.url, "POST", IMPORT, json={"user_id": str(user)}, headers=as_service),
        ]
        assert [r.status_code for r in refused] == [500] * len(refused)
        assert all(r.json() == {"success": False, "error": "internal error"} for r in refused)

        scraped = _once(service.url, "GET", "/metrics")
        assert "autosync_database_up 0.0" in scraped.text
        assert state_of(database_url, user) == (None, None, None)
        with psycopg.connect(database_url) as conn:
            runs = conn.execute(
                "SELECT count(*) FROM public.sync_runs WHERE user_id = %s", (user,)
            ).fetchone()
        assert runs == (0,)


REPORT_ROLE = """
CREATE FUNCTION public.{function}() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM pg_catalog.pg_notify(TG_ARGV[0], pg_catalog.json_build_object(
        'table', TG_TABLE_NAME, 'user_id', NEW.user_id,
        'current_user', current_user, 'session_user', session_user)::text);
    RETURN NULL;
END
$fn$
"""


def test_requests_run_as_service_role_not_as_the_login(
    member_login: LoginRole, database_url: str, db: psycopg.Connection
) -> None:
    """Triggers made here report who writes the rows each request writes, over LISTEN/NOTIFY."""
    suffix = secrets.token_hex(4)
    function = sql.Identifier(f"autosync_test_report_role_{suffix}")
    channel = f"autosync_test_role_{suffix}"
    trigger_name = sql.Identifier(f"autosync_test_report_role_{suffix}")
    tables = ("user_settings", "sync_runs")
    db.execute(sql.SQL(REPORT_ROLE).format(function=function))
    try:
        for table in tables:
            db.execute(
                sql.SQL("CREATE TRIGGER {} AFTER INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {}({})").format(
                    trigger_name, sql.Identifier("public", table), function, sql.Literal(channel)
                )
            )
        db.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        with users(database_url) as (user,), running_service(make_config(member_login.url)) as service:
            try:
                saved = service.client.post(
                    SAVE, json={"enabled": True, "interval_minutes": 15}, headers=service.as_user(user)
                )
                assert saved.status_code == 200, saved.text
                queued = service.client.post(
                    AUTO_SYNC, json={"user_id": str(user)}, headers=service.as_service
                )
                assert queued.status_code == 202, queued.text
            finally:
                _drop_queued_jobs(database_url, user)
            reports = [json.loads(n.payload) for n in db.notifies(timeout=10, stop_after=2)]
        mine = sorted(
            (r["table"], r["current_user"], r["session_user"]) for r in reports if r["user_id"] == str(user)
        )
        assert mine == [
            ("sync_runs", "service_role", member_login.name),
            ("user_settings", "service_role", member_login.name),
        ]
    finally:
        db.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(channel)))
        for table in tables:
            db.execute(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    trigger_name, sql.Identifier("public", table)
                )
            )
        db.execute(sql.SQL("DROP FUNCTION IF EXISTS public.{}()").format(function))


def test_the_worker_imports_as_a_member_of_service_role(
    member_login: LoginRole, database_url: str, dovecot: DovecotServer
) -> None:
    config = make_config(member_login.url)
    with (
        users(database_url) as (user,),
        running_service(config, imap_ssl_context=dovecot.ssl_context()) as service,
    ):
        worker = WorkerThread(config, dovecot.ssl_context())
        try:
            mailbox_user = add_account(service, user, dovecot)
            messages = mailgen.generate(12, seed=43)
            dovecot.deliver(mailbox_user, [m.raw for m in messages])
            enable(service, user)

            status, attempts, imported, error = wait_for_run(database_url, trigger(service, user))
            assert (status, attempts, imported, error) == ("succeeded", 1, 12, None)
            with psycopg.connect(database_url) as conn:
                stored = conn.execute(
                    "SELECT sha256 FROM public.messages WHERE user_id = %s", (user,)
                ).fetchall()
                # The worker's own pool and procrastinate's connections both logged in as the member.
                sessions = conn.execute(
                    "SELECT DISTINCT application_name FROM pg_stat_activity WHERE usename = %s",
                    (member_login.name,),
                ).fetchall()
            assert sorted(bytes(h) for (h,) in stored) == sorted(m.sha256 for m in messages)
            assert {"autosync-worker", "autosync-queue"} <= {name for (name,) in sessions}
        finally:
            worker.stop()
    assert worker.error is None, f"worker crashed: {worker.error!r}"


def _once(base_url: str, method: str, path: str, **options: Any) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        return client.request(method, path, **options)


def _drop_queued_jobs(database_url: str, user: uuid.UUID) -> None:
    """The queue job an auto-sync request left for a worker that never comes in this test."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM public.procrastinate_jobs WHERE lock = %s", (f"user:{user}",))
