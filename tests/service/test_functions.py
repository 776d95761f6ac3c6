"""POST /functions/v1/auto-sync and /functions/v1/import-emails: service key only, dedupe, limits."""

from __future__ import annotations

import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from harness.service import Service
from tests.support.users import users

pytestmark = pytest.mark.docker

AUTO_SYNC = "/functions/v1/auto-sync"
IMPORT = "/functions/v1/import-emails"


def enable(service: Service, user: uuid.UUID, minutes: int = 30) -> None:
    response = service.client.post(
        "/api/settings/save-auto-sync",
        json={"enabled": True, "interval_minutes": minutes},
        headers=service.as_user(user),
    )
    assert response.status_code == 200


def runs_of(database_url: str, user: uuid.UUID) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT id, status, trigger, job_id FROM public.sync_runs WHERE user_id = %s ORDER BY queued_at",
            (user,),
        ).fetchall()


def jobs_of(database_url: str, user: uuid.UUID) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT id, status, task_name, lock FROM public.procrastinate_jobs WHERE lock = %s",
            (f"user:{user}",),
        ).fetchall()


def cleanup_runs(database_url: str, user: uuid.UUID) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM public.procrastinate_jobs WHERE lock = %s", (f"user:{user}",))


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key-wrong-key-wrong-key-wrong"}, {"Authorization": "Basic abc"}],
)
def test_requires_the_service_key(service: Service, database_url: str, headers: dict[str, str]) -> None:
    with users(database_url) as (user,):
        for path in (AUTO_SYNC, IMPORT):
            response = service.client.post(path, json={"user_id": str(user)}, headers=headers)
            assert response.status_code == 401
        assert runs_of(database_url, user) == []


def test_a_user_token_is_not_the_service_key(service: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        enable(service, user)
        response = service.client.post(AUTO_SYNC, json={"user_id": str(user)}, headers=service.as_user(user))
        assert response.status_code == 401
        assert runs_of(database_url, user) == []


def test_disabled_user_is_skipped(service: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        response = service.client.post(AUTO_SYNC, json={"user_id": str(user)}, headers=service.as_service)
        assert response.status_code == 200
        assert response.json() == {
            "success": True,
            "skipped": True,
            "reason": "auto-sync is disabled for this user",
        }
        assert runs_of(database_url, user) == []


def test_enabled_user_gets_one_queued_run_and_job(service: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        enable(service, user)
        try:
            response = service.client.post(AUTO_SYNC, json={"user_id": str(user)}, headers=service.as_service)
            assert response.status_code == 202
            body = response.json()
            assert body["success"] is True and body["queued"] is True
            ((run_id, status, trigger, job_id),) = runs_of(database_url, user)
            assert str(run_id) == body["run_id"] and status == "queued" and trigger == "cron"
            ((procrastinate_id, job_status, task, _),) = jobs_of(database_url, user)
            assert procrastinate_id == job_id and job_status == "todo" and task == "autosync.import_user"
        finally:
            cleanup_runs(database_url, user)


def test_concurrent_triggers_enqueue_one_import(service: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        enable(service, user)
        try:
            with (
                ThreadPoolExecutor(max_workers=20) as pool,
                httpx.Client(base_url=service.url, timeout=30) as client,
            ):
                responses = list(
                    pool.map(
                        lambda _: client.post(
                            AUTO_SYNC, json={"user_id": str(user)}, headers=service.as_service
                        ),
                        range(20),
                    )
                )
            assert {r.status_code for r in responses} == {202}
            assert len({r.json()["run_id"] for r in responses}) == 1
            assert sum(r.json()["queued"] for r in responses) == 1
            assert len(runs_of(database_url, user)) == 1
            assert len(jobs_of(database_url, user)) == 1
        finally:
            cleanup_runs(database_url, user)


def test_answers_in_milliseconds(service: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        enable(service, user)
        try:
            timings = []
            for _ in range(20):
                started = time.perf_counter()
                response = service.client.post(
                    AUTO_SYNC, json={"user_id": str(user)}, headers=service.as_service
                )
                timings.append(time.perf_counter() - started)
                assert response.status_code == 202
            # Not a benchmark: a guard that no import work happens in the request (an import takes seconds).
            assert statistics.median(timings) < 0.5
        finally:
            cleanup_runs(database_url, user)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"user_id": "not-a-uuid"}, 422),
        ({}, 422),
        ({"user_id": None}, 422),
        ({"user_id": str(uuid.uuid4()), "extra": 1}, 422),
        ({"user_id": str(uuid.uuid4())}, 404),
    ],
)
def test_bad_bodies(service: Service, body: dict[str, object], status: int) -> None:
    for path in (AUTO_SYNC, IMPORT):
        response = service.client.post(path, json=body, headers=service.as_service)
        assert response.status_code == status, response.text
        assert response.json()["success"] is False


def test_manual_import_is_rate_limited(service: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        limit = service.config.manual_import_limit
        for _ in range(limit):
            response = service.client.post(IMPORT, json={"user_id": str(user)}, headers=service.as_service)
            assert response.status_code == 200, response.text
            assert response.json()["accounts"] == 0
        response = service.client.post(IMPORT, json={"user_id": str(user)}, headers=service.as_service)
        assert response.status_code == 429
        retry_after = int(response.headers["retry-after"])
        assert 1 <= retry_after <= service.config.manual_import_window_seconds
        assert f"try again in {retry_after} s" in response.json()["error"]
        assert len(runs_of(database_url, user)) == limit
