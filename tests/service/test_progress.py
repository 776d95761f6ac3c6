"""Progress of a running import: recorded on the run per batch, returned by the history API, shown by the CLI."""

from __future__ import annotations

import json
import subprocess
import uuid

import psycopg
import pytest

from harness import mailgen
from harness.service import Service, WorkerThread, worker_env
from sync_function import runs, sync
from sync_function.crypto import encrypt_password
from sync_function.db import open_pool
from tests.support.api import add_account, enable, trigger, wait_for_run
from tests.support.cli import AUTOSYNC
from tests.support.users import users

pytestmark = pytest.mark.docker


def _progress(database_url: str, run_id: uuid.UUID) -> tuple[str, int, int | None]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT status, progress_done, progress_total FROM public.sync_runs WHERE id = %s", (run_id,)
        ).fetchone()
    assert row is not None
    return row  # type: ignore[return-value]


def test_the_run_records_progress_after_every_batch(service: Service, database_url: str, dovecot) -> None:  # type: ignore[no-untyped-def]
    config = service.config.model_copy(update={"imap_batch_size": 10})
    with users(database_url) as (user,):
        mailbox_user = add_account(service, user, dovecot)
        dovecot.deliver(mailbox_user, [m.raw for m in mailgen.generate(45, seed=14)])
        with psycopg.connect(database_url, autocommit=True) as conn:
            run_id = runs.request_run(conn, user_id=user, trigger="manual", enqueue=False).run_id
        seen: list[tuple[int, int]] = []
        recorded: list[tuple[str, int, int | None]] = []

        def listen(done: int, total: int) -> None:
            seen.append((done, total))
            # What another session (the page polling the history) sees at this moment.
            recorded.append(_progress(database_url, run_id))

        pool = open_pool(config, name="test-progress", max_size=2)
        try:
            result = sync.run_attempt(
                pool,
                config,
                run_id=run_id,
                attempt=1,
                final=True,
                ssl_context=dovecot.ssl_context(),
                on_progress=listen,
            )
        finally:
            pool.close()
        assert result.imported == 45
        assert seen == [(0, 45), (10, 45), (20, 45), (30, 45), (40, 45), (45, 45)]
        assert recorded == [("running", done, total) for done, total in seen]

        history = service.client.get("/api/sync/history", headers=service.as_user(user)).json()["runs"]
        assert [(r["status"], r["progress_done"], r["progress_total"]) for r in history] == [
            ("succeeded", 45, 45)
        ]


def test_a_queued_run_shows_no_progress_then_the_worker_fills_it_in(
    service: Service,
    database_url: str,
    dovecot,
    worker: WorkerThread,  # type: ignore[no-untyped-def]
) -> None:
    with users(database_url) as (user,):
        mailbox_user = add_account(service, user, dovecot)
        dovecot.deliver(mailbox_user, [m.raw for m in mailgen.generate(12, seed=3)])
        enable(service, user)
        run_id = trigger(service, user)
        assert wait_for_run(database_url, run_id)[0] == "succeeded"
        assert _progress(database_url, uuid.UUID(run_id)) == ("succeeded", 12, 12)
        # A second run with nothing new: the mailbox is unchanged, so nothing to count.
        run_id = trigger(service, user)
        assert wait_for_run(database_url, run_id)[0] == "succeeded"
        assert _progress(database_url, uuid.UUID(run_id)) == ("succeeded", 0, None)


def test_operator_commands_list_users_show_history_and_sync_in_the_foreground(
    service: Service,
    database_url: str,
    dovecot,  # type: ignore[no-untyped-def]
) -> None:
    env = {**worker_env(service.config), "COLUMNS": "200"}
    with users(database_url) as (user,):
        mailbox_user = add_account(service, user, dovecot)
        dovecot.deliver(mailbox_user, [m.raw for m in mailgen.generate(25, seed=5)])
        enable(service, user)

        done = subprocess.run(
            [*AUTOSYNC, "sync", str(user)], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "25 imported" in done.stdout
        assert "25/25" in done.stderr  # the progress bar's last state

        listed = subprocess.run(
            [*AUTOSYNC, "users", "--json"], env=env, capture_output=True, text=True, timeout=60, check=True
        )
        mine = [row for row in json.loads(listed.stdout) if row["user_id"] == str(user)]
        assert len(mine) == 1
        assert (mine[0]["enabled"], mine[0]["interval_minutes"], mine[0]["last_status"]) == (
            True,
            5,
            "succeeded",
        )
        assert mine[0]["schedule"].endswith("-59/5 * * * *")
        assert mine[0]["next_run"] is not None

        shown = subprocess.run(
            [*AUTOSYNC, "history", str(user), "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        runs_shown = json.loads(shown.stdout)
        assert [
            (r["trigger"], r["status"], r["messages_imported"], r["progress_done"]) for r in runs_shown
        ] == [("manual", "succeeded", 25, 25)]

        # The tables people read: the user, their schedule, the run with its progress.
        table = subprocess.run(
            [*AUTOSYNC, "users"], env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout
        assert str(user) in table and "every 5 min" in table
        table = subprocess.run(
            [*AUTOSYNC, "history", str(user)], env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout
        assert "succeeded" in table and "25/25" in table

        refused = subprocess.run(
            [*AUTOSYNC, "history", "not-a-user"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode == 2
        assert "is not a user id" in refused.stderr


def test_sync_command_reports_a_failing_account_and_exits_1(service: Service, database_url: str) -> None:
    env = {**worker_env(service.config), "COLUMNS": "200"}
    with users(database_url) as (user,):
        with psycopg.connect(database_url, autocommit=True) as conn:
            # Port 9 on loopback: nothing listens (the API would refuse to add such an account).
            conn.execute(
                """INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)
                   VALUES (%s, '127.0.0.1', 9, 'plain', 'nobody', %s)""",
                (user, encrypt_password(service.config.encryption_key.get_secret_value(), "x")),
            )
        done = subprocess.run(
            [*AUTOSYNC, "sync", str(user)], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 1
        assert "import failed: nobody@127.0.0.1/INBOX" in done.stderr
