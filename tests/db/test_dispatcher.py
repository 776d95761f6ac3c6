"""Dispatcher mode: one pg_cron job queues every due user's run; slots, catch-up, no doubles, switching."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import psycopg
import pytest

from harness import docker_local
from harness.service import WorkerThread
from infra import migrations
from infra.containers import PostgresConfig
from sync_function import doctor, preferences
from tests.support.cron_spec import day_fire_minutes
from tests.support.db import cron_jobs, delete_users, new_user
from tests.support.reliability import wait_until

pytestmark = pytest.mark.docker

DISPATCHER = "autosync-dispatcher"


def one(conn: psycopg.Connection, sql: str, params: tuple = ()) -> object:  # type: ignore[type-arg]
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def set_mode(conn: psycopg.Connection, mode: str) -> None:
    conn.execute("SELECT public.set_auto_sync_mode(%s)", (mode,))


def enable(conn: psycopg.Connection, user_id: uuid.UUID, minutes: int) -> None:
    preferences.save_preference(conn, user_id=user_id, enabled=True, interval_minutes=minutes)


def runs_of(conn: psycopg.Connection, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[tuple]]:  # type: ignore[type-arg]
    rows = conn.execute(
        """SELECT r.user_id, r.trigger, r.status, r.queued_at, j.args, j.lock, j.queueing_lock, j.queue_name,
                  j.task_name
           FROM public.sync_runs AS r LEFT JOIN public.procrastinate_jobs AS j ON j.id = r.job_id
           WHERE r.user_id = ANY(%s) ORDER BY r.queued_at""",
        (user_ids,),
    ).fetchall()
    found: dict[uuid.UUID, list[tuple]] = {user_id: [] for user_id in user_ids}  # type: ignore[type-arg]
    for row in rows:
        found[row[0]].append(row[1:])
    return found


def next_slot(conn: psycopg.Connection, user_id: uuid.UUID) -> datetime:
    value = one(conn, "SELECT next_slot FROM public.auto_sync_jobs WHERE user_id = %s", (user_id,))
    assert isinstance(value, datetime)
    return value


def finish_runs(conn: psycopg.Connection, user_ids: list[uuid.UUID]) -> None:
    """What a worker does at the end of a run, without running one."""
    conn.execute(
        "UPDATE public.sync_runs SET status = 'succeeded', finished_at = now() WHERE user_id = ANY(%s)",
        (user_ids,),
    )
    conn.execute(
        "UPDATE public.procrastinate_jobs SET status = 'succeeded' WHERE lock = ANY(%s)",
        ([f"user:{u}" for u in user_ids],),
    )


def cleanup(conn: psycopg.Connection, user_ids: list[uuid.UUID]) -> None:
    for user_id in user_ids:
        conn.execute("SELECT public.unschedule_auto_sync(%s)", (user_id,))
    conn.execute(
        "DELETE FROM public.procrastinate_jobs WHERE lock = ANY(%s)", ([f"user:{u}" for u in user_ids],)
    )
    delete_users(conn, user_ids)


@pytest.fixture
def dispatcher(db: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The session database in dispatcher mode for one test, back to per-user afterwards."""
    set_mode(db, "dispatcher")
    try:
        yield db
    finally:
        set_mode(db, "per_user")


@pytest.fixture
def users(db: psycopg.Connection) -> Iterator[list[uuid.UUID]]:
    created: list[uuid.UUID] = []

    class Users(list):  # type: ignore[type-arg]
        def make(self, count: int) -> list[uuid.UUID]:
            fresh = [new_user(db) for _ in range(count)]
            created.extend(fresh)
            return fresh

    yield Users()  # type: ignore[misc]
    cleanup(db, created)


