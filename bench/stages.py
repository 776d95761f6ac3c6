"""Where a full import's time goes: each stage of `import_mailbox` alone, wall and CPU, on one mailbox.

`.venv/bin/python -m bench.stages [--messages N] [--repeats R]` (after `bench/run` installed what it
needs). Stages, in the order the importer runs them per batch: the raw socket fetch (the ceiling),
the importer's fetch path (imapclient), parsing into rows with the stdlib's full parse and with the
fast tree (`parse_message(fast=False)` / the default), COPY + checkpoint + commit of those rows, and
the whole import in a child process as `bench/run` times it. CPU is this process's user + system
time (all threads), the figure a loaded machine moves least.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import imports
from bench.env import BenchEnv
from harness.dovecot import LOOPBACK_ALLOWED
from sync_function import importer, parse
from sync_function.imap import FetchedMessage, connect


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(action: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = action(*args, **kwargs)
    return time.perf_counter() - wall, cpu_seconds() - cpu, result


def fetch_all(box: imports.Mailbox, batch: int = importer.DEFAULT_BATCH_SIZE) -> list[list[FetchedMessage]]:
    with connect(
        host=box.host,
        port=box.port,
        tls_mode="plain",
        username=box.user,
        password=box.password,
        allowed=LOOPBACK_ALLOWED,
    ) as session:
        session.examine("INBOX")
        uids = session.search_uids(min_uid=1)
        return [session.fetch_messages(uids[i : i + batch]) for i in range(0, len(uids), batch)]


def rows_of(params: dict[str, Any], batches: list[list[FetchedMessage]], *, fast: bool) -> list[list[Any]]:
    if fast:
        return [importer._batch_rows(params, fetched=batch, skipped={}) for batch in batches]
    # The same rows through the stdlib's full parse: what every message cost before the fast tree.
    return [[parse.parse_message(m.raw, fast=False) for m in batch] for batch in batches]


def store(env: BenchEnv, box: imports.Mailbox, params: dict[str, Any], rows: list[list[Any]]) -> None:
    """Write the rows as the importer's writer thread does, into an emptied store."""
    with env.connect() as conn:
        conn.execute(
            "INSERT INTO public.mailbox_state (account_id, mailbox, uidvalidity, last_uid) VALUES (%s, 'INBOX', %s, 0)",
            (box.account_id, params["uidvalidity"]),
        )
        writer = importer._BatchWriter(conn, params=params, direct=True)
        for batch in rows:
            importer._store_batch(writer, batch, last_uid=batch[-1].uid)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {}

    def record(label: str, wall: float, cpu: float) -> None:
        results.setdefault(label, []).append((wall, cpu))

    with BenchEnv() as env:
        env.start_postgres()
        env.start_dovecot()
        box = imports.make_mailbox(env, args.messages, seed=1)
        imports.raw_fetch(box)  # Dovecot's first-access indexing: nobody's cost
        params = {"user_id": box.user_id, "account_id": box.account_id, "mailbox": "INBOX", "uidvalidity": 1}
        for _ in range(args.repeats):
            wall, cpu, _ = timed(imports.raw_fetch, box)
            record("raw socket fetch (UID FETCH 1:*)", wall, cpu)
            wall, cpu, batches = timed(fetch_all, box)
            record("importer fetch path (imapclient)", wall, cpu)
            wall, cpu, _ = timed(rows_of, params, batches, fast=False)
            record("parse: stdlib full parse", wall, cpu)
            wall, cpu, rows = timed(rows_of, params, batches, fast=True)
            record("parse + rows: fast tree (as imported)", wall, cpu)
            imports.forget_import(env, box)
            wall, cpu, _ = timed(store, env, box, params, rows)
            record("COPY + checkpoint + commit", wall, cpu)
            imports.forget_import(env, box)
            child = imports.autosync_import(env, box)
            record("whole import (child process, overlapped)", child["seconds"], child["cpu_seconds"])
    print(f"{args.messages:,} messages, median of {args.repeats}")
    for label, values in results.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"{label:<44} wall {wall:6.3f} s   cpu {cpu:6.3f} s")


if __name__ == "__main__":
    main()
