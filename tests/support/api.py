"""Calls every service test makes through the real API: add an account, turn auto-sync on, trigger, wait."""

from __future__ import annotations

import time
import uuid

import psycopg

from harness.dovecot import DovecotServer
from harness.service import Service

AUTO_SYNC = "/functions/v1/auto-sync"


def add_account(service: Service, user: uuid.UUID, dovecot: DovecotServer) -> str:
    name, password = dovecot.new_user()
    response = service.client.post(
        "/api/email-accounts",
        json={
            "host": dovecot.host,
            "port": dovecot.port,
            "tls_mode": "plain",
            "username": name,
            "password": password,
        },
        headers=service.as_user(user),
    )
    assert response.status_code == 201, response.text
    return str(name)


def enable(service: Service, user: uuid.UUID) -> None:
    response = service.client.post(
        "/api/settings/save-auto-sync",
        json={"enabled": True, "interval_minutes": 5},
        headers=service.as_user(user),
    )
    assert response.status_code == 200


def wait_for_run(
    database_url: str, run_id: str, *, timeout_s: float = 60
) -> tuple[str, int, int, str | None]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT status, attempts, messages_imported, error FROM public.sync_runs WHERE id = %s",
                (run_id,),
            ).fetchone()
        if row and row[0] in ("succeeded", "failed"):
            return row  # type: ignore[return-value]
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish within {timeout_s} s (last: {row})")


def trigger(service: Service, user: uuid.UUID) -> str:
    response = service.client.post(AUTO_SYNC, json={"user_id": str(user)}, headers=service.as_service)
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])
