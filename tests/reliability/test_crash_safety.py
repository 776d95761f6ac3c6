"""Crash safety: a 2,000-message import survives SIGKILLed workers, a Postgres restart and an IMAP
server going away mid-fetch, and ends with exactly the mailbox stored: no loss, no duplicate."""

from __future__ import annotations

import os
import random
import secrets
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from harness import docker_local, mailgen
from harness.dovecot import DovecotServer
from harness.service import Service, make_config, running_service
from infra import migrations
from infra.containers import PostgresConfig
from tests.support.api import add_account, enable, trigger
from tests.support.reliability import (
    FAST_RECOVERY,
    WorkerProcess,
    attempts_of,
    run_row,
    served,
    stored,
    wait_until,
    worker_process,
)
from tests.support.users import users

pytestmark = pytest.mark.docker

MESSAGES = 2000
# Kills at fresh progress, and the last messages no such kill waits for: between reaching its goal
# and the kill, the worker can store ~100 more (a 0-50 ms pause, small messages, batches of 10).
PROGRESS_KILLS = 10
KILL_RESERVE = 300
# Small batches: many commit boundaries for a kill to fall between, or inside.
BATCH = {"AUTOSYNC_IMAP_BATCH_SIZE": "10"}
# Reproducible: AUTOSYNC_CRASH_SEED=<the seed a failure printed> replays the same kill points.
SEED = int(os.environ.get("AUTOSYNC_CRASH_SEED", secrets.randbelow(1 << 30)))


def mailbox_with_mail(service: Service, user: uuid.UUID, dovecot: DovecotServer, seed: int) -> str:
    name = add_account(service, user, dovecot)
    dovecot.deliver(name, (m.raw for m in mailgen.generate(MESSAGES, seed=seed)))
    enable(service, user)
    return name


def assert_stored_equals_mailbox(
    database_url: str, user: uuid.UUID, dovecot: DovecotServer, name: str
) -> None:
    rows = stored(database_url, user)
    uids = [uid for uid, _ in rows]
    assert len(uids) == len(set(uids)), "a UID is stored twice"
    on_server = served(dovecot, name)
    assert len(on_server) == MESSAGES
    assert dict(rows) == on_server, "stored messages differ from the mailbox"
    with psycopg.connect(database_url) as conn:
        state = conn.execute(
            """SELECT s.last_uid, s.uidnext FROM public.mailbox_state AS s
               JOIN public.email_accounts AS a ON a.id = s.account_id WHERE a.user_id = %s""",
            (user,),
        ).fetchone()
    assert state == (max(on_server), dovecot.status(name)[b"UIDNEXT"])


def progress(conn: psycopg.Connection, user: uuid.UUID, run_id: str) -> int:
    """Messages stored so far, or more than MESSAGES once the run is over."""
    row = conn.execute(
        """SELECT (SELECT count(*) FROM public.messages WHERE user_id = %s),
                  (SELECT status IN ('succeeded', 'failed') FROM public.sync_runs WHERE id = %s)""",
        (user, run_id),
    ).fetchone()
    assert row is not None
    return MESSAGES + 1 if row[1] else int(row[0])


def wait_finished(database_url: str, run_id: str, timeout_s: float) -> tuple[str, int, int, str | None]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            row = run_row(database_url, run_id)
        except psycopg.OperationalError:  # the database is restarting
            row = None
        if row and row[0] in ("succeeded", "failed"):
            return row
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish within {timeout_s} s")


