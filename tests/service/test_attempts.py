"""Opening and closing an attempt (sync_function.runs): one statement each, same outcomes as before."""

from __future__ import annotations

import psycopg

from sync_function import runs
from tests.support.users import users


def _state(database_url: str, run_id: object) -> tuple[object, ...]:
    with psycopg.connect(database_url) as conn:
        run = conn.execute(
            "SELECT status, attempts, messages_imported, error IS NULL FROM public.sync_runs WHERE id = %s",
            (run_id,),
        ).fetchone()
        attempts = conn.execute(
            "SELECT attempt, status, worker FROM public.sync_run_attempts WHERE run_id = %s ORDER BY attempt",
            (run_id,),
        ).fetchall()
    return (run, attempts)


def test_attempts_open_close_and_interrupted_ones_are_closed(database_url: str) -> None:
    with users(database_url) as [user], psycopg.connect(database_url, autocommit=True) as conn:
        run_id = runs.request_run(conn, user_id=user, trigger="manual", enqueue=False).run_id
        assert runs.start_attempt(conn, run_id=run_id, attempt=1, worker="w1") == user
        # Attempt 1's worker died without closing it; attempt 2 closes it as interrupted.
        assert runs.start_attempt(conn, run_id=run_id, attempt=2, worker="w2") == user
        assert _state(database_url, run_id) == (
            ("running", 2, 0, True),
            [(1, "failed", "w1"), (2, "running", "w2")],
        )
        assert (
            runs.finish_attempt(conn, run_id=run_id, attempt=2, messages=3, error="boom", final=False)
            == "queued"
        )
        assert runs.start_attempt(conn, run_id=run_id, attempt=3, worker="w3") == user
        assert (
            runs.finish_attempt(conn, run_id=run_id, attempt=3, messages=4, error=None, final=True)
            == "succeeded"
        )
        assert _state(database_url, run_id) == (
            ("succeeded", 3, 7, True),
            [(1, "failed", "w1"), (2, "failed", "w2"), (3, "succeeded", "w3")],
        )
        # A finished run opens no attempt and changes nothing.
        assert runs.start_attempt(conn, run_id=run_id, attempt=4, worker="w4") is None
        assert len(_state(database_url, run_id)[1]) == 3  # type: ignore[arg-type]


def test_in_a_callers_transaction_nothing_is_committed_for_it(database_url: str) -> None:
    with users(database_url) as [user]:
        with psycopg.connect(database_url, autocommit=True) as conn:
            run_id = runs.request_run(conn, user_id=user, trigger="manual", enqueue=False).run_id
        with psycopg.connect(database_url) as conn:  # not autocommit: the caller owns the transaction
            with conn.transaction(force_rollback=True):
                assert runs.start_attempt(conn, run_id=run_id, attempt=1, worker="w") == user
            conn.commit()
        assert _state(database_url, run_id) == (("queued", 0, 0, True), [])
