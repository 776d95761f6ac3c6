"""The import queue: procrastinate tasks, a backoff retry strategy, and the worker entry point.

Jobs are enqueued in the API's transaction (see runs.request_run); this module only runs them.
Workers scale out: any number of `autosync worker` processes, on any hosts, share one database.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import uuid
from typing import Any

import procrastinate
import structlog
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision

from sync_function import runs, sync
from sync_function.config import Config
from sync_function.db import open_pool, queue_connector

log = structlog.get_logger(__name__)


class BackoffRetry(BaseRetryStrategy):
    """Attempt n (from 1) that fails waits base * 2**(n-1) seconds; none after `max_attempts`."""

    def __init__(self, *, max_attempts: int, base_seconds: float) -> None:
        self.max_attempts = max_attempts
        self.base_seconds = base_seconds

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        attempt = job.attempts + 1
        if attempt >= self.max_attempts:
            return None
        return RetryDecision(retry_in={"seconds": self.base_seconds * 2 ** (attempt - 1)})  # type: ignore[typeddict-item]


def build_app(config: Config) -> procrastinate.App:
    app = procrastinate.App(connector=queue_connector(config))

    @app.task(
        name=runs.TASK_NAME,
        queue=runs.QUEUE,
        pass_context=True,
        retry=BackoffRetry(max_attempts=config.max_attempts, base_seconds=config.retry_base_seconds),
    )
    def import_user(context: procrastinate.JobContext, run_id: str) -> dict[str, Any]:
        deps = context.additional_context
        attempt = context.job.attempts + 1
        result = sync.run_attempt(
            deps["pool"],
            config,
            run_id=uuid.UUID(run_id),
            attempt=attempt,
            final=attempt >= config.max_attempts,
            ssl_context=deps.get("ssl_context"),
            worker=context.worker_name,
        )
        return {"status": result.status, "imported": result.imported}

    return app


async def run_worker(
    config: Config,
    *,
    concurrency: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
    name: str | None = None,
) -> None:
    """Run a worker until cancelled (SIGINT/SIGTERM stop it gracefully)."""
    app = build_app(config)
    pool = open_pool(config, name="autosync-worker", max_size=(concurrency or config.worker_concurrency) + 1)
    try:
        async with app.open_async():
            rescuer = asyncio.create_task(
                _retry_stalled_jobs(
                    app, every_s=config.stalled_check_seconds, silent_s=config.heartbeat_seconds * 3
                )
            )
            try:
                await app.run_worker_async(
                    queues=[runs.QUEUE],
                    concurrency=concurrency or config.worker_concurrency,
                    name=name or f"autosync-worker-{socket.gethostname()}-{os.getpid()}",
                    additional_context={"pool": pool, "ssl_context": ssl_context},
                    # Finished jobs are history in sync_runs already; the queue keeps only live work.
                    delete_jobs="successful",
                    fetch_job_polling_interval=1.0,
                    update_heartbeat_interval=config.heartbeat_seconds,
                    stalled_worker_timeout=config.heartbeat_seconds * 3,
                )
            finally:
                rescuer.cancel()
    finally:
        pool.close()


async def _retry_stalled_jobs(app: procrastinate.App, *, every_s: float, silent_s: float) -> None:
    """Put back in the queue the jobs of workers that stopped sending heartbeats (killed, lost host).

    Every worker runs this; a job already picked up again by another worker is simply skipped.
    """
    while True:
        await asyncio.sleep(every_s)
        try:
            stalled = await app.job_manager.get_stalled_jobs(
                queue=runs.QUEUE, seconds_since_heartbeat=silent_s
            )
            for job in stalled:
                try:
                    await app.job_manager.retry_job(job)
                    log.warning("retrying a stalled import job", job_id=job.id)
                except Exception as exc:  # usually: another worker got there first
                    log.info("stalled job not retried", job_id=job.id, reason=type(exc).__name__)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database may be briefly away; try again next round
            log.warning("stalled-job check failed", error=type(exc).__name__)