def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    service: Service, database_url: str, dovecot: DovecotServer, tmp_path: Path
) -> None:
    rng = random.Random(SEED)  # noqa: S311 (test schedule, not a secret)
    kills: list[tuple[str, int]] = []  # (how the moment was chosen, messages stored at the kill)
    with users(database_url) as (user,):
        name = mailbox_with_mail(service, user, dovecot, seed=SEED % 1000)
        worker = WorkerProcess(service.config, tmp_path / "worker.log", **FAST_RECOVERY, **BATCH)
        worker.start()
        try:
            run_id = trigger(service, user)
            # Each kill waits for a random amount of fresh progress, so that it lands inside a
            # running attempt; every third restart is also killed at a random moment while the new
            # worker starts up or waits to rescue the dead one's job.
            last = 0
            with psycopg.connect(database_url, autocommit=True) as watch:
                while (left := PROGRESS_KILLS - sum(1 for how, _ in kills if how == "progress")) > 0:
                    # The goals of the kills still to come must fit in what is left to import: a goal
                    # past the last message can never be met, and a kill after it would not land inside
                    # the import. A fast worker (and a restart's import before its kill) uses up room.
                    step = min(90, (MESSAGES - KILL_RESERVE - last) // left)
                    if step < 1:
                        break
                    goal = last + rng.randint(min(10, step), step)
                    wait_until(
                        lambda goal=goal: progress(watch, user, run_id) >= goal,
                        timeout_s=60,
                        every_s=0.005,
                        what=f"progress to {goal} messages (kill {len(kills) + 1}, seed {SEED})",
                    )
                    if progress(watch, user, run_id) > MESSAGES:
                        break  # finished: the kills must all land inside the import
                    time.sleep(rng.uniform(0, 0.05))  # somewhere inside a batch cycle
                    worker.kill()
                    last = progress(watch, user, run_id)
                    kills.append(("progress", last))
                    worker.start()
                    if len(kills) % 3 == 0:
                        # Within a second: before the new worker can rescue the job (its heartbeats
                        # stop counting after 1.5 s), so that this kill spends none of the import.
                        time.sleep(rng.uniform(0.1, 1.0))
                        worker.kill()
                        kills.append(("time", progress(watch, user, run_id)))
                        worker.start()
            status, attempts, _, error = wait_finished(database_url, run_id, timeout_s=120)
        finally:
            worker.stop()
        log = worker.log()
        assert (status, error) == ("succeeded", None), f"seed {SEED}: {error}\n{log[-3000:]}"
        progress_kills = [count for how, count in kills if how == "progress"]
        assert len(kills) >= 10, kills
        assert all(count < MESSAGES for _, count in kills), f"a kill came after the import ended: {kills}"
        assert_stored_equals_mailbox(database_url, user, dovecot, name)

        tries = attempts_of(database_url, run_id)
        assert tries[-1][1] == "succeeded" and len(tries) == attempts
        # Each progress kill cut a running attempt short.
        assert attempts >= len(progress_kills) + 1, (attempts, kills)
        # Every attempt cut short by a kill is closed as interrupted, none left 'running'.
        for attempt, attempt_status, attempt_error, _ in tries[:-1]:
            assert attempt_status == "failed" and attempt_error is not None, (attempt, attempt_status)
            assert "interrupted" in attempt_error
        with psycopg.connect(database_url) as conn:
            left = conn.execute(
                "SELECT count(*) FROM public.procrastinate_jobs WHERE lock = %s AND status IN ('todo', 'doing')",
                (f"user:{user}",),
            ).fetchone()
        assert left == (0,)
    print(f"seed {SEED}: {len(kills)} kills at {kills}; {attempts} attempts")


FOLDERS = ("INBOX", "Archive", "Lists.Python")


def test_sigkill_mid_import_of_a_multi_folder_account_stores_exactly_each_folder(
    service: Service, database_url: str, dovecot: DovecotServer, tmp_path: Path
) -> None:
    rng = random.Random(SEED + 1)  # noqa: S311 (test schedule, not a secret)
    per_folder = MESSAGES // len(FOLDERS)
    kills: list[int] = []
    with users(database_url) as (user,):
        name, password = dovecot.new_user("crash")
        for index, folder in enumerate(FOLDERS):
            messages = mailgen.generate(per_folder, seed=SEED % 1000 + index)
            dovecot.deliver(name, (m.raw for m in messages), mailbox=folder)
        response = service.client.post(
            "/api/email-accounts",
            json={
                "host": dovecot.host,
                "port": dovecot.port,
                "tls_mode": "plain",
                "username": name,
                "password": password,
                "all_folders": True,
            },
            headers=service.as_user(user),
        )
        assert response.status_code == 201, response.text
        enable(service, user)
        total = per_folder * len(FOLDERS)
        worker = WorkerProcess(service.config, tmp_path / "worker.log", **FAST_RECOVERY, **BATCH)
        worker.start()
        try:
            run_id = trigger(service, user)
            with psycopg.connect(database_url, autocommit=True) as watch:
                # Kills spread over the whole import, so that some land in the second and third folder,
                # but not so near its end that the messages stored before the kill finish it.
                for goal in sorted(rng.sample(range(50, total - KILL_RESERVE), 6)):
                    wait_until(
                        lambda goal=goal: progress(watch, user, run_id) >= goal,
                        timeout_s=60,
                        every_s=0.005,
                        what=f"progress to {goal} messages (seed {SEED})",
                    )
                    at = progress(watch, user, run_id)
                    if at >= total:
                        break
                    time.sleep(rng.uniform(0, 0.05))
                    worker.kill()
                    kills.append(progress(watch, user, run_id))
                    worker.start()
            status, _, _, error = wait_finished(database_url, run_id, timeout_s=120)
        finally:
            worker.stop()
        assert (status, error) == ("succeeded", None), f"seed {SEED}: {error}\n{worker.log()[-3000:]}"
        assert len(kills) >= 4 and all(count < total for count in kills), kills
        with psycopg.connect(database_url) as conn:
            for folder in FOLDERS:
                rows = conn.execute(
                    """SELECT uid, encode(sha256, 'hex') FROM public.messages
                       WHERE user_id = %s AND mailbox = %s ORDER BY uid""",
                    (user, folder),
                ).fetchall()
                uids = [uid for uid, _ in rows]
                assert len(uids) == len(set(uids)), f"a UID of {folder} is stored twice"
                on_server = served(dovecot, name, folder)
                assert len(on_server) == per_folder
                assert dict(rows) == on_server, f"{folder}: stored messages differ from the folder"
                state = conn.execute(
                    """SELECT s.last_uid, s.uidnext FROM public.mailbox_state AS s
                       JOIN public.email_accounts AS a ON a.id = s.account_id
                       WHERE a.user_id = %s AND s.mailbox = %s""",
                    (user, folder),
                ).fetchone()
                assert state == (max(on_server), dovecot.status(name, folder)[b"UIDNEXT"])
    print(f"seed {SEED}: multi-folder kills at {kills}")


@pytest.fixture
def own_database(fresh_postgres: PostgresConfig) -> str:
    migrations.upgrade(fresh_postgres.url)
    return fresh_postgres.url


def test_postgres_restart_mid_import(  # type: ignore[no-untyped-def]
    own_database: str, fresh_postgres: PostgresConfig, dovecot: DovecotServer, docker_engine, tmp_path: Path
) -> None:
    settings = make_config(own_database)
    container = docker_engine.containers.get(fresh_postgres.name)  # this test's own container
    with running_service(settings) as api, users(own_database) as (user,):
        name = mailbox_with_mail(api, user, dovecot, seed=SEED % 997)
        with worker_process(settings, tmp_path / "worker.log", **FAST_RECOVERY, **BATCH) as worker:
            run_id = trigger(api, user)
            mark = random.Random(SEED).randint(100, 1200)  # noqa: S311 (test schedule, not a secret)
            with psycopg.connect(own_database, autocommit=True) as watch:
                wait_until(
                    lambda: progress(watch, user, run_id) >= mark,
                    timeout_s=90,
                    every_s=0.005,
                    what=f"progress to {mark} messages",
                )
                at_restart = progress(watch, user, run_id)
                # Fast shutdown (the signal `docker restart` sends this image): every session is cut.
                container.kill(signal="SIGINT")
            container.wait(timeout=60)
            container.start()
            docker_local.wait_healthy(container, timeout_s=60)
            # The API never stopped serving, and is ready again once Postgres is.
            assert api.client.get("/healthz").status_code == 200
            wait_until(lambda: api.client.get("/readyz").status_code == 200, timeout_s=30, what="readyz")
            status, _, _, error = wait_finished(own_database, run_id, timeout_s=120)
            assert (status, error) == ("succeeded", None), worker.log()[-3000:]
            # The same worker process takes the next import: it neither exited nor went deaf.
            second = trigger(api, user)
            assert wait_finished(own_database, second, timeout_s=60)[:3] == ("succeeded", 1, 0), worker.log()[
                -3000:
            ]
            assert worker.alive() and worker.starts == 1
        assert at_restart < MESSAGES, "the restart came after the import ended"
        assert_stored_equals_mailbox(own_database, user, dovecot, name)


def test_imap_server_stops_mid_fetch_then_retry_succeeds(
    service: Service, database_url: str, dovecot: DovecotServer, tmp_path: Path
) -> None:
    with users(database_url) as (user,):
        name = mailbox_with_mail(service, user, dovecot, seed=SEED % 991)
        with worker_process(service.config, tmp_path / "worker.log", **FAST_RECOVERY, **BATCH) as worker:
            run_id = trigger(service, user)
            with psycopg.connect(database_url, autocommit=True) as watch:
                wait_until(
                    lambda: progress(watch, user, run_id) >= 400, timeout_s=60, every_s=0.005, what="progress"
                )
                # Killed, not stopped: a graceful stop takes longer than the rest of the import.
                dovecot.container.kill()
                at_stop = progress(watch, user, run_id)
            try:
                wait_until(
                    lambda: any(a[1] == "failed" for a in attempts_of(database_url, run_id)),
                    timeout_s=30,
                    what="the attempt to fail",
                )
                status = run_row(database_url, run_id)[0]
                # Failed cleanly: recorded, back in the queue for a retry, the reason readable.
                assert status in ("queued", "running")
            finally:
                dovecot.start()
            final = wait_finished(database_url, run_id, timeout_s=90)
            assert worker.alive()
        assert final[0] == "succeeded", worker.log()[-3000:]
        assert at_stop < MESSAGES
        first = attempts_of(database_url, run_id)[0]
        assert first[1] == "failed" and first[2] is not None
        assert f"{name}@{dovecot.host}/INBOX" in first[2]
        assert any(word in first[2] for word in ("broke", "network error", "connection refused")), first[2]
        assert dovecot.users[name] not in first[2]
        assert_stored_equals_mailbox(database_url, user, dovecot, name)
