"""Concurrency: racing saves leave one job and one row matching the last commit; racing triggers
make one import; 200 users saving at once all end consistent."""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from harness import mailgen
from harness.dovecot import DovecotServer
from harness.service import Service, WorkerThread
from tests.support.api import add_account, enable, wait_for_run
from tests.support.db import cron_jobs, job_rows
from tests.support.users import users

pytestmark = pytest.mark.docker

SAVE = "/api/settings/save-auto-sync"
SUPPORTED = [5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440]


def expected_schedule(conn: psycopg.Connection, user: uuid.UUID, minutes: int) -> str:
    row = conn.execute("SELECT public.auto_sync_cron_schedule(%s, %s)", (user, minutes)).fetchone()
    assert row is not None
    return str(row[0])


def assert_consistent(conn: psycopg.Connection, user: uuid.UUID) -> tuple[bool, int]:
    """user_settings, auto_sync_jobs and cron.job agree for `user`; returns the saved setting."""
    settings = conn.execute(
        "SELECT enabled, interval_minutes FROM public.user_settings WHERE user_id = %s", (user,)
    ).fetchone()
    assert settings is not None
    enabled, minutes = settings
    named = conn.execute(
        "SELECT count(*) FROM cron.job WHERE jobname = %s", (f"auto-sync-{user}",)
    ).fetchone()
    rows = conn.execute("SELECT count(*) FROM public.auto_sync_jobs WHERE user_id = %s", (user,)).fetchone()
    job = cron_jobs(conn).get(f"auto-sync-{user}")
    if enabled:
        assert named == (1,) and rows == (1,)
        assert job is not None and job[3] is True
        assert job_rows(conn)[user] == (job[0], minutes)
        assert job[1] == expected_schedule(conn, user, minutes)
    else:
        assert named == (0,) and rows == (0,)
    return bool(enabled), int(minutes)


@pytest.mark.parametrize("mix_disable", [False, True], ids=["all-enable", "enable-and-disable"])
def test_50_concurrent_saves_for_one_user(service: Service, database_url: str, mix_disable: bool) -> None:
    rng = random.Random(50 + mix_disable)  # noqa: S311 (test data, not a secret)
    with users(database_url) as (user,):
        bodies = [
            {"enabled": not (mix_disable and rng.random() < 0.3), "interval_minutes": rng.choice(SUPPORTED)}
            for _ in range(50)
        ]
        barrier = threading.Barrier(50)
        headers = service.as_user(user)
        retried = [0]

        def save(body: dict[str, object]) -> tuple[int, str]:
            with httpx.Client(base_url=service.url, timeout=60) as client:
                barrier.wait()
                # Saves for one user run one at a time. Should the pool ever be exhausted for longer
                # than its 3 s wait, the answer is a clean 503 (nothing committed, Retry-After), and
                # a client retries it, as this one does (tests/service: a burst gets none).
                for _ in range(30):
                    response = client.post(SAVE, json=body, headers=headers)
                    if response.status_code != 503:
                        break
                    assert "unavailable" in response.json()["error"] and response.headers["retry-after"]
                    retried[0] += 1
                    time.sleep(rng.uniform(0.1, 0.5))
                return response.status_code, response.text

        with ThreadPoolExecutor(max_workers=50) as pool:
            statuses = list(pool.map(save, bodies))
        assert [status for status, _ in statuses] == [200] * 50, {text for _, text in statuses}
        committed = bodies
        with psycopg.connect(database_url, autocommit=True) as conn:
            final = assert_consistent(conn, user)
            # The last committed save wins, whole: one of the bodies that succeeded, never a blend.
            assert {"enabled": final[0], "interval_minutes": final[1]} in committed
            # And what the user reads back is that same setting.
            loaded = service.client.get("/api/settings/load-auto-sync", headers=headers).json()["settings"]
            assert (loaded["enabled"], loaded["interval_minutes"]) == final
        print(f"50 saves, {retried[0]} retried after a 503")


def test_20_concurrent_triggers_make_one_import(
    service: Service, database_url: str, dovecot: DovecotServer, worker: WorkerThread
) -> None:
    """15 cron triggers and 5 manual imports race; one run imports every message exactly once."""
    with users(database_url) as (user,):
        name = add_account(service, user, dovecot)
        dovecot.deliver(name, [m.raw for m in mailgen.generate(300, seed=20)])
        enable(service, user)
        barrier = threading.Barrier(20)

        def call(index: int) -> httpx.Response:
            path = "/functions/v1/auto-sync" if index < 15 else "/functions/v1/import-emails"
            with httpx.Client(base_url=service.url, timeout=60) as client:
                barrier.wait()
                return client.post(path, json={"user_id": str(user)}, headers=service.as_service)

        with ThreadPoolExecutor(max_workers=20) as pool:
            responses = list(pool.map(call, range(20)))
        cron = [r for r in responses[:15]]
        manual = [r for r in responses[15:]]
        with psycopg.connect(database_url) as conn:
            run_ids = [
                str(r)
                for (r,) in conn.execute(
                    "SELECT id FROM public.sync_runs WHERE user_id = %s", (user,)
                ).fetchall()
            ]
        assert len(run_ids) == 1, f"{len(run_ids)} runs for 20 racing triggers"
        # Cron triggers all answer with that one run; manual imports either ran it or got a 409.
        assert {r.status_code for r in cron} == {202}
        assert {r.json()["run_id"] for r in cron} <= set(run_ids)
        assert sum(r.json()["queued"] for r in cron) <= 1
        assert all(r.status_code in (200, 409) for r in manual), [r.text for r in manual]
        assert sum(r.status_code == 200 for r in manual) + sum(r.json()["queued"] for r in cron) == 1
        assert wait_for_run(database_url, run_ids[0])[0] == "succeeded"
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*), count(DISTINCT uid) FROM public.messages WHERE user_id = %s", (user,)
            ).fetchone()
        assert row == (300, 300)
        # Dovecot saw the bodies fetched once: one import, not several racing ones.
        assert sum(dovecot.bodies_fetched(name, sessions=1)) == 300


def test_200_users_saving_at_once(service: Service, database_url: str) -> None:
    rng = random.Random(200)  # noqa: S311 (test data, not a secret)
    with users(database_url, 200) as user_ids:
        wanted = {
            user: {"enabled": rng.random() < 0.8, "interval_minutes": rng.choice(SUPPORTED)}
            for user in user_ids
        }
        tokens = {user: service.as_user(user) for user in user_ids}

        def save(user: uuid.UUID) -> int:
            return service_client_post(service, wanted[user], tokens[user])

        try:
            with ThreadPoolExecutor(max_workers=40) as pool:
                statuses = list(pool.map(save, user_ids))
        finally:
            while _clients:
                _clients.pop().close()
        assert statuses == [200] * 200
        with psycopg.connect(database_url, autocommit=True) as conn:
            for user in user_ids:
                assert assert_consistent(conn, user) == (
                    wanted[user]["enabled"],
                    wanted[user]["interval_minutes"],
                )
            jobs = cron_jobs(conn)
        assert sum(f"auto-sync-{u}" in jobs for u in user_ids) == sum(w["enabled"] for w in wanted.values())


_local = threading.local()
_clients: list[httpx.Client] = []


def service_client_post(service: Service, body: dict[str, object], headers: dict[str, str]) -> int:
    """One client per thread: connection reuse without sharing a client across threads."""
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(base_url=service.url, timeout=60)
        _clients.append(client)
    return client.post(SAVE, json=body, headers=headers).status_code
