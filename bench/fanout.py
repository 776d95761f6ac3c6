"""Scheduling at scale, pg_cron's fan-out at the busiest minute, and trigger latency.

Everything goes through the project's SQL: users are scheduled with `schedule_auto_sync`, pg_cron
runs `trigger_auto_sync`, which POSTs to the real sync function (FastAPI under uvicorn, answering
202 after it queues the run) in its own process. A delay is measured from the cron slot to the
`sync_runs.queued_at` the function stamps as it accepts the trigger.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.env import BenchEnv, new_users
from bench.filler import Filler

# The users' jobs, recognised by the schema's own naming function.
JOBS = "public.auto_sync_job_user(jobname) IS NOT NULL"
# Seconds between the schedule change and the slot: pg_cron reloads its job cache on its next loop.
MIN_LEAD_S = 6.0
QUIET_S = 5.0


def schedule(conn: psycopg.Connection[Any], users: list[uuid.UUID], interval: int) -> float:
    """`schedule_auto_sync` once per user, each its own transaction (as the settings API does).

    psycopg pipelines executemany, so this is the database's cost, not round trips'.
    """
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.executemany("SELECT public.schedule_auto_sync(%s, %s)", [(u, interval) for u in users])
    return time.perf_counter() - started


def scheduling_at_scale(
    env: BenchEnv, levels: list[int], *, interval: int
) -> tuple[dict[int, float], list[uuid.UUID]]:
    """Seconds to go from 0 scheduled users to each level (cumulative: cron.job grows as it would)."""
    seconds: dict[int, float] = {}
    users: list[uuid.UUID] = []
    elapsed = 0.0
    with env.connect() as conn:
        for level in sorted(levels):
            batch = new_users(conn, level - len(users), interval=interval)
            elapsed += schedule(conn, batch, interval)
            users += batch
            seconds[level] = elapsed
    return seconds, users


def trigger_latency(env: BenchEnv, users: list[uuid.UUID], calls: int) -> list[float]:
    """Client-side wall time of `SELECT trigger_auto_sync(user)` (→ HTTP POST → 202), one by one."""
    times: list[float] = []
    with env.connect() as conn:
        conn.execute("SELECT public.trigger_auto_sync(%s)", (users[0],))  # warm the session's http state
        for index in range(calls):
            user = users[index % len(users)]
            started = time.perf_counter()
            status = conn.execute("SELECT public.trigger_auto_sync(%s)", (user,)).fetchone()
            times.append(time.perf_counter() - started)
            if status is None or status[0] != 202:
                raise RuntimeError(f"trigger_auto_sync answered {status}")
    return times


@dataclass
class Window:
    """One observed cron minute."""

    label: str
    slot: float
    due: int
    busiest_bucket: int
    delays: list[float] = field(default_factory=list)
    run_status: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, int]] = field(default_factory=list)
    launch_delays: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)


def _next_slot(lead_s: float) -> float:
    now = time.time()
    slot = (int(now) // 60 + 1) * 60
    return float(slot if slot - now >= lead_s else slot + 60)


def _reset_runs(conn: psycopg.Connection[Any]) -> None:
    """Forget queued runs, so that every trigger in the window takes the full enqueue path."""
    conn.execute("DELETE FROM public.sync_runs")
    conn.execute("DELETE FROM public.procrastinate_jobs WHERE queue_name = 'imports'")


def quiet(env: BenchEnv) -> None:
    """After the cron benchmarks: no user job and no dispatcher fires any more, nothing is queued.

    What runs afterwards (the filler's leftover jobs) must have the queue and the two cores to
    itself: left active, the dispatcher would go on queueing the 110,000 scheduled users' runs
    (~90 a second) into the queue the no-op throughput passes measure.
    """
    with env.connect() as conn:
        conn.execute(f"UPDATE cron.job SET active = false WHERE jobname = 'autosync-dispatcher' OR {JOBS}")
        _reset_runs(conn)


def _due_counts(conn: psycopg.Connection[Any], interval: int) -> Counter[int]:
    """Per minute of the interval, how many active schedules fire in it ('o-59/N * * * *')."""
    counts: Counter[int] = Counter()
    for (sched,) in conn.execute(f"SELECT schedule FROM cron.job WHERE {JOBS}"):
        minute = sched.split()[0]
        offset = int(minute.split("-")[0]) if "-" in minute or "/" not in minute else 0
        counts[offset % interval] += 1
    return counts


def _observe(env: BenchEnv, window: Window, *, max_s: float, stop_by: float | None) -> None:
    """Wait for the slot, then until arrivals stop and pg_cron has no run of this slot in flight."""
    while time.time() < window.slot:
        time.sleep(0.2)
    deadline = window.slot + max_s
    with env.connect() as conn:
        last_count, last_change = -1, time.time()
        while time.time() < deadline:
            time.sleep(0.5)
            count = len(env.arrivals.since(window.slot))
            if count != last_count:
                last_count, last_change = count, time.time()
            in_flight = conn.execute(
                "SELECT count(*) FROM cron.job_run_details WHERE start_time >= to_timestamp(%s) "
                "AND status IN ('starting', 'running')",
                (window.slot - 1,),
            ).fetchone()
            if count >= window.due or (
                time.time() - last_change > QUIET_S and in_flight is not None and in_flight[0] == 0
            ):
                break
            if stop_by is not None and time.time() > stop_by:
                break
        # The next minute must not fire anything: this window is over.
        conn.execute(f"UPDATE cron.job SET active = false WHERE {JOBS}")
        time.sleep(1.0)  # the last HTTP calls finish
        window.delays = [t - window.slot for t in env.arrivals.since(window.slot)]
        _collect_runs(conn, window)


def _collect_runs(conn: psycopg.Connection[Any], window: Window) -> None:
    since = datetime.fromtimestamp(window.slot - 1, UTC)
    rows = conn.execute(
        """SELECT status, coalesce(return_message, ''),
                  extract(epoch FROM start_time) - %s, extract(epoch FROM end_time - start_time)
           FROM cron.job_run_details d JOIN cron.job j USING (jobid)
           WHERE d.start_time >= %s AND public.auto_sync_job_user(j.jobname) IS NOT NULL""",
        (window.slot, since),
    ).fetchall()
    window.run_status = dict(Counter(r[0] for r in rows))
    failures = Counter(r[1][:160] for r in rows if r[0] == "failed")
    window.failures = failures.most_common(3)
    window.launch_delays = [float(r[2]) for r in rows if r[2] is not None]
    window.durations = [float(r[3]) for r in rows if r[3] is not None]


def fanout(
    env: BenchEnv, *, interval: int, max_s: float, filler: Filler | None = None, with_unstaggered: bool = True
) -> list[Window]:
    """The busiest-minute fan-out with the per-user stagger, then (`with_unstaggered`) with every user on
    one minute, a boundary later.

    While it waits for each minute boundary, `filler` runs what fits (its jobs see no user cron job
    active and no queued run of the fan-out's).
    """
    windows: list[Window] = []
    with env.connect() as conn:
        conn.execute(f"UPDATE cron.job SET active = false WHERE {JOBS}")
        _reset_runs(conn)
    if filler is not None:
        filler.until(_next_slot(MIN_LEAD_S) - MIN_LEAD_S, quiet_queue=True)
    with env.connect() as conn:
        _reset_runs(conn)
        buckets = _due_counts(conn, interval)
        total = sum(buckets.values())
        slot = _next_slot(MIN_LEAD_S)
        minute = int(slot // 60) % 60
        staggered = Window(
            "staggered", slot, due=buckets[minute % interval], busiest_bucket=max(buckets.values())
        )
        env.arrivals.clear()
        conn.execute(f"UPDATE cron.job SET active = true WHERE {JOBS}")
    # Stop before the next minute's bucket fires.
    _observe(env, staggered, max_s=max_s, stop_by=slot + 50)
    windows.append(staggered)
    if not with_unstaggered:
        return windows

    if filler is not None:
        with env.connect() as conn:
            _reset_runs(conn)
        filler.until(_next_slot(MIN_LEAD_S) - MIN_LEAD_S, quiet_queue=True)
    with env.connect() as conn:
        _reset_runs(conn)
        slot = _next_slot(MIN_LEAD_S)
        minute = int(slot // 60) % 60
        # What a schedule without the stagger does ('*/N' fires everyone at :00): all on one minute.
        conn.execute(f"UPDATE cron.job SET schedule = %s, active = true WHERE {JOBS}", (f"{minute} * * * *",))
        unstaggered = Window("unstaggered", slot, due=total, busiest_bucket=total)
    _observe(env, unstaggered, max_s=max_s, stop_by=None)
    windows.append(unstaggered)
    return windows