def test_slots_are_the_per_user_cron_times(db: psycopg.Connection) -> None:
    """The slot function and the cron schedule come from one offset rule: same minutes, every interval."""
    rng = random.Random(7)  # noqa: S311 - test data, not secrets
    intervals = one(db, "SELECT public.auto_sync_supported_intervals()")
    assert isinstance(intervals, list)
    day = datetime.fromisoformat("2026-03-04T00:00:00+00:00")
    for _ in range(40):
        user_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        minutes = rng.choice(intervals)
        schedule = str(one(db, "SELECT public.auto_sync_cron_schedule(%s, %s)", (user_id, minutes)))
        fires = day_fire_minutes(schedule)
        # The latest slot at or before each fire time (and one second later) is that fire time.
        for fire in fires[:3] + fires[-2:]:
            at = day + timedelta(minutes=fire)
            for probe in (at, at + timedelta(seconds=59)):
                slot = one(
                    db, "SELECT public.auto_sync_slot_at_or_before(%s, %s, %s)", (user_id, minutes, probe)
                )
                assert slot == at, (schedule, probe)
        # Just before the first fire of the day: the previous slot is the last fire of yesterday.
        before = day + timedelta(minutes=fires[0]) - timedelta(seconds=1)
        slot = one(db, "SELECT public.auto_sync_slot_at_or_before(%s, %s, %s)", (user_id, minutes, before))
        assert slot == day + timedelta(minutes=fires[-1]) - timedelta(days=1)


def test_switching_moves_the_cron_jobs_both_ways(db: psycopg.Connection, users) -> None:  # type: ignore[no-untyped-def]
    a, b = users.make(2)
    enable(db, a, 15)
    enable(db, b, 60)
    before = {
        name: spec for name, spec in cron_jobs(db).items() if name in (f"auto-sync-{a}", f"auto-sync-{b}")
    }
    assert len(before) == 2
    assert one(db, "SELECT public.auto_sync_mode()") == "per_user"
    try:
        assert one(db, "SELECT public.set_auto_sync_mode('dispatcher')") == "per_user"
        jobs = db.execute("SELECT jobname, schedule, command, active FROM cron.job").fetchall()
        assert not [j for j in jobs if j[0].startswith("auto-sync-") and len(j[0]) == 46]
        assert (DISPATCHER, "1 seconds", "SELECT public.auto_sync_dispatch()", True) in jobs
        rows = db.execute(
            "SELECT user_id, cron_job_id, interval_minutes, next_slot FROM public.auto_sync_jobs"
            " WHERE user_id = ANY(%s)",
            ([a, b],),
        ).fetchall()
        now = one(db, "SELECT now()")
        assert isinstance(now, datetime)
        for user_id, cron_job_id, minutes, slot in rows:
            assert cron_job_id is None
            assert now < slot <= now + timedelta(minutes=minutes)
            assert slot == one(
                db, "SELECT public.auto_sync_slot_at_or_before(%s, %s, %s)", (user_id, minutes, slot)
            )
        # Scheduling in dispatcher mode: a row and a slot, no job of its own; the dispatcher's id back.
        (c,) = users.make(1)
        job_id = one(db, "SELECT public.schedule_auto_sync(%s, 5)", (c,))
        assert job_id == one(db, "SELECT jobid FROM cron.job WHERE jobname = %s", (DISPATCHER,))
        assert f"auto-sync-{c}" not in cron_jobs(db)
        db.execute("SELECT public.update_auto_sync_schedule(%s, 10)", (c,))
        assert one(db, "SELECT interval_minutes FROM public.auto_sync_jobs WHERE user_id = %s", (c,)) == 10
        assert one(db, "SELECT public.unschedule_auto_sync(%s)", (c,)) is True
        assert one(db, "SELECT count(*) FROM public.auto_sync_jobs WHERE user_id = %s", (c,)) == 0
        assert DISPATCHER in {name for (name,) in db.execute("SELECT jobname FROM cron.job")}
        # Switching twice is harmless.
        assert one(db, "SELECT public.set_auto_sync_mode('dispatcher')") == "dispatcher"
    finally:
        assert one(db, "SELECT public.set_auto_sync_mode('per_user')") == "dispatcher"
    after = {name: spec[1:] for name, spec in cron_jobs(db).items() if name in before}
    assert after == {name: spec[1:] for name, spec in before.items()}
    assert DISPATCHER not in {name for (name,) in db.execute("SELECT jobname FROM cron.job")}
    assert db.execute(
        "SELECT count(*) FROM public.auto_sync_jobs a JOIN cron.job j ON j.jobid = a.cron_job_id"
        " WHERE a.user_id = ANY(%s) AND a.next_slot IS NULL",
        ([a, b],),
    ).fetchone() == (2,)


