"""Rotating the service key without a gap: the function accepts the current and the previous key while
the database still sends the previous one, and only the current key once the previous is dropped.

Real parts throughout: the API under uvicorn on loopback, and `trigger_auto_sync` run in the real
Postgres, whose `http` extension POSTs to the API with the stored key, exactly as a pg_cron run does.
`autosync doctor`'s check presents the stored key to the same API.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from cryptography.fernet import Fernet

from harness.service import Service, make_config, running_service
from infra import dbsettings
from sync_function import doctor
from sync_function.config import Config, ConfigError, load_config
from tests.support.db import delete_users, new_user

pytestmark = pytest.mark.docker

OLD = secrets.token_urlsafe(40)
NEW = secrets.token_urlsafe(40)


@pytest.fixture
def user(db: psycopg.Connection) -> Iterator[uuid.UUID]:
    user_id = new_user(db)  # auto-sync off: the trigger's POST answers 200 "skipped", which is enough here
    yield user_id
    delete_users(db, [user_id])


@pytest.fixture
def stored_key(database_url: str) -> Iterator[None]:
    yield
    dbsettings.reset(database_url)


def trigger(database_url: str, user_id: uuid.UUID) -> None:
    """What a pg_cron run does, in a new session as pg_cron's are (it sees the URL set since): raises
    when the function answers HTTP >= 400."""
    with psycopg.connect(database_url, autocommit=True) as session:
        session.execute("SELECT public.trigger_auto_sync(%s)", (user_id,))


def status(api: Service, key: str) -> int:
    response = api.client.get("/functions/v1/service-key", headers={"Authorization": f"Bearer {key}"})
    return response.status_code


def key_check(db: psycopg.Connection, api: Service) -> doctor.Check:
    return doctor.service_key_check(db, api.url, timeout_s=5)


def configure(database_url: str, api: Service, key: str) -> None:
    dbsettings.configure(database_url, function_url=api.url, service_key=key)


def test_a_rotation_never_refuses_pg_crons_runs(
    database_url: str, db: psycopg.Connection, user: uuid.UUID, stored_key: None
) -> None:
    before = make_config(database_url, service_key=OLD)
    window = make_config(database_url, service_key=NEW, service_key_previous=OLD)
    after = make_config(database_url, service_key=NEW)

    with running_service(before) as api:
        configure(database_url, api, OLD)
        trigger(database_url, user)
        assert status(api, NEW) == 401
        assert key_check(db, api).ok

    # Step 1: the function accepts NEW and OLD; the database still sends OLD.
    with running_service(window) as api:
        configure(database_url, api, OLD)
        trigger(database_url, user)
        assert status(api, OLD) == 200 and status(api, NEW) == 200
        assert status(api, secrets.token_urlsafe(40)) == 401
        check = key_check(db, api)
        assert check.ok and "rotation under way" in check.detail
        # Step 2: the database stores NEW; runs go on.
        configure(database_url, api, NEW)
        trigger(database_url, user)
        check = key_check(db, api)
        assert not check.ok and "AUTOSYNC_SERVICE_KEY_PREVIOUS" in check.detail
        assert OLD not in check.detail and NEW not in check.detail

    # Step 3: OLD dropped: only NEW opens the function.
    with running_service(after) as api:
        configure(database_url, api, NEW)
        trigger(database_url, user)
        assert status(api, NEW) == 200 and status(api, OLD) == 401
        answer = api.client.get("/functions/v1/service-key", headers={"Authorization": f"Bearer {NEW}"})
        assert answer.json() == {"success": True, "key": "current", "previous_configured": False}
        assert key_check(db, api).ok
        # `autosync doctor` runs this check once the function answers.
        (in_doctor,) = [c for c in doctor.run_checks(db) if c.name == "function accepts the stored key"]
        assert in_doctor.ok
        # Had the database kept OLD (the order reversed), pg_cron's runs would be refused; doctor says so.
        configure(database_url, api, OLD)
        with pytest.raises(psycopg.errors.ExternalRoutineException, match="401"):
            trigger(database_url, user)
        check = key_check(db, api)
        assert not check.ok and "refuses the database's key" in check.detail


def test_previous_key_presented_says_so(database_url: str) -> None:
    with running_service(make_config(database_url, service_key=NEW, service_key_previous=OLD)) as api:
        answer = api.client.get("/functions/v1/service-key", headers={"Authorization": f"Bearer {OLD}"})
        assert answer.json() == {"success": True, "key": "previous", "previous_configured": True}
        # The other service endpoints take it too (the operator view, pg_cron's trigger).
        overview = api.client.get("/api/operator/overview", headers={"Authorization": f"Bearer {OLD}"})
        assert overview.status_code == 200


def config_from(monkeypatch: pytest.MonkeyPatch, database_url: str, **env: str) -> Config:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("AUTOSYNC_SERVICE_KEY", NEW)
    monkeypatch.setenv("AUTOSYNC_JWT_SECRET", secrets.token_urlsafe(40))
    monkeypatch.setenv("AUTOSYNC_ENCRYPTION_KEY", Fernet.generate_key().decode())
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_config()


@pytest.mark.parametrize("previous", [None, ""])
def test_no_previous_key(monkeypatch: pytest.MonkeyPatch, previous: str | None) -> None:
    env = {} if previous is None else {"AUTOSYNC_SERVICE_KEY_PREVIOUS": previous}
    monkeypatch.delenv("AUTOSYNC_SERVICE_KEY_PREVIOUS", raising=False)
    config = config_from(monkeypatch, "postgresql://u:p@127.0.0.1/db", **env)
    assert config.service_keys() == (NEW,)


def test_a_short_previous_key_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as error:
        config_from(monkeypatch, "postgresql://u:p@127.0.0.1/db", AUTOSYNC_SERVICE_KEY_PREVIOUS="short")
    assert "AUTOSYNC_SERVICE_KEY_PREVIOUS" in str(error.value) and "short" not in str(error.value)
