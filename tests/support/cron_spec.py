"""A minimal reading of five-field cron schedules, enough to list when one fires in a day.

Used to check, independently of the SQL that builds them, that generated schedules fire at an
even spacing. Supports `*`, numbers, lists, ranges and steps (`a-b/s`, `*/s`, `a/s`).
"""

from __future__ import annotations

import itertools


def _field(spec: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in spec.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, end = low, high
        elif "-" in base:
            start_text, end_text = base.split("-")
            start, end = int(start_text), int(end_text)
        else:
            start = int(base)
            end = high if step_text else start
        if not (low <= start <= end <= high) or step < 1:
            raise ValueError(f"field {part!r} out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def day_fire_minutes(schedule: str) -> list[int]:
    """Minutes after midnight at which `schedule` fires on an ordinary day."""
    minute, hour, day, month, weekday = schedule.split()
    if (day, month, weekday) != ("*", "*", "*"):
        raise ValueError("only daily-repeating schedules are supported here")
    minutes = _field(minute, 0, 59)
    hours = _field(hour, 0, 23)
    return sorted(h * 60 + m for h in hours for m in minutes)


def spacings(schedule: str) -> set[int]:
    """The gaps between consecutive firings, wrapping around midnight."""
    fires = day_fire_minutes(schedule)
    gaps = {b - a for a, b in itertools.pairwise(fires)}
    gaps.add(fires[0] + 1440 - fires[-1])
    return gaps
