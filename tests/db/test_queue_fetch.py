"""procrastinate's job fetch at depth: its same-lock question is one probe of revision 0028's index."""

from __future__ import annotations

import secrets
import time

import psycopg
import pytest

pytestmark = pytest.mark.docker

INDEX = "autosync_procrastinate_jobs_lock_idx"
DEPTH = 2_000


def index_scans(conn: psycopg.Connection) -> int:  # type: ignore[type-arg]
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT idx_scan FROM pg_catalog.pg_stat_user_indexes WHERE indexrelname = %s", (INDEX,)
    ).fetchone()
    assert row is not None, f"index {INDEX} is missing"
    return int(row[0])


def test_a_fetch_from_a_deep_queue_uses_the_lock_index(database_url: str, db: psycopg.Connection) -> None:
    # A queue of its own: no worker of another test listens to it, and its rows are easy to remove.
    queue = f"autosync-test-fetch-{secrets.token_hex(4)}"
    (worker_id,) = db.execute(
        "INSERT INTO public.procrastinate_workers DEFAULT VALUES RETURNING id"
    ).fetchone()  # type: ignore[misc]
    try:
        db.execute(
            """INSERT INTO public.procrastinate_jobs (queue_name, task_name, lock, args)
               SELECT %s, 'autosync-test', 'user:' || gen_random_uuid(), '{}'
               FROM generate_series(1, %s)""",
            (queue, DEPTH),
        )
        db.execute("ANALYZE public.procrastinate_jobs")  # the plan a queue this deep gets once analyzed
        before = index_scans(db)
        with psycopg.connect(database_url, autocommit=True) as fetcher:
            row = fetcher.execute(
                "SELECT id, lock FROM public.procrastinate_fetch_job_v2(%s, %s)", ([queue], worker_id)
            ).fetchone()
            assert row is not None and row[0] is not None, "the fetch took no job"
            # Counters reach shared memory when the backend goes idle; ask it to do so now.
            fetcher.execute("SELECT pg_stat_force_next_flush()")
        deadline = time.monotonic() + 10
        while (after := index_scans(db)) == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert after > before, f"the fetch's same-lock check did not use {INDEX}"
        taken = db.execute(
            "SELECT status, lock FROM public.procrastinate_jobs WHERE id = %s", (row[0],)
        ).fetchone()
        assert taken == ("doing", row[1])
    finally:
        db.execute("DELETE FROM public.procrastinate_jobs WHERE queue_name = %s", (queue,))
        db.execute("DELETE FROM public.procrastinate_workers WHERE id = %s", (worker_id,))
