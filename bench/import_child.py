"""One full import in a process of its own, so that its peak RSS is the import's and nothing else's.

Run as `python -m bench.import_child '<json args>'`; prints one JSON line with the import's
counts, its wall time and the process's memory (VmHWM is the kernel's peak-RSS mark).
It loads the worker's modules first (`sync_function.queue`), so the baseline is a worker's.
"""

from __future__ import annotations

import cProfile
import json
import resource
import sys
import time
import uuid
from pathlib import Path

import psycopg

import sync_function.queue  # noqa: F401 - the worker's import footprint belongs in the baseline
from sync_function.destinations import DestinationPolicy
from sync_function.importer import ImapAccount, import_mailbox

# The benchmark Dovecot listens on loopback, which imports refuse unless allowed.
LOOPBACK_ALLOWED = DestinationPolicy.parse(["127.0.0.0/8", "::1/128"])


def memory_kb() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in kB."""
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            out[key] = int(value.split()[0])
    return out


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads, and of its children that ended."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class RssTrace:
    """VmRSS after each committed batch (the importer's progress callback), to see whether it stays flat."""

    def __init__(self) -> None:
        self.samples: list[int] = []

    def sample(self, done: int, total: int) -> None:
        if done:
            self.samples.append(memory_kb()["VmRSS"])

    def quarters(self) -> dict[str, int]:
        """The highest VmRSS in the first and in the last quarter of the batches."""
        if not self.samples:
            return {}
        quarter = max(1, len(self.samples) // 4)
        return {"rss_first_quarter_kb": max(self.samples[:quarter]), "rss_last_quarter_kb": max(self.samples[-quarter:])}


def main(argv: list[str]) -> None:
    args = json.loads(argv[1])
    account = ImapAccount(
        account_id=uuid.UUID(args["account_id"]),
        host=args["host"],
        port=int(args["port"]),
        tls_mode="plain",
        username=args["username"],
        password=args["password"],
    )
    before = memory_kb()
    rss = RssTrace()
    profiler = cProfile.Profile() if args.get("profile") else None
    with psycopg.connect(args["database_url"], autocommit=True) as conn:
        started, cpu_started = time.perf_counter(), cpu_seconds()
        if profiler is not None:
            profiler.enable()
        result = import_mailbox(conn, account=account, user_id=uuid.UUID(args["user_id"]), timeout_s=120.0,
                                 allowed=LOOPBACK_ALLOWED, on_progress=rss.sample)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - started
        cpu = cpu_seconds() - cpu_started
    if profiler is not None:
        profiler.dump_stats(args["profile"])
    after = memory_kb()
    print(
        json.dumps(
            {
                "fetched": result.fetched,
                "imported": result.imported,
                "bytes": result.bytes,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "rss_before_kb": before["VmRSS"],
                "peak_rss_kb": after["VmHWM"],
                **rss.quarters(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv)
