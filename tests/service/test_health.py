"""Health, readiness, metrics, history access, the OpenAPI command, and configuration errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest

from harness.service import Service
from infra import migrations
from sync_function.db import EXPECTED_REVISION
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


def test_metrics_expose_runs_and_queue_depth(service: Service) -> None:
    body = service.client.get("/metrics").text
    assert "autosync_queue_depth" in body
    assert "autosync_database_up 1.0" in body
    assert "autosync_messages_stored" in body
    assert "autosync_import_seconds_bucket" in body


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
        "AUTOSYNC_JWT_SECRET: is not set",
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
