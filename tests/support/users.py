"""Shared helpers for service tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from tests.support.db import cron_jobs, delete_users, job_rows, new_user


@contextmanager
def users(database_url: str, count: int = 1) -> Iterator[list[uuid.UUID]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        created = [new_user(conn) for _ in range(count)]
    try:
        yield created
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for user_id in created:
                conn.execute("SELECT public.unschedule_auto_sync(%s)", (user_id,))
            delete_users(conn, created)


def state_of(database_url: str, user_id: uuid.UUID) -> tuple[object, ...]:
    """Everything auto-sync stores for a user: settings row, jobs row, cron job."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        settings = conn.execute(
            "SELECT enabled, interval_minutes FROM public.user_settings WHERE user_id = %s", (user_id,)
        ).fetchone()
        return settings, job_rows(conn).get(user_id), cron_jobs(conn).get(f"auto-sync-{user_id}")
