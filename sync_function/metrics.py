"""Prometheus metrics.

Counters of what this process did live in the process that does the work: the worker serves them
on its own port (sum them over workers). Runs end only in a worker (`sync.run_attempt`), so
finished runs are counted there:

- `autosync_import_attempts_total{status}`: attempts by the run status they left (`queued` = retry);
- `autosync_runs_finished_total{status="succeeded"|"failed"}`: runs this process finished;
- `autosync_messages_imported_total`, `autosync_import_seconds`.

The API's /metrics adds what only the database knows across all processes. Every scrape query
costs the same at a million stored messages or runs as at ten (tests/service/test_health.py pins
it with EXPLAIN):

- `autosync_runs_active{status="queued"|"running"}`: read through the partial unique index on
  active runs (revision 0012), so bounded by the number of users. It replaced `autosync_runs`,
  which counted every run ever made by status with a full scan of `sync_runs`; finished runs are
  `autosync_runs_finished_total` now.
- `autosync_messages_stored_estimate`: the planner's row estimate for `messages`
  (`pg_class.reltuples`, refreshed by autovacuum and ANALYZE), absent until the table was first
  analyzed. It replaced the exact `autosync_messages_stored`, a full scan of `messages`.
- `autosync_queue_depth`: jobs waiting, through procrastinate's partial index on 'todo' jobs.
- `autosync_database_up`: 1 when the database answered the scrape.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

REGISTRY = CollectorRegistry(auto_describe=True)

FINISHED = ("succeeded", "failed")
ACTIVE = ("queued", "running")

ATTEMPTS = Counter(
    "autosync_import_attempts", "Import attempts by the run status they left", ["status"], registry=REGISTRY
)
RUNS_FINISHED = Counter(
    "autosync_runs_finished", "Sync runs finished by this process, by outcome", ["status"], registry=REGISTRY
)
MESSAGES = Counter("autosync_messages_imported", "Messages imported", registry=REGISTRY)
IMPORT_SECONDS = Histogram(
    "autosync_import_seconds",
    "Wall time of one import attempt",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
    registry=REGISTRY,
)
# Every outcome is a series from the start, so rate() sees the first one.
for _status in FINISHED:
    RUNS_FINISHED.labels(status=_status)

# The status list matches the predicate of sync_runs_one_active_per_user, so the planner reads
# only that index's entries (one per user at most), never the history.
ACTIVE_RUNS = """
SELECT status, count(*) FROM public.sync_runs
WHERE status IN ('queued', 'running')
GROUP BY status
"""

MESSAGES_ESTIMATE = "SELECT reltuples FROM pg_catalog.pg_class WHERE oid = 'public.messages'::regclass"

QUEUE_DEPTH = "SELECT count(*) FROM public.procrastinate_jobs WHERE status = 'todo'"

SCRAPE_QUERIES = (ACTIVE_RUNS, MESSAGES_ESTIMATE, QUEUE_DEPTH)


def record_attempt(*, status: str, imported: int, seconds: float) -> None:
    """Count one attempt; `status` is the run's status after it (`queued` when it will be retried)."""
    ATTEMPTS.labels(status=status).inc()
    if status in FINISHED:
        RUNS_FINISHED.labels(status=status).inc()
    MESSAGES.inc(imported)
    IMPORT_SECONDS.observe(seconds)


class DatabaseCollector(Collector):
    """Active runs, an estimate of stored messages and the queue depth, as the database sees them now."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        runs = GaugeMetricFamily(
            "autosync_runs_active", "Sync runs queued or running now, all users", labels=["status"]
        )
        messages = GaugeMetricFamily(
            "autosync_messages_stored_estimate",
            "Messages stored, all users: the planner's estimate (pg_class.reltuples), "
            "refreshed by autovacuum and ANALYZE; absent until the table was first analyzed",
        )
        depth = GaugeMetricFamily("autosync_queue_depth", "Import jobs waiting in the queue")
        up = GaugeMetricFamily("autosync_database_up", "1 when the database answered this scrape")
        try:
            with self.pool.connection(timeout=2.0) as conn:
                active: dict[str, int] = dict(conn.execute(ACTIVE_RUNS).fetchall())
                estimate = conn.execute(MESSAGES_ESTIMATE).fetchone()
                waiting = conn.execute(QUEUE_DEPTH).fetchone()
        except Exception:  # a scrape must not fail because the database is down
            up.add_metric([], 0)
            yield up
            return
        for status in ACTIVE:
            runs.add_metric([status], active.get(status, 0))
        # reltuples is -1 while the table was never vacuumed or analyzed: unknown, not zero.
        if estimate is not None and estimate[0] >= 0:
            messages.add_metric([], estimate[0])
        depth.add_metric([], waiting[0] if waiting else 0)
        up.add_metric([], 1)
        yield from (runs, messages, depth, up)


def api_registry(pool: ConnectionPool) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(pool))
    return registry
