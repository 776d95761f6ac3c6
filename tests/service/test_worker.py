"""The queue worker: imports through the real queue, retries with backoff, failure webhook."""

from __future__ import annotations

import itertools
import json
import uuid

import psycopg
import pytest

from harness import mailgen
from harness.http_recorder import Recorder
from harness.service import Service, WorkerThread
from sync_function.crypto import encrypt_password
from tests.support.api import add_account, enable, trigger, wait_for_run
from tests.support.users import users

pytestmark = pytest.mark.docker


def test_import_through_the_queue_then_only_what_is_new(
    service: Service,
    database_url: str,
    dovecot,
    worker: WorkerThread,  # type: ignore[no-untyped-def]
) -> None:
    with users(database_url) as (user,):
        mailbox_user = add_account(service, user, dovecot)
        messages = mailgen.generate(30, seed=7)
        dovecot.deliver(mailbox_user, [m.raw for m in messages])
        enable(service, user)

        status, attempts, imported, error = wait_for_run(database_url, trigger(service, user))
        assert (status, attempts, imported, error) == ("succeeded", 1, 30, None)
        with psycopg.connect(database_url) as conn:
            stored = conn.execute("SELECT sha256 FROM public.messages WHERE user_id = %s", (user,)).fetchall()
        assert sorted(bytes(h) for (h,) in stored) == sorted(m.sha256 for m in messages)
        # Mail stays unread on the server.
        assert all(b"\\Seen" not in flags for flags in dovecot.flags(mailbox_user).values())

        more = mailgen.generate(35, seed=7)[30:]
        dovecot.deliver(mailbox_user, [m.raw for m in more])
        status, attempts, imported, _ = wait_for_run(database_url, trigger(service, user))
        assert (status, attempts, imported) == ("succeeded", 1, 5)

        history = service.client.get("/api/sync/history", headers=service.as_user(user)).json()["runs"]
        assert [(r["status"], r["messages_imported"], r["attempts"]) for r in history] == [
            ("succeeded", 5, 1),
            ("succeeded", 30, 1),
        ]
        assert all(r["queued_at"] <= r["started_at"] <= r["finished_at"] for r in history)


def test_failures_are_retried_with_backoff_recorded_and_alerted(
    service: Service,
    database_url: str,
    dovecot,
    http_recorder: Recorder,  # type: ignore[no-untyped-def]
) -> None:
    settings = service.config.model_copy(
        update={
            "max_attempts": 3,
            "retry_base_seconds": 0.5,
            "failure_threshold": 2,
            "failure_webhook_url": http_recorder.url + "/alerts",
        }
    )
    failing_worker = WorkerThread(settings, dovecot.ssl_context())
    try:
        mailbox_password = "never-shown-" + uuid.uuid4().hex
        with users(database_url) as (user,):
            with psycopg.connect(database_url, autocommit=True) as conn:
                # Port 9 on loopback: nothing listens, so every attempt fails to connect.
                conn.execute(
                    """INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)
                       VALUES (%s, '127.0.0.1', 9, 'plain', 'nobody', %s)""",
                    (user, encrypt_password(settings.encryption_key.get_secret_value(), mailbox_password)),
                )
            enable(service, user)

            first = trigger(service, user)
            status, attempts, imported, error = wait_for_run(database_url, first)
            assert (status, attempts, imported) == ("failed", 3, 0)
            assert error is not None and "127.0.0.1:9" in error
            with psycopg.connect(database_url) as conn:
                tries = conn.execute(
                    "SELECT attempt, status, started_at FROM public.sync_run_attempts WHERE run_id = %s ORDER BY attempt",
                    (first,),
                ).fetchall()
            assert [(a, s) for a, s, _ in tries] == [(1, "failed"), (2, "failed"), (3, "failed")]
            gaps = [(b[2] - a[2]).total_seconds() for a, b in itertools.pairwise(tries)]
            assert gaps[0] >= 0.5 and gaps[1] >= 1.0, f"backoff not applied: {gaps}"
            assert http_recorder.requests == [], "one failed run is below the threshold"

            second = trigger(service, user)
            assert wait_for_run(database_url, second)[0] == "failed"
            (alert,) = http_recorder.wait_for(1, timeout_s=10)
            assert alert.path == "/alerts"
            payload = json.loads(alert.body)
            assert payload["event"] == "auto_sync.failing"
            assert payload["user_id"] == str(user) and payload["run_id"] == second
            assert payload["consecutive_failures"] == 2
            assert mailbox_password not in alert.body.decode() and mailbox_password not in error
    finally:
        failing_worker.stop()
    assert failing_worker.error is None


def test_a_wrong_password_fails_at_once_without_retries(
    service: Service,
    database_url: str,
    dovecot,
    worker: WorkerThread,  # type: ignore[no-untyped-def]
) -> None:
    name, _ = dovecot.new_user()
    with users(database_url) as (user,):
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                """INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)
                   VALUES (%s, %s, %s, 'plain', %s, %s)""",
                (
                    user,
                    dovecot.host,
                    dovecot.port,
                    name,
                    encrypt_password(service.config.encryption_key.get_secret_value(), "not-the-password"),
                ),
            )
        enable(service, user)
        status, attempts, _, error = wait_for_run(database_url, trigger(service, user))
        assert (status, attempts) == ("failed", 1), "retrying a rejected login cannot help"
        assert error is not None and "rejected the login" in error and "not-the-password" not in error
