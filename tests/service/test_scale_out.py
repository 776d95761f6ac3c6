"""Workers scale out: separate `autosync worker` processes on one database share the queue."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from harness import mailgen
from harness.processes import stop as stop_processes
from harness.service import Service, worker_env
from tests.support.api import add_account, enable, trigger, wait_for_run
from tests.support.users import users

pytestmark = pytest.mark.docker


@pytest.fixture
def two_workers(service: Service) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "sync_function.cli", "worker"],
            env=worker_env(service.config),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    yield processes
    stop_processes(processes)
    for process in processes:
        if process.stderr is not None:
            process.stderr.close()


def test_two_worker_processes_share_the_imports(
    service: Service,
    database_url: str,
    dovecot,
    two_workers: list[subprocess.Popen[bytes]],  # type: ignore[no-untyped-def]
) -> None:
    with users(database_url, 8) as user_ids:
        for index, user in enumerate(user_ids):
            mailbox_user = add_account(service, user, dovecot)
            dovecot.deliver(mailbox_user, [m.raw for m in mailgen.generate(40, seed=100 + index)])
            enable(service, user)
        run_ids = [trigger(service, user) for user in user_ids]
        results = [wait_for_run(database_url, run_id, timeout_s=120) for run_id in run_ids]
        assert [r[:3] for r in results] == [("succeeded", 1, 40)] * 8
        with psycopg.connect(database_url) as conn:
            workers = conn.execute(
                "SELECT DISTINCT worker FROM public.sync_run_attempts WHERE run_id = ANY(%s::uuid[])",
                (run_ids,),
            ).fetchall()
        assert len(workers) == 2, f"both processes should have taken imports, saw {workers}"
    for process in two_workers:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
