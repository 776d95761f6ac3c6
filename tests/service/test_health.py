"""Health, readiness, metrics, history access, the OpenAPI command, and configuration errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.service import Service, WorkerThread
from infra import migrations
from sync_function import metrics
from sync_function.crypto import encrypt_password
from sync_function.db import EXPECTED_REVISION
from tests.support.api import enable, trigger, wait_for_run
from tests.support.users import users

pytestmark = pytest.mark.docker


def test_expected_revision_is_alembic_head() -> None:
    assert migrations.head() == EXPECTED_REVISION


def test_healthz_and_readyz(service: Service) -> None:
    assert service.client.get("/healthz").json() == {"status": "ok"}
    ready = service.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "ok", "schema": EXPECTED_REVISION}


def test_readyz_reports_a_schema_behind(service: Service, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE public.alembic_version SET version_num = '0008'")
        try:
            response = service.client.get("/readyz")
        finally:
            conn.execute("UPDATE public.alembic_version SET version_num = %s", (EXPECTED_REVISION,))
    assert response.status_code == 503
    assert "at 0008, expected" in response.json()["schema"]


def scrape(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    families = text_string_to_metric_families(service.client.get("/metrics").text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def active(status: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("autosync_runs_active", (("status", status),))


def test_metrics_expose_active_runs_messages_and_queue_depth(service: Service) -> None:
    samples = scrape(service)
    assert samples[("autosync_database_up", ())] == 1
    assert {active("queued"), active("running"), ("autosync_queue_depth", ())} <= set(samples)
    # Renamed when their meaning changed (see sync_function/metrics.py): no full scans any more.
    assert not {name for name, _ in samples} & {"autosync_runs", "autosync_messages_stored"}
    assert "autosync_import_seconds_bucket" in {name for name, _ in samples}


def test_metric_values_on_a_real_database(service: Service, database_url: str) -> None:
    with users(database_url, 4) as (queued_a, queued_b, running, finished):
        before = scrape(service)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                """INSERT INTO public.sync_runs (user_id, trigger, status)
                   SELECT u, 'manual', s FROM unnest(%s::uuid[], %s::text[]) AS t (u, s)""",
                (
                    [queued_a, queued_b, running, finished, finished, finished],
                    ["queued", "queued", "running", "succeeded", "failed", "succeeded"],
                ),
            )
            (account,) = conn.execute(
                """INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)
                   VALUES (%s, 'imap.example.com', 993, 'tls', 'metrics', '\\x00'::bytea) RETURNING id""",
                (finished,),
            ).fetchone()  # type: ignore[misc]
            conn.execute(
                """INSERT INTO public.messages (user_id, account_id, mailbox, uidvalidity, uid, size, skipped_reason)
                   SELECT %s, %s, 'INBOX', 1, n, 1, 'too_large' FROM generate_series(1, 7) AS n""",
                (finished, account),
            )
            # What autovacuum does on its own after enough changes; on a small table ANALYZE reads
            # every row, so the estimate is exact.
            conn.execute("ANALYZE public.messages")
            (stored,) = conn.execute("SELECT count(*) FROM public.messages").fetchone()  # type: ignore[misc]
        after = scrape(service)

    assert {labels for name, labels in after if name == "autosync_runs_active"} == {
        active("queued")[1],
        active("running")[1],
    }, "finished runs are counted by the workers, not read from the history"
    assert after[active("queued")] - before[active("queued")] == 2
    assert after[active("running")] - before[active("running")] == 1
    assert stored >= 7
    assert after[("autosync_messages_stored_estimate", ())] == stored


def test_the_worker_counts_the_runs_it_finishes(
    service: Service,
    database_url: str,
    dovecot,
    worker: WorkerThread,  # type: ignore[no-untyped-def]
) -> None:
    def finished(status: str) -> float:
        return metrics.REGISTRY.get_sample_value("autosync_runs_finished_total", {"status": status}) or 0.0

    before = {status: finished(status) for status in ("succeeded", "failed")}
    name, _ = dovecot.new_user()
    with users(database_url, 2) as (no_accounts, wrong_password):
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                """INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)
                   VALUES (%s, %s, %s, 'plain', %s, %s)""",
                (
                    wrong_password,
                    dovecot.host,
                    dovecot.port,
                    name,
                    encrypt_password(service.config.encryption_key.get_secret_value(), "not-the-password"),
                ),
            )
        for user in (no_accounts, wrong_password):
            enable(service, user)
        assert wait_for_run(database_url, trigger(service, no_accounts))[0] == "succeeded"
        assert wait_for_run(database_url, trigger(service, wrong_password))[0] == "failed"

    # The worker runs in this process, so its counters are this process's registry.
    assert {status: finished(status) - before[status] for status in before} == {"succeeded": 1, "failed": 1}


def test_no_scrape_query_scans_messages_or_run_history(database_url: str) -> None:
    """At a million rows a full scan per scrape hurts: pin that the plans never do one.

    Seeded with finished runs (what history is mostly made of) and analyzed, so the planner
    chooses as it would on a big database, not as on an empty one.
    """
    with users(database_url) as (user,), psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO public.sync_runs (user_id, trigger, status)
               SELECT %s, 'cron', 'succeeded' FROM generate_series(1, 20000)""",
            (user,),
        )
        conn.execute(
            """INSERT INTO public.procrastinate_jobs (queue_name, task_name, args, status)
               SELECT 'metrics-test', 'metrics-test', '{}', 'failed' FROM generate_series(1, 20000)"""
        )
        try:
            conn.execute("ANALYZE public.sync_runs, public.procrastinate_jobs")
            conn.execute("SET ROLE service_role")  # what the API runs as: it must be allowed to read all this
            plans = {query: explain(conn, query) for query in metrics.SCRAPE_QUERIES}
            for query in metrics.SCRAPE_QUERIES:
                conn.execute(query)
        finally:
            conn.execute("RESET ROLE")
            conn.execute("DELETE FROM public.procrastinate_jobs WHERE queue_name = 'metrics-test'")
            conn.execute("DELETE FROM public.sync_runs WHERE user_id = %s", (user,))
            conn.execute("ANALYZE public.sync_runs, public.procrastinate_jobs")

    for query, nodes in plans.items():
        seq_scans = {n.get("Relation Name") for n in nodes if n["Node Type"] == "Seq Scan"}
        assert not seq_scans & {"messages", "sync_runs", "procrastinate_jobs"}, (query, nodes)
        # The messages count comes from the catalog: the table itself is never read.
        assert "messages" not in {n.get("Relation Name") for n in nodes}, query
    # Index Scan or Bitmap Index Scan: either way through the partial index of active runs only.
    indexes = {n.get("Index Name") for n in plans[metrics.ACTIVE_RUNS]}
    assert "sync_runs_one_active_per_user" in indexes, plans[metrics.ACTIVE_RUNS]
    (estimate,) = [n for n in plans[metrics.MESSAGES_ESTIMATE] if "Relation Name" in n]
    assert estimate["Relation Name"] == "pg_class"


