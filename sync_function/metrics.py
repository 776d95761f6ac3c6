"""Prometheus metrics.

Counters of what this process did (attempts, messages, import seconds) live in the process that
does the work: the worker serves them on its own port. The API's /metrics adds what only the
database knows across all processes: runs by status and the queue depth, read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

REGISTRY = CollectorRegistry(auto_describe=True)

ATTEMPTS = Counter("autosync_import_attempts", "Import attempts by outcome", ["status"], registry=REGISTRY)
MESSAGES = Counter("autosync_messages_imported", "Messages imported", registry=REGISTRY)
IMPORT_SECONDS = Histogram(
    "autosync_import_seconds",
    "Wall time of one import attempt",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
    registry=REGISTRY,
)


def record_attempt(*, status: str, imported: int, seconds: float) -> None:
    ATTEMPTS.labels(status=status).inc()
    MESSAGES.inc(imported)
    IMPORT_SECONDS.observe(seconds)


class DatabaseCollector(Collector):
    """Runs by status, messages imported and queue depth, as the database sees them now."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        runs = GaugeMetricFamily("autosync_runs", "Sync runs by status", labels=["status"])
        messages = GaugeMetricFamily("autosync_messages_stored", "Messages stored, all users")
        depth = GaugeMetricFamily("autosync_queue_depth", "Import jobs waiting in the queue")
        up = GaugeMetricFamily("autosync_database_up", "1 when the database answered this scrape")
        try:
            with self.pool.connection(timeout=2.0) as conn:
                for status, count in conn.execute(
                    "SELECT status, count(*) FROM public.sync_runs GROUP BY status"
                ).fetchall():
                    runs.add_metric([status], count)
                row = conn.execute("SELECT count(*) FROM public.messages").fetchone()
                messages.add_metric([], row[0] if row else 0)
                row = conn.execute(
                    "SELECT count(*) FROM public.procrastinate_jobs WHERE status = 'todo'"
                ).fetchone()
                depth.add_metric([], row[0] if row else 0)
            up.add_metric([], 1)
        except Exception:  # a scrape must not fail because the database is down
            up.add_metric([], 0)
            yield up
            return
        yield from (runs, messages, depth, up)


def api_registry(pool: ConnectionPool) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(pool))
    return registry
