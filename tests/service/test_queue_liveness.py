"""The queue pool's liveness check: no round trip for a connection just used, the full one otherwise."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from sync_function.config import Config
from sync_function.db import RecentlyAlive, queue_connector

pytestmark = pytest.mark.docker

BACKEND = "SELECT pg_backend_pid() AS pid"


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every empty-query check psycopg_pool runs, still run for real: one entry each."""
    calls: list[int] = []
    real = AsyncConnectionPool.check_connection

    async def counted(conn: Any) -> None:
        calls.append(1)
        await real(conn)

    monkeypatch.setattr(AsyncConnectionPool, "check_connection", staticmethod(counted))
    return calls


def test_a_connection_just_used_is_handed_out_without_a_round_trip(
    service_config: Config, full_checks: list[int]
) -> None:
    async def scenario() -> set[int]:
        connector = queue_connector(service_config)
        await connector.open_async()
        try:
            return {(await connector.execute_query_one_async(BACKEND))["pid"] for _ in range(20)}
        finally:
            await connector.close_async()

    pids = asyncio.run(scenario())
    # The pool hands its few connections out in turn: each was checked at its first hand-out, not
    # at the 20 that followed within the window (one more allowed for a stall past the window).
    assert 1 <= len(pids) < 20
    assert len(pids) <= len(full_checks) <= len(pids) + 1


def test_a_session_the_server_ended_is_replaced_within_the_window(
    service_config: Config, database_url: str, full_checks: list[int]
) -> None:
    async def scenario() -> tuple[set[int], int, set[int]]:
        connector = queue_connector(service_config)
        await connector.open_async()
        try:
            # Every connection of the pool (it hands them out in turn), each just used.
            pids = {(await connector.execute_query_one_async(BACKEND))["pid"] for _ in range(20)}
            ended = min(pids)
            with psycopg.connect(database_url, autocommit=True) as owner:
                owner.execute("SELECT pg_terminate_backend(%s)", (ended,))
            await asyncio.sleep(0.1)  # well inside the window: only the socket can tell
            # One of these is handed the ended session, checks it, and gets another connection instead.
            after = {(await connector.execute_query_one_async(BACKEND))["pid"] for _ in range(2 * len(pids))}
            return pids, ended, after
        finally:
            await connector.close_async()

    pids, ended, after = asyncio.run(scenario())
    assert ended not in after
    # Each first hand-out and the ended session's failed check (and a replacement's first hand-out,
    # or a stall past the window); without the window, every one of the 20 + 2n hand-outs.
    assert len(pids) + 1 <= len(full_checks) < 2 * len(pids) + 1


def test_an_idle_or_unknown_connection_gets_the_full_check(database_url: str, full_checks: list[int]) -> None:
    async def scenario() -> list[int]:
        liveness = RecentlyAlive(window_s=1.0)
        seen: list[int] = []
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await liveness.check(conn)  # never given back to the pool: checked
            seen.append(len(full_checks))
            await liveness.returned(conn)
            await liveness.check(conn)  # just given back: not checked
            seen.append(len(full_checks))
            await liveness.returned(conn)
            await asyncio.sleep(1.1)
            await liveness.check(conn)  # given back longer ago than the window: checked
            seen.append(len(full_checks))
            await liveness.check(conn)  # a second hand-out without a return in between: checked
            seen.append(len(full_checks))
        return seen

    assert asyncio.run(scenario()) == [1, 1, 2, 3]