def explain(conn: psycopg.Connection, query: str) -> list[dict[str, Any]]:
    """Every node of the plan of `query`, flattened."""
    (document,) = conn.execute("EXPLAIN (FORMAT JSON) " + query).fetchone()  # type: ignore[misc, operator]
    nodes, pending = [], [document[0]["Plan"]]
    while pending:
        node = pending.pop()
        nodes.append(node)
        pending.extend(node.get("Plans", []))
    return nodes


def test_history_is_per_user_and_validates_limit(service: Service, database_url: str) -> None:
    with users(database_url, 2) as (a, b):
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO public.sync_runs (user_id, trigger, status) VALUES (%s, 'manual', 'succeeded')",
                (a,),
            )
        assert len(service.client.get("/api/sync/history", headers=service.as_user(a)).json()["runs"]) == 1
        assert service.client.get("/api/sync/history", headers=service.as_user(b)).json()["runs"] == []
        for limit in ("0", "101", "abc"):
            response = service.client.get(f"/api/sync/history?limit={limit}", headers=service.as_user(a))
            assert response.status_code == 422
        assert service.client.get("/api/sync/history").status_code == 401


def test_openapi_command_prints_the_document() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sync_function.cli", "openapi"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "")},
    )
    document = json.loads(result.stdout)
    assert "/api/settings/save-auto-sync" in document["paths"]
    assert "/functions/v1/auto-sync" in document["paths"]


def test_serve_without_configuration_names_each_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sync_function.cli", "serve"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ.get("PATH", ""), "AUTOSYNC_SERVICE_KEY": "short"},
    )
    assert result.returncode == 2
    for expected in (
        "DATABASE_URL: is not set",
        "AUTOSYNC_SERVICE_KEY:",
        "AUTOSYNC_JWT_JWKS_URL: Value error, neither this nor AUTOSYNC_JWT_SECRET is set",
        "AUTOSYNC_ENCRYPTION_KEY: is not set",
    ):
        assert expected in result.stderr
    assert "short" not in result.stderr


def test_service_connections_work_as_service_role(database_url: str) -> None:
    from harness.service import make_config
    from sync_function.db import open_pool

    pool = open_pool(make_config(database_url), name="autosync-test", max_size=1)
    try:
        with pool.connection() as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("service_role",)
            # What the owner may do and the service must not: read the key, touch pg_cron, run DDL.
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT key FROM autosync_private.service_key")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT jobid FROM cron.job")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE TABLE public.not_allowed (id int)")
    finally:
        pool.close()
