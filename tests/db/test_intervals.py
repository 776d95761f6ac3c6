"""Supported intervals, their refusal messages, and the staggered schedules."""

from __future__ import annotations

import uuid
from collections import Counter

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.cron_spec import spacings

pytestmark = pytest.mark.docker

SUPPORTED = [5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440]


def test_supported_intervals_are_exactly_the_even_spacings(db: psycopg.Connection) -> None:
    (supported,) = db.execute("SELECT public.auto_sync_supported_intervals()").fetchone()  # type: ignore[misc]
    assert supported == SUPPORTED
    # Independently derived: every m in 1..1440 whose schedule can fire evenly all day, from 5 up.
    evenly = [m for m in range(5, 1441) if (m <= 60 and 60 % m == 0) or (m % 60 == 0 and 1440 % m == 0)]
    assert supported == evenly


@pytest.mark.parametrize("bad", [0, -5, 1, 4, 7, 45, 90, 100, 1000, 1439, 1441, 2880, 2**31 - 1, None])
def test_unsupported_interval_is_refused_with_the_list(db: psycopg.Connection, bad: int | None) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
        db.execute("SELECT public.auto_sync_check_interval(%s)", (bad,))
    message = raised.value.diag.message_primary or ""
    assert f"unsupported auto-sync interval: {'null' if bad is None else bad} minutes" in message
    assert "5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440" in message


@settings(max_examples=200, deadline=None)
@given(user=st.uuids(), minutes=st.sampled_from(SUPPORTED))
def test_every_schedule_fires_at_exactly_its_interval(
    database_url: str, user: uuid.UUID, minutes: int
) -> None:
    with psycopg.connect(database_url) as conn:
        (schedule,) = conn.execute(
            "SELECT public.auto_sync_cron_schedule(%s, %s)", (user, minutes)
        ).fetchone()  # type: ignore[misc]
    assert spacings(schedule) == {minutes}, schedule


def test_schedule_is_stable_per_user(db: psycopg.Connection) -> None:
    user = uuid.uuid4()
    first = db.execute("SELECT public.auto_sync_cron_schedule(%s, 15)", (user,)).fetchone()
    again = db.execute("SELECT public.auto_sync_cron_schedule(%s, 15)", (user,)).fetchone()
    assert first == again


@pytest.mark.parametrize("minutes", [15, 60, 120])
def test_users_spread_over_the_interval(db: psycopg.Connection, minutes: int) -> None:
    users = [uuid.uuid4() for _ in range(3000)]
    rows = db.execute(
        "SELECT public.auto_sync_cron_schedule(u, %s) FROM unnest(%s::uuid[]) AS u", (minutes, users)
    ).fetchall()
    first_fire = Counter()
    for (schedule,) in rows:
        minute, hour = schedule.split()[:2]
        start_minute = int(minute.split("-")[0])
        start_hour = int(hour.split("-")[0]) if hour != "*" else 0
        first_fire[start_hour * 60 + start_minute] += 1
    assert len(first_fire) == minutes, "every slot of the interval is used"
    mean = len(users) / minutes
    assert max(first_fire.values()) < 2 * mean
    assert first_fire[0] < 2 * mean, "no pile-up at :00"
