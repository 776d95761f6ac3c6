"""POST /api/settings/save-auto-sync and GET /api/settings/load-auto-sync, including bad input."""

from __future__ import annotations

import time
import uuid

import jwt
import psycopg
import pytest

from harness.service import Service
from tests.support.users import state_of, users

pytestmark = pytest.mark.docker

SAVE = "/api/settings/save-auto-sync"
LOAD = "/api/settings/load-auto-sync"


def test_load_returns_defaults_when_nothing_saved(service: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        response = service.client.get(LOAD, headers=service.as_user(user))
    assert response.status_code == 200
    assert response.json() == {"success": True, "settings": {"enabled": False, "interval_minutes": 60}}


def test_save_enables_schedules_and_load_reads_back(service: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        response = service.client.post(
            SAVE, json={"enabled": True, "interval_minutes": 30}, headers=service.as_user(user)
        )
        assert response.status_code == 200
        assert response.json() == {"success": True}
        settings, row, job = state_of(database_url, user)
        assert settings == (True, 30)
        assert row is not None and job is not None and row == (job[0], 30)
        with psycopg.connect(database_url) as conn:
            expected = conn.execute("SELECT public.auto_sync_cron_schedule(%s, 30)", (user,)).fetchone()
        assert expected is not None and job[1] == expected[0]

        loaded = service.client.get(LOAD, headers=service.as_user(user)).json()
        assert loaded == {"success": True, "settings": {"enabled": True, "interval_minutes": 30}}

        # Changing the interval moves the same job; disabling removes it and keeps the choice.
        service.client.post(
            SAVE, json={"enabled": True, "interval_minutes": 120}, headers=service.as_user(user)
        )
        _, row2, job2 = state_of(database_url, user)
        assert row2 == (job[0], 120) and job2 is not None and job2[0] == job[0]
        service.client.post(
            SAVE, json={"enabled": False, "interval_minutes": 120}, headers=service.as_user(user)
        )
        assert state_of(database_url, user) == ((False, 120), None, None)


BAD_BODIES = [
    ({"enabled": True, "interval_minutes": 45}, 400, "supported: 5, 6, 10"),
    ({"enabled": True, "interval_minutes": 0}, 400, "unsupported auto-sync interval: 0 minutes"),
    ({"enabled": True, "interval_minutes": -15}, 400, "unsupported"),
    ({"enabled": True, "interval_minutes": 7}, 400, "unsupported"),
    ({"enabled": True, "interval_minutes": 90}, 400, "unsupported"),
    ({"enabled": True, "interval_minutes": 10**12}, 422, "interval_minutes"),
    ({"enabled": True, "interval_minutes": 2**31 - 1}, 400, "unsupported"),
    ({"enabled": False, "interval_minutes": 45}, 400, "unsupported"),
    ({"enabled": True, "interval_minutes": None}, 422, "interval_minutes"),
    ({"enabled": True, "interval_minutes": "30"}, 422, "interval_minutes"),
    ({"enabled": True, "interval_minutes": 30.5}, 422, "interval_minutes"),
    ({"enabled": "yes", "interval_minutes": 30}, 422, "enabled"),
    ({"interval_minutes": 30}, 422, "enabled"),
    ({"enabled": True, "interval_minutes": 30, "user_id": str(uuid.uuid4())}, 422, "user_id"),
    ([], 422, "body"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_BODIES)
def test_bad_input_is_refused_and_changes_nothing(
    service: Service, database_url: str, body: object, status: int, message: str
) -> None:
    with users(database_url) as (user,):
        service.client.post(
            SAVE, json={"enabled": True, "interval_minutes": 15}, headers=service.as_user(user)
        )
        before = state_of(database_url, user)
        response = service.client.post(SAVE, json=body, headers=service.as_user(user))
        assert response.status_code == status, response.text
        assert response.json()["success"] is False
        assert message in response.json()["error"]
        assert state_of(database_url, user) == before


@pytest.mark.parametrize(
    "payload", [b"{not json", b"", b"\xff\xfe", b'{"enabled": true, "interval_minutes": 30']
)
def test_malformed_json_is_a_422(service: Service, database_url: str, payload: bytes) -> None:
    with users(database_url) as (user,):
        response = service.client.post(
            SAVE, content=payload, headers={**service.as_user(user), "Content-Type": "application/json"}
        )
        assert response.status_code == 422
        assert state_of(database_url, user) == (None, None, None)


def _tokens(service: Service, user: uuid.UUID) -> dict[str, str | None]:
    secret = service.config.jwt_secret.get_secret_value()
    now = int(time.time())
    return {
        "missing": None,
        "not bearer": f"Basic {service.token(user)}",
        "empty bearer": "Bearer",
        "garbage": "Bearer not.a.jwt",
        "forged": "Bearer " + jwt.encode({"sub": str(user), "exp": now + 60}, "x" * 40, algorithm="HS256"),
        "expired": "Bearer " + jwt.encode({"sub": str(user), "exp": now - 10}, secret, algorithm="HS256"),
        "no exp": "Bearer " + jwt.encode({"sub": str(user)}, secret, algorithm="HS256"),
        "alg none": "Bearer " + jwt.encode({"sub": str(user), "exp": now + 60}, None, algorithm="none"),  # type: ignore[arg-type]
        "HS512": "Bearer " + jwt.encode({"sub": str(user), "exp": now + 60}, secret, algorithm="HS512"),
        "sub not uuid": "Bearer " + jwt.encode({"sub": "admin", "exp": now + 60}, secret, algorithm="HS256"),
        "service key": f"Bearer {service.config.service_key.get_secret_value()}",
        # Valid signatures and a sub, but not a user's session (Supabase's anon and service_role keys).
        "role anon": "Bearer " + service.token(user, role="anon"),
        "role service_role": "Bearer " + service.token(user, role="service_role"),
        "no role": "Bearer " + jwt.encode({"sub": str(user), "exp": now + 60}, secret, algorithm="HS256"),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "not bearer",
        "empty bearer",
        "garbage",
        "forged",
        "expired",
        "no exp",
        "alg none",
        "HS512",
        "sub not uuid",
        "service key",
        "role anon",
        "role service_role",
        "no role",
    ],
)
def test_bad_tokens_get_401_and_change_nothing(service: Service, database_url: str, kind: str) -> None:
    with users(database_url) as (user,):
        header = _tokens(service, user)[kind]
        headers = {"Authorization": header} if header is not None else {}
        response = service.client.post(SAVE, json={"enabled": True, "interval_minutes": 30}, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert service.client.get(LOAD, headers=headers).status_code == 401
        assert state_of(database_url, user) == (None, None, None)


def test_token_for_unknown_user_is_403(service: Service) -> None:
    response = service.client.post(
        SAVE, json={"enabled": True, "interval_minutes": 30}, headers=service.as_user(uuid.uuid4())
    )
    assert response.status_code == 403
    assert "does not exist" in response.json()["error"]


def test_a_burst_of_saves_is_served_without_503(service: Service, database_url: str) -> None:
    """50 saves at once for one user: more than the pool's connections and the threadpool's slots.

    Regression: with the connection taken by a dependency, the requests waiting for the pool held
    every threadpool slot, the routes holding connections could not run, and after the pool's 3 s
    wait most of the burst got 503.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    with users(database_url) as (user,):
        headers = service.as_user(user)
        barrier = threading.Barrier(50)

        def save(index: int) -> int:
            with httpx.Client(base_url=service.url, timeout=60) as client:
                barrier.wait()
                body = {"enabled": index % 3 != 0, "interval_minutes": (15, 30, 60)[index % 3]}
                return client.post(SAVE, json=body, headers=headers).status_code

        with ThreadPoolExecutor(max_workers=50) as pool:
            statuses = list(pool.map(save, range(50)))
        assert statuses == [200] * 50


def test_disabling_without_an_interval_keeps_the_stored_one(service: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        headers = service.as_user(user)
        assert (
            service.client.post(
                SAVE, json={"enabled": True, "interval_minutes": 30}, headers=headers
            ).status_code
            == 200
        )
        response = service.client.post(SAVE, json={"enabled": False}, headers=headers)
        assert response.status_code == 200, response.text
        loaded = service.client.get(LOAD, headers=headers).json()
        assert loaded["settings"] == {"enabled": False, "interval_minutes": 30}
        assert state_of(database_url, user)[1:] == (None, None), "the cron job is removed"
        # Turning it back on without an interval comes back at the user's interval.
        assert service.client.post(SAVE, json={"enabled": True}, headers=headers).status_code == 200
        assert service.client.get(LOAD, headers=headers).json()["settings"] == {
            "enabled": True,
            "interval_minutes": 30,
        }
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT interval_minutes FROM public.auto_sync_jobs WHERE user_id = %s", (user,)
            ).fetchone()
        assert row == (30,)


def test_a_first_save_without_an_interval_gets_the_default(service: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        headers = service.as_user(user)
        assert service.client.post(SAVE, json={"enabled": False}, headers=headers).status_code == 200
        assert service.client.get(LOAD, headers=headers).json()["settings"] == {
            "enabled": False,
            "interval_minutes": 60,
        }
