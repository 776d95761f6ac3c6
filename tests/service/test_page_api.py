"""The page's files and the endpoints it added: intervals, next run, sync now, the operator overview."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from harness import mailgen
from harness.service import Service, WorkerThread
from sync_function.crypto import encrypt_password
from tests.support.api import add_account, enable, wait_for_run
from tests.support.users import users

pytestmark = pytest.mark.docker


def test_the_page_and_its_files_are_served_with_a_strict_policy(service: Service) -> None:
    page = service.client.get("/app/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    scripts = re.findall(r'<script src="/app/([\w.]+)"', page.text)
    assert scripts == ["app.js", "accounts.js"]
    for name, kind in [*((script, "text/javascript") for script in scripts), ("app.css", "text/css")]:
        asset = service.client.get(f"/app/{name}")
        assert (asset.status_code, asset.headers["content-type"].split(";")[0]) == (200, kind)
    for missing in ("/app/secret.py", "/app/..%2Fmain.py", "/app/index.html"):
        assert service.client.get(missing).status_code == 404
    assert service.client.get("/", follow_redirects=False).headers["location"] == "/app/"


def test_intervals_come_from_the_database_and_need_a_user(service: Service, database_url: str) -> None:
    assert service.client.get("/api/settings/intervals").status_code == 401
    with users(database_url) as (user,), psycopg.connect(database_url) as conn:
        (expected,) = conn.execute("SELECT public.auto_sync_supported_intervals()").fetchone()  # type: ignore[misc]
        got = service.client.get("/api/settings/intervals", headers=service.as_user(user))
        assert got.json() == {"success": True, "intervals": expected}


def test_next_run_is_within_one_interval_and_absent_when_off(service: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        loaded = service.client.get("/api/settings/next-run", headers=service.as_user(user)).json()
        assert loaded == {"success": True, "next_run": None}
        for minutes in (5, 120):
            service.client.post(
                "/api/settings/save-auto-sync",
                json={"enabled": True, "interval_minutes": minutes},
                headers=service.as_user(user),
            ).raise_for_status()
            loaded = service.client.get("/api/settings/next-run", headers=service.as_user(user)).json()
            next_run = datetime.fromisoformat(loaded["next_run"])
            now = datetime.now(UTC)
            assert now - timedelta(seconds=5) < next_run <= now + timedelta(minutes=minutes)
            assert next_run.second == 0


def _finish_by_hand(database_url: str, run_id: str) -> None:
    """What a worker would leave: the run over, its job gone from the queue."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM public.procrastinate_jobs WHERE id = (SELECT job_id FROM public.sync_runs WHERE id = %s)",
            (run_id,),
        )
        conn.execute("UPDATE public.sync_runs SET status = 'succeeded' WHERE id = %s", (run_id,))


def test_sync_now_queues_for_a_worker_refuses_a_second_and_is_rate_limited(
    service: Service,
    database_url: str,
    dovecot,  # type: ignore[no-untyped-def]
) -> None:
    with users(database_url) as (user,):
        mailbox_user = add_account(service, user, dovecot)
        dovecot.deliver(mailbox_user, [m.raw for m in mailgen.generate(8, seed=1)])
        assert service.client.post("/api/sync/now").status_code == 401
        queued = service.client.post("/api/sync/now", headers=service.as_user(user))
        assert queued.status_code == 202, queued.text
        run_id = queued.json()["run_id"]
        history = service.client.get("/api/sync/history", headers=service.as_user(user)).json()["runs"]
        assert [(r["id"], r["trigger"], r["status"]) for r in history] == [(run_id, "manual", "queued")]
        again = service.client.post("/api/sync/now", headers=service.as_user(user))
        assert again.status_code == 409
        assert run_id in again.json()["error"]
        # Finish the run by hand (no worker here), then use up the manual limit.
        _finish_by_hand(database_url, run_id)
        for _ in range(service.config.manual_import_limit - 1):
            ok = service.client.post("/api/sync/now", headers=service.as_user(user))
            assert ok.status_code == 202
            _finish_by_hand(database_url, ok.json()["run_id"])
        limited = service.client.post("/api/sync/now", headers=service.as_user(user))
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1


def test_sync_now_is_imported_by_the_worker(
    service: Service,
    database_url: str,
    dovecot,
    worker: WorkerThread,  # type: ignore[no-untyped-def]
) -> None:
    with users(database_url) as (user,):
        mailbox_user = add_account(service, user, dovecot)
        dovecot.deliver(mailbox_user, [m.raw for m in mailgen.generate(15, seed=2)])
        run_id = service.client.post("/api/sync/now", headers=service.as_user(user)).json()["run_id"]
        assert wait_for_run(database_url, run_id) == ("succeeded", 1, 15, None)


def test_operator_overview_needs_the_service_key_and_shows_a_failing_user(
    service: Service, database_url: str, worker: WorkerThread
) -> None:
    with users(database_url) as (user,):
        assert service.client.get("/api/operator/overview", headers=service.as_user(user)).status_code == 401
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                """INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)
                   VALUES (%s, '127.0.0.1', 9, 'plain', 'nobody', %s)""",
                (user, encrypt_password(service.config.encryption_key.get_secret_value(), "x")),
            )
        enable(service, user)
        run_id = service.client.post("/api/sync/now", headers=service.as_user(user)).json()["run_id"]
        assert wait_for_run(database_url, run_id)[0] == "failed"
        data = service.client.get("/api/operator/overview", headers=service.as_service).json()
        failing = {row["user_id"]: row for row in data["failing_users"]}
        assert "connection refused" in failing[str(user)]["error"]
        assert str(run_id) in {row["run_id"] for row in data["recent_runs"]}
        assert any(row["interval_minutes"] == 5 and row["users"] >= 1 for row in data["enabled_by_interval"])
        assert set(data["queue"]) == {"waiting", "running"}
        assert isinstance(data["failed_cron_runs"], list) and isinstance(data["lateness"], list)
