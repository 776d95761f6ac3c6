"""Dispatcher mode at scale: one pg_cron job queueing every due user's run, at a real minute boundary.

The users of the per-user fan-out (`bench/fanout.py`, N on a 5-minute interval) are switched to
dispatcher mode with `set_auto_sync_mode`, and a second, larger population (on 30 minutes) is
scheduled with `schedule_auto_sync` in that mode. Both are then observed at the same minute
boundary, so the dispatcher carries both populations' due users at once (a harder case than either
alone). pg_cron runs `autosync-dispatcher` every second; nothing here calls the dispatch itself.

Per run: slot → `sync_runs.queued_at`, where the slot is `auto_sync_slot_at_or_before(user, interval,
queued_at)` (the schema's own definition, the minute the per-user cron job would fire). Missed: a user
whose slot is the observed minute and who has no run; doubled: a user with more than one run.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.env import BenchEnv, new_users
from bench.fanout import MIN_LEAD_S, _next_slot
from bench.filler import Filler

# After every due user has a run: two more dispatches, to see any second run of the same slot.
SETTLE_S = 3.0
CHUNK = 1_000


@dataclass
class Population:
    """One group of users, all on one interval, observed at the same slot."""

    label: str
    interval: int
    users: int
    due: int = 0
    busiest_minute: int = 0
    delays: list[float] = field(default_factory=list)
    committed: list[float] = field(default_factory=list)
    missed: int = 0
    doubled: int = 0


@dataclass
class Observed:
    slot: float
    populations: list[Population]
    dispatch_ms: list[float] = field(default_factory=list)
    # From the switch to dispatcher mode to pg_cron's first dispatcher run.
    first_run_s: float = float("nan")


def switch(env: BenchEnv, mode: str) -> float:
    started = time.perf_counter()
    with env.connect() as conn:
        conn.execute("SELECT public.set_auto_sync_mode(%s)", (mode,))
    return time.perf_counter() - started


def schedule(env: BenchEnv, count: int, interval: int) -> tuple[list[uuid.UUID], float]:
    """`count` new users scheduled one by one in dispatcher mode (each its own transaction)."""
    with env.connect() as conn:
        users = new_users(conn, count, interval=interval)
        started = time.perf_counter()
        with conn.cursor() as cur:
            # A pipelined executemany is one implicit transaction: in chunks, or 100,000 per-user
            # locks would outgrow the lock table (max_locks_per_transaction).
            for start in range(0, len(users), CHUNK):
                chunk = users[start : start + CHUNK]
                cur.executemany("SELECT public.schedule_auto_sync(%s, %s)", [(u, interval) for u in chunk])
        return users, time.perf_counter() - started


def busiest_minute(conn: psycopg.Connection[Any], interval: int) -> int:
    rows = conn.execute(
        """SELECT public.auto_sync_slot_offset(user_id, interval_minutes), count(*)
           FROM public.auto_sync_jobs WHERE interval_minutes = %s GROUP BY 1""",
        (interval,),
    ).fetchall()
    per_offset = Counter({offset: count for offset, count in rows})
    return max(per_offset.values(), default=0)


def first_run_after(env: BenchEnv, since: float, *, timeout_s: float) -> float:
    """Seconds from `since` (epoch) to the start of pg_cron's first dispatcher run after it.

    pg_cron starts an interval job once its launcher has reloaded the job table. Right after a
    switch that unscheduled 10,000 per-user jobs, which had just launched a window's runs, that took
    12-56 s here; a window observed before it would measure the switch, not the dispatcher.
    """
    deadline = time.time() + timeout_s
    with env.connect() as conn:
        while True:
            row = conn.execute(
                """SELECT extract(epoch FROM min(d.start_time))
                   FROM cron.job_run_details AS d JOIN cron.job AS j USING (jobid)
                   WHERE j.jobname = 'autosync-dispatcher' AND d.start_time >= to_timestamp(%s)""",
                (since,),
            ).fetchone()
            if row is not None and row[0] is not None:
                return float(row[0]) - since
            if time.time() > deadline:
                raise RuntimeError(f"pg_cron did not start the dispatcher within {timeout_s:.0f} s of the switch")
            time.sleep(0.2)


def observe(
    env: BenchEnv,
    populations: list[Population],
    *,
    max_s: float,
    switched_at: float,
    filler: Filler | None = None,
) -> Observed:
    """What the dispatcher queued for each population at the next minute boundary.

    First the jobs of `filler` that fit and need no quiet queue, then a wait for pg_cron's first
    dispatcher run since `switched_at`; then earlier runs are forgotten and the boundary observed.
    """
    if filler is not None:
        filler.until(_next_slot(MIN_LEAD_S) - MIN_LEAD_S, quiet_queue=False)
    first_run_s = first_run_after(env, switched_at, timeout_s=180)
    # Committed before the slot is chosen: the dispatcher's insert of a user's run waits for an
    # uncommitted delete of that user's earlier run (the one-active-run index), so a transaction
    # still open at the boundary would delay every run it deleted one of.
    with env.connect() as conn:
        conn.execute("DELETE FROM public.sync_runs")
        conn.execute("DELETE FROM public.procrastinate_jobs WHERE queue_name = 'imports'")
    with env.connect() as conn:
        now = time.time()
        slot = float((int(now) // 60 + 1) * 60)
        if slot - now < MIN_LEAD_S:
            slot += 60
        for population in populations:
            population.busiest_minute = busiest_minute(conn, population.interval)
            row = conn.execute(
                """SELECT count(*) FROM public.auto_sync_jobs
                   WHERE interval_minutes = %s
                     AND public.auto_sync_slot_at_or_before(user_id, interval_minutes, to_timestamp(%s))
                         = to_timestamp(%s)""",
                (population.interval, slot, slot),
            ).fetchone()
            population.due = int(row[0]) if row else 0
    expected = sum(p.due for p in populations)
    while time.time() < slot:
        time.sleep(0.2)
    deadline = slot + max_s
    with env.connect() as conn:
        while time.time() < deadline:
            time.sleep(0.5)
            row = conn.execute(
                "SELECT count(*) FROM public.sync_runs WHERE queued_at >= to_timestamp(%s)", (slot,)
            ).fetchone()
            if row is not None and row[0] >= expected and time.time() > slot + SETTLE_S:
                break
        observed = Observed(slot=slot, populations=populations, first_run_s=first_run_s)
        for population in populations:
            _collect(conn, population, slot)
        observed.dispatch_ms = [
            float(ms)
            for (ms,) in conn.execute(
                """SELECT 1000 * extract(epoch FROM d.end_time - d.start_time)
                   FROM cron.job_run_details AS d JOIN cron.job AS j USING (jobid)
                   WHERE j.jobname = 'autosync-dispatcher' AND d.start_time >= to_timestamp(%s) - interval '1 s'
                     AND d.start_time < to_timestamp(%s) AND d.end_time IS NOT NULL""",
                (slot, deadline),
            )
        ]
    return observed


def _collect(conn: psycopg.Connection[Any], population: Population, slot: float) -> None:
    rows = conn.execute(
        """SELECT r.user_id,
                  extract(epoch FROM r.queued_at
                          - public.auto_sync_slot_at_or_before(r.user_id, a.interval_minutes, r.queued_at))
           FROM public.sync_runs AS r JOIN public.auto_sync_jobs AS a USING (user_id)
           WHERE a.interval_minutes = %s AND r.trigger = 'cron' AND r.queued_at >= to_timestamp(%s)""",
        (population.interval, slot - 60),
    ).fetchall()
    population.delays = [float(delay) for _, delay in rows]
    # queued_at is the dispatch transaction's start; workers see the runs when it commits, which
    # pg_cron records as the end of that dispatcher run: the first to end after queued_at, since
    # runs of one job never overlap. (Matching on start_time picked the run before whenever pg_cron
    # stamped a run's start after its transaction had begun.)
    committed = conn.execute(
        """SELECT extract(epoch FROM d.end_time
                          - public.auto_sync_slot_at_or_before(r.user_id, a.interval_minutes, r.queued_at))
           FROM public.sync_runs AS r JOIN public.auto_sync_jobs AS a USING (user_id)
           CROSS JOIN LATERAL (
               SELECT d.end_time FROM cron.job_run_details AS d JOIN cron.job AS j USING (jobid)
               WHERE j.jobname = 'autosync-dispatcher' AND d.end_time >= r.queued_at
               ORDER BY d.end_time LIMIT 1) AS d
           WHERE a.interval_minutes = %s AND r.trigger = 'cron' AND r.queued_at >= to_timestamp(%s)
             AND d.end_time IS NOT NULL""",
        (population.interval, slot - 60),
    ).fetchall()
    population.committed = [float(delay) for (delay,) in committed]
    per_user = Counter(user_id for user_id, _ in rows)
    population.doubled = sum(1 for count in per_user.values() if count > 1)
    missed = conn.execute(
        """SELECT count(*) FROM public.auto_sync_jobs AS a
           WHERE a.interval_minutes = %s
             AND public.auto_sync_slot_at_or_before(a.user_id, a.interval_minutes, to_timestamp(%s))
                 = to_timestamp(%s)
             AND NOT EXISTS (SELECT 1 FROM public.sync_runs AS r
                             WHERE r.user_id = a.user_id AND r.queued_at >= to_timestamp(%s))""",
        (population.interval, slot, slot, slot),
    ).fetchone()
    population.missed = int(missed[0]) if missed else 0
