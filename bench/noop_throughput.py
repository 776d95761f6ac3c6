"""End-to-end no-op throughput: queue → worker → IMAP LOGIN and STATUS → run recorded.

N users, each with their own Dovecot user (a passwd-file entry and a Maildir of two small
messages) and their own `email_accounts` row with an encrypted password, as the API stores it.
The first pass imports every mailbox (real checkpoints in `mailbox_state`); every later pass is a
no-op: the worker logs in, asks STATUS, finds the checkpoint current, and records the run.

Workers are real `autosync worker` processes, as deployed, started before the runs are queued so
that their start-up is nobody's cost. The N runs are queued in one transaction through the
dispatcher's own bulk enqueue (`autosync_private.defer_cron_runs`), the path dispatcher mode takes;
the pass ends when every run is finished. Throughput = N ÷ (last run finished - runs queued), both
read from the database's clock; latency = a run's `started_at` → `finished_at` (the worker's own
work: attempt opened, account read, IMAP, checkpoint compared, attempt closed).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.env import BenchEnv
from harness.processes import stop as stop_processes
from harness.service import make_config, worker_env
from sync_function.config import Config
from sync_function.crypto import encrypt_password

# Two small messages per mailbox: the first import has something to store, and the no-op's STATUS
# has a real UIDNEXT to compare with the checkpoint.
MESSAGES = [
    (
        f"From: sender{n}@bench.test\r\nTo: someone@bench.test\r\nSubject: message {n}\r\n"
        f"Message-ID: <bench-{n}@bench.test>\r\nDate: Sat, 28 Nov 2026 12:00:0{n} +0000\r\n\r\nbody {n}\r\n"
    ).encode()
    for n in (1, 2)
]

ENQUEUE = """
WITH inserted AS (
    INSERT INTO public.sync_runs (user_id, trigger, status)
    SELECT u, 'cron', 'queued' FROM unnest(%(users)s::uuid[]) AS u
    RETURNING id, user_id
)
SELECT autosync_private.defer_cron_runs(array_agg(id), array_agg(user_id)), now() FROM inserted
"""

PROGRESS = """
SELECT count(*) FILTER (WHERE status IN ('succeeded', 'failed')), count(*) FILTER (WHERE status = 'failed')
FROM public.sync_runs WHERE queued_at >= %(since)s
"""

TIMES = """
SELECT extract(epoch FROM finished_at - started_at), extract(epoch FROM finished_at - queued_at)
FROM public.sync_runs WHERE queued_at >= %(since)s AND status = 'succeeded'
"""

FIRST_ERROR = "SELECT error FROM public.sync_runs WHERE queued_at >= %(since)s AND status = 'failed' LIMIT 1"


@dataclass
class Pass:
    """One pass of N runs through `workers` worker processes."""

    workers: int
    concurrency: int
    runs: int
    seconds: float
    failed: int
    run_seconds: list[float] = field(default_factory=list)

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.seconds if self.seconds else float("nan")


@dataclass
class Population:
    users: list[uuid.UUID]
    config: Config


def prepare(env: BenchEnv, count: int) -> Population:
    """`count` users with a Dovecot mailbox each and an account row pointing at it (not imported yet)."""
    assert env.dovecot is not None, "start_dovecot() first"
    config = make_config(env.database_url)
    key = config.encryption_key.get_secret_value()
    tag = secrets.token_hex(3)
    logins = {f"noop-{tag}-{index}": secrets.token_urlsafe(9) for index in range(count)}
    env.dovecot.add_users_with_mail(logins, MESSAGES)
    users = [uuid.uuid4() for _ in logins]
    rows = [
        (user, env.dovecot.host, env.dovecot.port, name, encrypt_password(key, password))
        for user, (name, password) in zip(users, logins.items(), strict=True)
    ]
    with env.connect() as conn, conn.transaction():
        conn.execute(
            "INSERT INTO auth.users (id, email) SELECT u, u::text || '@bench.test' FROM unnest(%s::uuid[]) AS u",
            (users,),
        )
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted,
                                                      mailbox)
                   VALUES (%s, %s, %s, 'plain', %s, %s, 'INBOX')""",
                rows,
            )
    return Population(users=users, config=config)


@contextlib.contextmanager
def workers(
    env: BenchEnv, config: Config, count: int, concurrency: int | None, *, source: Path | None = None
) -> Iterator[None]:
    """`count` `autosync worker` processes, registered with the queue before the block starts.

    `source`: run the workers' code from another checkout of the repository (before/after a change,
    against the same database, Dovecot and population).
    """
    environment = worker_env(config)
    if concurrency is None:
        environment.pop("AUTOSYNC_WORKER_CONCURRENCY")  # the service's own default
    else:
        environment["AUTOSYNC_WORKER_CONCURRENCY"] = str(concurrency)
    environment["PYTHONPATH"] = os.pathsep.join(([str(source)] if source else []) + sys.path)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "sync_function.cli", "worker"],
            env=environment,
            cwd=source,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    try:
        _wait_registered(env, processes, count)
        yield
    finally:
        stop_processes(processes)
        with env.connect() as conn:
            conn.execute("DELETE FROM public.procrastinate_workers")


def _wait_registered(env: BenchEnv, processes: list[subprocess.Popen[bytes]], count: int) -> None:
    deadline = time.monotonic() + 60
    with env.connect() as conn:
        while True:
            row = conn.execute("SELECT count(*) FROM public.procrastinate_workers").fetchone()
            if row is not None and row[0] >= count:
                return
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("an autosync worker exited during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {row[0] if row else 0} of {count} workers registered within 60 s")
            time.sleep(0.2)


def run_pass(
    env: BenchEnv,
    population: Population,
    *,
    worker_count: int,
    concurrency: int | None,
    timeout_s: float = 600.0,
    source: Path | None = None,
) -> Pass:
    """Queue one run per user, with `worker_count` warm workers waiting, and time them all."""
    effective = concurrency or population.config.worker_concurrency
    with workers(env, population.config, worker_count, concurrency, source=source), env.connect() as conn:
        with conn.transaction():
            row = conn.execute(ENQUEUE, {"users": population.users}).fetchone()
        assert row is not None
        queued, since = int(row[0]), row[1]
        if queued != len(population.users):
            raise RuntimeError(f"queued {queued} of {len(population.users)} runs")
        deadline = time.monotonic() + timeout_s
        while True:
            done = conn.execute(PROGRESS, {"since": since}).fetchone()
            assert done is not None
            if done[0] >= queued:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{queued - done[0]} of {queued} runs unfinished after {timeout_s:.0f} s")
            time.sleep(0.25)
        failed = int(done[1])
        if failed:
            error = conn.execute(FIRST_ERROR, {"since": since}).fetchone()
            raise RuntimeError(f"{failed} of {queued} runs failed, e.g.: {error[0] if error else '?'}")
        rows = conn.execute(TIMES, {"since": since}).fetchall()
    return Pass(
        workers=worker_count,
        concurrency=effective,
        runs=queued,
        seconds=max(float(r[1]) for r in rows),
        failed=failed,
        run_seconds=[float(r[0]) for r in rows],
    )


def imported_checkpoints(env: BenchEnv, population: Population) -> int:
    """Accounts of the population whose INBOX checkpoint holds both messages (the first import done)."""
    with env.connect() as conn:
        row = conn.execute(
            """SELECT count(*) FROM public.mailbox_state AS s
               JOIN public.email_accounts AS a ON a.id = s.account_id
               WHERE a.user_id = ANY (%s) AND s.last_uid >= %s""",
            (population.users, len(MESSAGES)),
        ).fetchone()
    return int(row[0]) if row else 0
