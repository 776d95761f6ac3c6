"""auto_sync_slot_at_or_before agrees with the cron schedule pg_cron is given, and the failed-runs window."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.support.cron_spec import day_fire_minutes
from tests.support.db import as_role

pytestmark = pytest.mark.docker

SUPPORTED = [5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440]


@pytest.mark.parametrize("minutes", SUPPORTED)
def test_last_slot_is_the_latest_firing_of_the_cron_schedule(db: psycopg.Connection, minutes: int) -> None:
    for user in [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), *(uuid.uuid4() for _ in range(4))]:
        (schedule,) = db.execute("SELECT public.auto_sync_cron_schedule(%s, %s)", (user, minutes)).fetchone()  # type: ignore[misc]
        fires = day_fire_minutes(schedule)
        day = datetime(2026, 11, 28, tzinfo=UTC)
        # Each instant of the day (every 7 minutes and a second), against the schedule read independently.
        for offset in range(0, 1440, 7):
            at = day + timedelta(minutes=offset, seconds=1)
            (slot,) = db.execute(
                "SELECT public.auto_sync_slot_at_or_before(%s, %s, %s)", (user, minutes, at)
            ).fetchone()  # type: ignore[misc]
            earlier = [m for m in fires if m <= offset]
            expected = (
                day + timedelta(minutes=earlier[-1]) if earlier else day - timedelta(minutes=1440 - fires[-1])
            )
            assert slot == expected, (schedule, at)


def test_last_slot_refuses_an_unsupported_interval(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.execute("SELECT public.auto_sync_slot_at_or_before(%s, 7, now())", (uuid.uuid4(),))


def test_failed_cron_runs_is_for_service_role_only(db: psycopg.Connection) -> None:
    with as_role(db, "service_role"):
        rows = db.execute("SELECT * FROM public.auto_sync_failed_cron_runs(5)").fetchall()
        assert all(row[1] == "failed" for row in rows)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("SELECT count(*) FROM cron.job_run_details")
    for role in ("authenticated", "anon"):
        with as_role(db, role, sub=uuid.uuid4()):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute("SELECT * FROM public.auto_sync_failed_cron_runs(5)")
