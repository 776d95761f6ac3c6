"""End to end: API → pg_cron → trigger_auto_sync → the function → queue worker → IMAP → public.messages.

Everything is real: Postgres with pg_cron and http, the function image running `serve` and
`worker` containers, a Dovecot server. The environment is the one `autosync env test` stood up
(AUTOSYNC_E2E_* variables), or else one this module stands up and removes itself.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, TypeVar

import docker
import httpx
import jwt
import psycopg
import pytest

from harness import local_env
from harness.dovecot import DovecotServer
from harness.ports import unique_name

pytestmark = pytest.mark.docker

T = TypeVar("T")


@pytest.fixture(scope="module")
def environment(docker_engine: docker.DockerClient) -> Iterator[local_env.Coordinates]:
    """The environment under test; one of our own is removed afterwards, and checked to be gone."""
    given = local_env.Coordinates.from_environ(os.environ)
    if given is not None:
        yield given
        return
    name = unique_name("autosync-e2e")
    with local_env.ephemeral(name) as env:
        assert env.worker_metrics, "the local environment's workers serve their metrics"
        yield env.coordinates()
    assert local_env.leftovers(name) == [], "teardown left containers or volumes behind"
    assert not local_env.state_file(name).exists()


def _eventually(probe: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = 0.5) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def _message(index: int, recipient: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Sender <sender@example.org>"
    message["To"] = recipient
    message["Subject"] = f"end-to-end message {index}"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="example.org")
    message.set_content(f"Body of message {index}.\n")
    return message.as_bytes()


def _token(user_id: uuid.UUID, secret: str) -> str:
    claims = {"sub": str(user_id), "role": "authenticated", "exp": datetime.now(UTC) + timedelta(minutes=10)}
    return jwt.encode(claims, secret, algorithm="HS256")


def _worker_counters(urls: tuple[str, ...]) -> dict[str, float]:
    """Counter samples (`name{labels}` → value) summed over every worker's /metrics."""
    totals: dict[str, float] = {}
    for url in urls:
        response = httpx.get(url, timeout=5)
        assert response.status_code == 200, url
        for line in response.text.splitlines():
            if line.startswith("autosync_") and "_total" in line.split(" ", 1)[0]:
                sample, value = line.rsplit(" ", 1)
                totals[sample] = totals.get(sample, 0.0) + float(value)
    totals.setdefault("autosync_messages_imported_total", 0.0)
    return totals