def test_mode_switch_is_the_owners_and_checks_its_input(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown auto-sync mode: hourly"):
        db.execute("SELECT public.set_auto_sync_mode('hourly')")
    for role in ("service_role", "authenticated", "anon"):
        db.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(role)))
        try:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute("SELECT public.set_auto_sync_mode('dispatcher')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute("SELECT public.auto_sync_dispatch()")
        finally:
            db.execute("RESET ROLE")
    assert one(db, "SELECT public.auto_sync_mode()") == "per_user"


def test_dispatch_queues_each_slot_once_and_catches_up_with_one_run(dispatcher, users) -> None:  # type: ignore[no-untyped-def]
    db = dispatcher
    (user,) = users.make(1)
    enable(db, user, 5)
    slot = next_slot(db, user)
    # Before the slot nothing; at the slot one run, queued exactly as the service queues a cron run.
    assert one(db, "SELECT public.auto_sync_dispatch(%s)", (slot - timedelta(seconds=1),)) == 0
    assert one(db, "SELECT public.auto_sync_dispatch(%s)", (slot,)) == 1
    (run,) = runs_of(db, [user])[user]
    trigger, status, _, args, lock, queueing_lock, queue_name, task_name = run
    assert (trigger, status, lock, queueing_lock, queue_name, task_name) == (
        "cron",
        "queued",
        f"user:{user}",
        f"user:{user}",
        "imports",
        "autosync.import_user",
    )
    run_id = one(db, "SELECT id FROM public.sync_runs WHERE user_id = %s", (user,))
    assert args == {"run_id": str(run_id)}
    assert next_slot(db, user) == slot + timedelta(minutes=5)
    # The same slot again: nothing. Later slots while the run is still queued: no second run.
    assert one(db, "SELECT public.auto_sync_dispatch(%s)", (slot + timedelta(seconds=30),)) == 0
    assert one(db, "SELECT public.auto_sync_dispatch(%s)", (slot + timedelta(minutes=5),)) == 0
    assert len(runs_of(db, [user])[user]) == 1
    # The run finishes; the dispatcher was away for a day (288 slots): one catch-up run.
    finish_runs(db, [user])
    late = slot + timedelta(days=1, seconds=17)
    assert one(db, "SELECT public.auto_sync_dispatch(%s)", (late,)) == 1
    assert len(runs_of(db, [user])[user]) == 2
    assert next_slot(db, user) == slot + timedelta(days=1, minutes=5)
    # Saving the same preference again keeps the slot due next; a new interval moves it.
    enable(db, user, 5)
    assert next_slot(db, user) == slot + timedelta(days=1, minutes=5)


def test_a_disabled_user_gets_no_run(dispatcher, users) -> None:  # type: ignore[no-untyped-def]
    db = dispatcher
    (user,) = users.make(1)
    enable(db, user, 5)
    slot = next_slot(db, user)
    # The row is there but the preference says off (as when a cron job fires once more after "off").
    db.execute("UPDATE public.user_settings SET enabled = false WHERE user_id = %s", (user,))
    assert one(db, "SELECT public.auto_sync_dispatch(%s)", (slot,)) == 0
    assert runs_of(db, [user])[user] == []


def test_concurrent_dispatches_queue_nothing_twice(dispatcher, users, database_url: str) -> None:  # type: ignore[no-untyped-def]
    db = dispatcher
    group = users.make(200)
    for user_id in group:
        enable(db, user_id, 5)
    latest = max(next_slot(db, u) for u in group)
    barrier = threading.Barrier(6)
    counts: list[int] = []
    errors: list[BaseException] = []

    def dispatch() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                barrier.wait()
                counts.append(int(one(conn, "SELECT public.auto_sync_dispatch(%s)", (latest,))))  # type: ignore[call-overload]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=dispatch) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(counts) == len(group)
    found = runs_of(db, group)
    assert {user_id: len(runs) for user_id, runs in found.items()} == {user_id: 1 for user_id in group}
    assert one(
        db,
        "SELECT count(*) FROM public.procrastinate_jobs WHERE lock = ANY(%s)",
        ([f"user:{u}" for u in group],),
    ) == len(group)


def test_paused_dispatcher_catches_up_with_one_run_each(dispatcher, users) -> None:  # type: ignore[no-untyped-def]
    db = dispatcher
    group = users.make(20)
    for user_id in group:
        enable(db, user_id, 5)
    job_id = one(db, "SELECT jobid FROM cron.job WHERE jobname = %s", (DISPATCHER,))
    db.execute("SELECT cron.alter_job(%s, active => false)", (job_id,))
    # Twenty minutes of pause: every user's watermark four slots behind, as if that time had passed.
    db.execute(
        "UPDATE public.auto_sync_jobs SET next_slot = next_slot - interval '20 minutes' WHERE user_id = ANY(%s)",
        (group,),
    )
    db.execute("SELECT cron.alter_job(%s, active => true)", (job_id,))
    wait_until(
        lambda: all(len(r) == 1 for r in runs_of(db, group).values()), timeout_s=30, what="catch-up runs"
    )
    now = one(db, "SELECT now()")
    assert isinstance(now, datetime)
    assert all(next_slot(db, u) > now for u in group)
    # A few more dispatches later, still one run each.
    runs_since = "SELECT count(*) FROM cron.job_run_details WHERE jobid = %s AND start_time > %s"
    wait_until(
        lambda: int(str(one(db, runs_since, (job_id, now)))) >= 3, timeout_s=30, what="three more dispatches"
    )
    assert all(len(r) == 1 for r in runs_of(db, group).values())


def users_due_soon(conn: psycopg.Connection, count: int, *, within: tuple[int, int]) -> list[uuid.UUID]:
    """Fresh user ids whose next 5-minute slot is `within` seconds from now (picked, not forced)."""
    low, high = within
    picked: list[uuid.UUID] = []
    while len(picked) < count:
        candidates = [uuid.uuid4() for _ in range(500)]
        rows = conn.execute(
            """SELECT c FROM unnest(%s::uuid[]) AS c
               WHERE public.auto_sync_slot_at_or_before(c, 5, now()) + interval '5 minutes'
                     BETWEEN now() + make_interval(secs => %s) AND now() + make_interval(secs => %s)""",
            (candidates, low, high),
        ).fetchall()
        picked.extend(row[0] for row in rows)
    picked = picked[:count]
    for user_id in picked:
        conn.execute(
            "INSERT INTO auth.users (id, email) VALUES (%s, %s)", (user_id, f"{user_id}@example.test")
        )
    return picked


def test_pg_cron_runs_the_dispatcher_at_each_slot_and_the_worker_records_it(  # type: ignore[no-untyped-def]
    dispatcher, worker: WorkerThread
) -> None:
    db = dispatcher
    group = users_due_soon(db, 3, within=(8, 40))
    try:
        for user_id in group:
            enable(db, user_id, 5)
        slots = {u: next_slot(db, u) for u in group}
        wait_until(lambda: all(runs_of(db, group).values()), timeout_s=70, what="runs queued by pg_cron")
        for user_id, runs in runs_of(db, group).items():
            assert len(runs) == 1
            queued_at = runs[0][2]
            # Within the dispatcher's period (1 s) of the slot, with slack for a busy machine.
            assert timedelta(0) <= queued_at - slots[user_id] < timedelta(seconds=3), (
                queued_at,
                slots[user_id],
            )
        wait_until(
            lambda: all(r[0][1] == "succeeded" for r in runs_of(db, group).values()),
            timeout_s=60,
            what="runs recorded by the worker",
        )
    finally:
        cleanup(db, group)


def test_nothing_missed_across_a_restart(fresh_postgres: PostgresConfig, docker_engine) -> None:  # type: ignore[no-untyped-def]
    url = fresh_postgres.url
    migrations.upgrade(url)
    container = docker_engine.containers.get(fresh_postgres.name)
    with psycopg.connect(url, autocommit=True) as conn:
        set_mode(conn, "dispatcher")
        group = users_due_soon(conn, 5, within=(15, 45))
        for user_id in group:
            enable(conn, user_id, 5)
        slots = {u: next_slot(conn, u) for u in group}
    # Down before the slots, up after them.
    container.stop(timeout=10)
    latest = max(slots.values())
    wait_until(
        lambda: datetime.now(latest.tzinfo) > latest + timedelta(seconds=3), timeout_s=90, what="slots pass"
    )
    container.start()
    docker_local.wait_healthy(container, timeout_s=60)

    def runs_now() -> dict[uuid.UUID, list[tuple]] | None:  # type: ignore[type-arg]
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
                return runs_of(conn, group)
        except psycopg.OperationalError:
            return None

    wait_until(
        lambda: (found := runs_now()) is not None and all(found.values()), timeout_s=60, what="catch-up"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        found = runs_of(conn, group)
        assert {u: len(r) for u, r in found.items()} == {u: 1 for u in group}
        assert all(next_slot(conn, u) == slots[u] + timedelta(minutes=5) for u in group)


def test_switching_back_and_forth_while_users_save(db: psycopg.Connection, users, database_url: str) -> None:  # type: ignore[no-untyped-def]
    group = users.make(12)
    stop = threading.Event()
    errors: list[BaseException] = []
    last: dict[uuid.UUID, preferences.Preference] = {}

    def saver(mine: list[uuid.UUID], seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 - test data, not secrets
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("SET ROLE service_role")
                while not stop.is_set():
                    user_id = rng.choice(mine)
                    choice = preferences.Preference(rng.random() < 0.7, rng.choice([5, 10, 15, 60]))
                    preferences.save_preference(
                        conn,
                        user_id=user_id,
                        enabled=choice.enabled,
                        interval_minutes=choice.interval_minutes,
                    )
                    last[user_id] = choice
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=saver, args=(group[i::3], i)) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        for mode in ["dispatcher", "per_user"] * 3 + ["dispatcher"]:
            set_mode(db, mode)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    try:
        assert errors == []
        check_consistent(db, "dispatcher", group, last)
        set_mode(db, "per_user")
        check_consistent(db, "per_user", group, last)
    finally:
        set_mode(db, "per_user")


def check_consistent(
    db: psycopg.Connection, mode: str, group: list[uuid.UUID], last: dict[uuid.UUID, preferences.Preference]
) -> None:
    rows = {
        user_id: (cron_job_id, minutes, slot)
        for user_id, cron_job_id, minutes, slot in db.execute(
            "SELECT user_id, cron_job_id, interval_minutes, next_slot FROM public.auto_sync_jobs WHERE user_id = ANY(%s)",
            (group,),
        )
    }
    assert {u: r[1] for u, r in rows.items()} == {u: p.interval_minutes for u, p in last.items() if p.enabled}
    jobs = cron_jobs(db)
    names = {f"auto-sync-{u}" for u in group}
    dispatcher_jobs = [
        n for (n,) in db.execute("SELECT jobname FROM cron.job WHERE jobname = %s", (DISPATCHER,))
    ]
    if mode == "dispatcher":
        assert not names & set(jobs)
        assert dispatcher_jobs == [DISPATCHER]
        assert all(r[0] is None and r[2] is not None for r in rows.values())
    else:
        assert {n for n in jobs if n in names} == {f"auto-sync-{u}" for u in rows}
        assert dispatcher_jobs == []
        for user_id, (cron_job_id, minutes, slot) in rows.items():
            assert slot is None
            assert jobs[f"auto-sync-{user_id}"][0] == cron_job_id
            assert jobs[f"auto-sync-{user_id}"][1] == one(
                db, "SELECT public.auto_sync_cron_schedule(%s, %s)", (user_id, minutes)
            )


def test_doctor_and_reconcile_understand_both_modes(db: psycopg.Connection, users) -> None:  # type: ignore[no-untyped-def]
    (user,) = users.make(1)
    enable(db, user, 5)

    def mode_check() -> doctor.Check:
        return {c.name: c for c in doctor.run_checks(db, timeout_s=0.5)}["scheduling mode"]

    assert mode_check().detail.startswith("per_user; busiest minute:")
    try:
        set_mode(db, "dispatcher")
        assert [d for d in doctor.find_drift(db) if d.user_id == user or d.kind == "dispatcher"] == []
        assert mode_check().ok and "keeping up" in mode_check().detail
        # Break it three ways: dispatcher paused, a per-user job left behind, a slot far in the past.
        db.execute(
            "SELECT cron.alter_job(jobid, active => false) FROM cron.job WHERE jobname = %s", (DISPATCHER,)
        )
        db.execute("SELECT cron.schedule(public.auto_sync_job_name(%s), '* * * * *', 'SELECT 1')", (user,))
        kinds = {d.kind for d in doctor.find_drift(db) if d.user_id == user or d.kind == "dispatcher"}
        assert kinds == {"dispatcher", "orphan_cron"}
        assert not mode_check().ok
        fixes = doctor.reconcile(db)
        assert all(f.ok for f in fixes), fixes
        assert [d for d in doctor.find_drift(db) if d.user_id == user or d.kind == "dispatcher"] == []
        assert one(db, "SELECT active FROM cron.job WHERE jobname = %s", (DISPATCHER,)) is True
        assert f"auto-sync-{user}" not in cron_jobs(db)
    finally:
        set_mode(db, "per_user")
    # Back in per-user mode a dispatcher job is drift, and reconcile removes it.
    db.execute("SELECT cron.schedule(%s, '1 seconds', 'SELECT 1')", (DISPATCHER,))
    assert {d.kind for d in doctor.find_drift(db) if d.kind == "dispatcher"} == {"dispatcher"}
    doctor.reconcile(db)
    assert one(db, "SELECT count(*) FROM cron.job WHERE jobname = %s", (DISPATCHER,)) == 0


def test_doctor_recommends_the_dispatcher_past_the_launch_rate(db: psycopg.Connection) -> None:
    """3,500 users on 5 minutes: ~700 due in the busiest minute, ~6 s to launch at 120/s: advice."""
    ids = [
        uuid.UUID(str(row[0])) for row in db.execute("SELECT gen_random_uuid() FROM generate_series(1, 3500)")
    ]
    db.execute(
        "INSERT INTO auth.users (id, email) SELECT u, u || '@example.test' FROM unnest(%s::uuid[]) u", (ids,)
    )
    try:
        db.execute(
            "INSERT INTO public.user_settings (user_id, enabled, interval_minutes)"
            " SELECT u, true, 5 FROM unnest(%s::uuid[]) u",
            (ids,),
        )
        due = doctor.busiest_minute(db)
        assert 700 <= due < 900
        check = doctor.scheduling_check(db)
        assert check.ok  # behind by seconds, not for good
        assert f"{due} users due" in check.detail
        assert "switch to the dispatcher" in check.detail
        assert due / doctor.PER_USER_LAUNCHES_PER_S > doctor.PER_USER_ADVICE_LAG_S
    finally:
        delete_users(db, ids)


FETCH_PLAN = """
EXPLAIN (COSTS OFF)
SELECT jobs.id FROM public.procrastinate_jobs AS jobs
WHERE NOT EXISTS (
        SELECT 1 FROM public.procrastinate_jobs AS other_jobs
        WHERE jobs.lock IS NOT NULL AND other_jobs.lock = jobs.lock
          AND (other_jobs.status = 'doing'
               OR (other_jobs.status = 'todo' AND (other_jobs.priority > jobs.priority
                   OR (other_jobs.priority = jobs.priority AND other_jobs.id < jobs.id)))))
  AND jobs.status = 'todo' AND jobs.queue_name = ANY (ARRAY['imports'])
  AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1 FOR UPDATE OF jobs SKIP LOCKED
"""


def queue_statistics(conn: psycopg.Connection) -> tuple[float, float | None]:  # type: ignore[type-arg]
    """The planner's picture of procrastinate_jobs: its row estimate and the share of waiting jobs."""
    row = conn.execute(
        """SELECT c.reltuples,
                  (SELECT s.most_common_freqs[array_position(s.most_common_vals::text::text[], 'todo')]
                   FROM pg_stats AS s
                   WHERE s.schemaname = 'public' AND s.tablename = 'procrastinate_jobs' AND s.attname = 'status')
           FROM pg_class AS c WHERE c.oid = 'public.procrastinate_jobs'::regclass"""
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_a_new_environments_first_burst_is_analysed_as_it_is_queued(fresh_postgres: PostgresConfig) -> None:
    """Unanalysed, procrastinate_jobs gets a fetch plan that sorts the whole queue for every job taken."""
    url = fresh_postgres.url
    migrations.upgrade(url)
    burst = 1_200
    with psycopg.connect(url, autocommit=True) as conn:
        assert queue_statistics(conn) == (-1, None), "a new environment's queue was analysed already"
        set_mode(conn, "dispatcher")
        group = [uuid.uuid4() for _ in range(burst)]
        conn.execute(
            "INSERT INTO auth.users (id, email) SELECT u, u::text || '@example.test' FROM unnest(%s::uuid[]) AS u",
            (group,),
        )
        conn.execute(
            "INSERT INTO public.user_settings (user_id, enabled, interval_minutes) "
            "SELECT u, true, 5 FROM unnest(%s::uuid[]) AS u",
            (group,),
        )
        conn.execute("SELECT public.schedule_auto_sync(u, 5) FROM unnest(%s::uuid[]) AS u", (group,))

        assert one(conn, "SELECT public.auto_sync_dispatch(now() + interval '1 hour')") == burst

        rows, waiting = queue_statistics(conn)
        assert rows >= burst and waiting == 1.0
        # The fetch now walks procrastinate's (priority, id) index and stops at the first job.
        plan = "\n".join(line for (line,) in conn.execute(FETCH_PLAN).fetchall())
        assert "Sort" not in plan, plan
        # The statistics fit: a second burst as deep is not analysed again, nor is a small one.
        assert one(conn, "SELECT autosync_private.refresh_queue_statistics(%s)", (burst,)) is False
        assert one(conn, "SELECT autosync_private.refresh_queue_statistics(%s)", (999,)) is False
        # The queue drained and analysed empty (no sample, so no MCVs left either way): a deep burst is.
        conn.execute("DELETE FROM public.procrastinate_jobs")
        conn.execute("VACUUM ANALYZE public.procrastinate_jobs")
        assert queue_statistics(conn)[0] == 0
        assert one(conn, "SELECT autosync_private.refresh_queue_statistics(%s)", (burst,)) is True