def _job(db: psycopg.Connection[Any], user_id: uuid.UUID) -> tuple[int, str] | None:
    row = db.execute(
        "SELECT jobid, schedule FROM cron.job WHERE jobname = %s", (f"auto-sync-{user_id}",)
    ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def test_cron_job_imports_mail_end_to_end(environment: local_env.Coordinates, dovecot: DovecotServer) -> None:
    api = httpx.Client(base_url=environment.api_url, timeout=30)
    db = psycopg.connect(environment.database_url, autocommit=True)
    user_id = uuid.uuid4()
    # Workers of an environment stood up elsewhere may not say where their metrics are.
    before = _worker_counters(environment.worker_metrics) if environment.worker_metrics else None
    try:
        db.execute("INSERT INTO auth.users (id, email) VALUES (%s, %s)", (user_id, f"{user_id}@example.org"))
        headers = {"Authorization": f"Bearer {_token(user_id, environment.jwt_secret)}"}

        mailbox_user, password = dovecot.new_user("e2e")
        delivered = [_message(index, f"{mailbox_user}@example.org") for index in range(3)]
        assert dovecot.deliver(mailbox_user, delivered) == 3

        added = api.post(
            "/api/email-accounts",
            headers=headers,
            json={
                "host": dovecot.host,
                "port": dovecot.port,
                "tls_mode": "plain",
                "username": mailbox_user,
                "password": password,
            },
        )
        assert added.status_code == 201, added.text

        saved = api.post(
            "/api/settings/save-auto-sync", headers=headers, json={"enabled": True, "interval_minutes": 5}
        )
        assert saved.status_code == 200, saved.text
        job = _job(db, user_id)
        assert job is not None
        job_id, schedule = job
        expected = db.execute("SELECT public.auto_sync_cron_schedule(%s, 5)", (user_id,)).fetchone()
        assert expected is not None and schedule == expected[0]

        # The staggered schedule fires once in five minutes. pg_cron (>= 1.5) also takes interval
        # schedules in seconds; re-pointing this one job keeps everything else real: its command,
        # its owner (pg_cron runs the job as the role that scheduled it, here the migrations'
        # owner, and only that role or a superuser may alter it, which is what DATABASE_URL is).
        since = db.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        db.execute("SELECT cron.alter_job(%s, schedule => '2 seconds')", (job_id,))

        def finished_runs() -> list[tuple[str, str]] | None:
            rows = db.execute(
                """SELECT status, coalesce(return_message, '') FROM cron.job_run_details
                   WHERE jobid = %s AND start_time >= %s AND status IN ('succeeded', 'failed')""",
                (job_id, since),
            ).fetchall()
            return rows or None

        runs = _eventually(finished_runs, timeout_s=30, what="a pg_cron run of the user's job")
        assert all(status == "succeeded" for status, _ in runs), runs

        # The function received the trigger: a cron run for this user was queued, and it succeeds.
        def cron_run_succeeded() -> bool:
            row = db.execute(
                "SELECT count(*) FROM public.sync_runs WHERE user_id = %s AND trigger = 'cron' AND status = 'succeeded'",
                (user_id,),
            ).fetchone()
            return bool(row and row[0])

        _eventually(cron_run_succeeded, timeout_s=60, what="a succeeded cron-triggered sync run")

        def imported() -> list[str] | None:
            rows = db.execute(
                "SELECT subject FROM public.messages WHERE user_id = %s ORDER BY uid", (user_id,)
            ).fetchall()
            return [row[0] for row in rows] if len(rows) >= 3 else None

        subjects = _eventually(imported, timeout_s=30, what="the delivered messages in public.messages")
        assert subjects == [f"end-to-end message {index}" for index in range(3)]

        # The deployed workers' own counters moved: scraped from the port each worker container serves.
        if before is not None:
            after = _worker_counters(environment.worker_metrics)
            assert after["autosync_messages_imported_total"] - before["autosync_messages_imported_total"] >= 3
            finished = 'autosync_runs_finished_total{status="succeeded"}'
            assert after[finished] - before.get(finished, 0.0) >= 1, (before, after)

        # Later runs keep succeeding and import nothing twice.
        time.sleep(3)
        assert all(status == "succeeded" for status, _ in finished_runs() or []), finished_runs()
        count = db.execute("SELECT count(*) FROM public.messages WHERE user_id = %s", (user_id,)).fetchone()
        assert count == (3,)

        # A new interval through the API: the same job, back on a staggered minute schedule.
        moved = api.post(
            "/api/settings/save-auto-sync", headers=headers, json={"enabled": True, "interval_minutes": 15}
        )
        assert moved.status_code == 200, moved.text
        job = _job(db, user_id)
        assert job is not None
        expected = db.execute("SELECT public.auto_sync_cron_schedule(%s, 15)", (user_id,)).fetchone()
        assert expected is not None
        assert job == (job_id, expected[0])
        assert re.fullmatch(r"\d{1,2}-59/15 \* \* \* \*", job[1]), job[1]

        # Disabled through the API: the cron job and its bookkeeping row are gone.
        off = api.post("/api/settings/save-auto-sync", headers=headers, json={"enabled": False})
        assert off.status_code == 200, off.text
        assert _job(db, user_id) is None
        assert db.execute(
            "SELECT count(*) FROM public.auto_sync_jobs WHERE user_id = %s", (user_id,)
        ).fetchone() == (0,)
    finally:
        # Matters when the environment is shared (`autosync env test`): leave no job firing.
        db.execute("SELECT public.unschedule_auto_sync(%s)", (user_id,))
        db.execute("DELETE FROM auth.users WHERE id = %s", (user_id,))
        db.close()
        api.close()
