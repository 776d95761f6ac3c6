"""Authorization and secrets: user A can neither read nor change user B's data, through the API or
as `authenticated` in SQL; bad tokens are 401 on every user endpoint; the service key and mailbox
passwords appear in no log, response, cron table or setting.

Builds on tests/service/test_settings_api.py (eleven bad tokens on the settings endpoints),
tests/db/test_scheduling.py (scheduling functions across users) and tests/db/test_secrets.py
(the key in GUCs, cron tables and the server log after direct trigger calls)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness import mailgen
from harness.dovecot import DovecotServer
from harness.ports import free_port
from harness.service import Service, worker_env
from infra import dbsettings
from tests.support.api import add_account, enable, trigger, wait_for_run
from tests.support.db import as_role
from tests.support.reliability import FAST_RECOVERY, REPO, worker_process
from tests.support.users import users

pytestmark = pytest.mark.docker

USER_ENDPOINTS = [
    ("GET", "/api/settings/load-auto-sync", None),
    ("POST", "/api/settings/save-auto-sync", {"enabled": True, "interval_minutes": 30}),
    ("GET", "/api/email-accounts", None),
    (
        "POST",
        "/api/email-accounts",
        {"host": "127.0.0.1", "port": 9, "tls_mode": "plain", "username": "u", "password": "p"},
    ),
    ("DELETE", f"/api/email-accounts/{uuid.uuid4()}", None),
    ("GET", "/api/sync/history", None),
]


def bad_tokens(service: Service, user: uuid.UUID) -> dict[str, str]:
    secret = service.config.jwt_secret.get_secret_value()
    now = int(time.time())
    claims = {"sub": str(user), "exp": now + 300, "role": "authenticated"}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    header, payload, _ = jwt.encode(claims, secret, algorithm="HS256").split(".")
    return {
        "forged (other secret)": jwt.encode(claims, "f" * 64, algorithm="HS256"),
        "expired": jwt.encode({**claims, "exp": now - 1}, secret, algorithm="HS256"),
        "not yet valid (nbf)": jwt.encode({**claims, "nbf": now + 3600}, secret, algorithm="HS256"),
        "unsigned (alg none)": jwt.encode(claims, None, algorithm="none"),  # type: ignore[arg-type]
        "signature stripped": f"{header}.{payload}.",
        "HS384": jwt.encode(claims, secret, algorithm="HS384"),
        "RS256": jwt.encode(claims, rsa_key, algorithm="RS256"),
        "ES256": jwt.encode(claims, ec_key, algorithm="ES256"),
        "payload swapped to another user": f"{header}.{jwt.encode({**claims, 'sub': str(uuid.uuid4())}, 'x' * 32, algorithm='HS256').split('.')[1]}.{jwt.encode(claims, secret, algorithm='HS256').split('.')[2]}",
        "the service key": service.config.service_key.get_secret_value(),
    }


def test_bad_tokens_are_401_on_every_user_endpoint(service: Service, database_url: str) -> None:
    with users(database_url) as (user,):
        tokens = bad_tokens(service, user)
        for kind, token in tokens.items():
            for method, path, body in USER_ENDPOINTS:
                response = service.client.request(
                    method, path, json=body, headers={"Authorization": f"Bearer {token}"}
                )
                assert response.status_code == 401, (kind, method, path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
        with psycopg.connect(database_url) as conn:
            assert conn.execute(
                "SELECT count(*) FROM public.user_settings WHERE user_id = %s", (user,)
            ).fetchone() == (0,)


def test_user_a_cannot_reach_user_b_through_the_api(
    service: Service,
    database_url: str,
    dovecot: DovecotServer,
    worker,  # type: ignore[no-untyped-def]
) -> None:
    with users(database_url, 2) as (a, b):
        add_account(service, b, dovecot)
        enable(service, b)
        assert wait_for_run(database_url, trigger(service, b))[0] == "succeeded"
        with psycopg.connect(database_url) as conn:
            (b_account,) = conn.execute(
                "SELECT id FROM public.email_accounts WHERE user_id = %s", (b,)
            ).fetchone()  # type: ignore[misc]
        as_a = service.as_user(a)
        # Reads: A sees only A's (empty) data, whatever B has; a user_id parameter is not honoured.
        assert service.client.get("/api/email-accounts", headers=as_a).json()["accounts"] == []
        assert service.client.get("/api/sync/history", headers=as_a).json()["runs"] == []
        assert service.client.get(f"/api/sync/history?user_id={b}", headers=as_a).json()["runs"] == []
        loaded = service.client.get(f"/api/settings/load-auto-sync?user_id={b}", headers=as_a).json()
        assert loaded["settings"] == {"enabled": False, "interval_minutes": 60}
        # Writes: B's account cannot be deleted by A; a user_id in a body is refused.
        assert service.client.delete(f"/api/email-accounts/{b_account}", headers=as_a).status_code == 404
        response = service.client.post(
            "/api/settings/save-auto-sync",
            json={"enabled": False, "interval_minutes": 60, "user_id": str(b)},
            headers=as_a,
        )
        assert response.status_code == 422
        # Service endpoints take no user token at all.
        response = service.client.post("/functions/v1/import-emails", json={"user_id": str(b)}, headers=as_a)
        assert response.status_code == 401
        with psycopg.connect(database_url) as conn:
            assert conn.execute(
                "SELECT count(*) FROM public.email_accounts WHERE user_id = %s", (b,)
            ).fetchone() == (1,)
            assert conn.execute(
                "SELECT enabled FROM public.user_settings WHERE user_id = %s", (b,)
            ).fetchone() == (True,)


TABLES = [
    "user_settings",
    "auto_sync_jobs",
    "email_accounts",
    "mailbox_state",
    "messages",
    "sync_runs",
    "sync_run_attempts",
]


def test_rls_as_authenticated_in_sql(
    service: Service,
    database_url: str,
    dovecot: DovecotServer,
    worker,
    db: psycopg.Connection,  # type: ignore[no-untyped-def]
) -> None:
    with users(database_url, 2) as (a, b):
        for owner in (a, b):
            mailbox = add_account(service, owner, dovecot)
            dovecot.deliver(mailbox, [m.raw for m in mailgen.generate(3, seed=9)])
            enable(service, owner)
            assert wait_for_run(database_url, trigger(service, owner))[0] == "succeeded"
        with as_role(db, "authenticated", sub=a):
            for table in TABLES:
                owners = {
                    row[0]
                    for row in db.execute(
                        f"SELECT {'user_id' if table != 'mailbox_state' else '(SELECT user_id FROM public.email_accounts e WHERE e.id = account_id)'} FROM public.{table}"
                    ).fetchall()
                }
                assert owners == {a}, (table, owners)
            for statement in (
                "UPDATE public.user_settings SET enabled = false WHERE user_id = %(b)s",
                "DELETE FROM public.email_accounts WHERE user_id = %(b)s",
                "UPDATE public.messages SET subject = 'x' WHERE user_id = %(b)s",
                "DELETE FROM public.sync_runs WHERE user_id = %(b)s",
                "INSERT INTO public.auto_sync_jobs (user_id, cron_job_id, interval_minutes) VALUES (%(b)s, 1, 5)",
                "SELECT password_encrypted FROM public.email_accounts",
                "SELECT * FROM public.procrastinate_jobs",
                "SELECT * FROM cron.job",
                "SELECT * FROM autosync_private.service_key",
                "SELECT public.trigger_auto_sync(%(b)s)",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    db.execute(statement, {"b": b})
        # What the SECURITY DEFINER functions let `authenticated` call is exactly the three
        # self-service scheduling functions (each checks auth.uid()).
        callable_definers = {
            row[0]
            for row in db.execute(
                """SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'cron')
                     AND has_function_privilege('authenticated', p.oid, 'EXECUTE')"""
            ).fetchall()
        }
        assert callable_definers == {
            "schedule_auto_sync(uuid,integer)",
            "update_auto_sync_schedule(uuid,integer)",
            "unschedule_auto_sync(uuid)",
        }
        with psycopg.connect(database_url) as conn:
            assert (
                conn.execute("SELECT count(*) FROM public.messages WHERE user_id = %s", (b,)).fetchone()[0]
                > 0
            )  # type: ignore[index]


def test_secrets_never_leak(  # type: ignore[no-untyped-def]
    service: Service,
    database_url: str,
    dovecot: DovecotServer,
    docker_engine,
    postgres_server,
    tmp_path: Path,
) -> None:
    """The whole flow at debug log level, a failing import included; then search everywhere."""
    settings = service.config
    key = settings.service_key.get_secret_value()
    port = free_port()
    api_log = tmp_path / "api.log"
    env = {
        **worker_env(settings),
        "PYTHONUNBUFFERED": "1",
        "AUTOSYNC_LOG_LEVEL": "debug",
        "AUTOSYNC_PORT": str(port),
    }
    responses: list[httpx.Response] = []
    with api_log.open("wb") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "sync_function.cli", "serve"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    passwords: list[str] = []
    try:
        client = httpx.Client(
            base_url=url, timeout=30, event_hooks={"response": [lambda r: responses.append(r)]}
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        api_service = Service(url=url, config=settings, client=client)
        dbsettings.configure(database_url, function_url=url, service_key=key)
        with (
            users(database_url, 2) as (good, bad),
            worker_process(
                settings,
                tmp_path / "worker.log",
                **{**FAST_RECOVERY, "AUTOSYNC_LOG_LEVEL": "debug", "AUTOSYNC_MAX_ATTEMPTS": "2"},
            ) as worker,
        ):
            name = add_account(api_service, good, dovecot)
            passwords.append(dovecot.users[name])
            wrong = "wrong-" + uuid.uuid4().hex
            passwords.append(wrong)
            other, other_password = dovecot.new_user()
            passwords.append(other_password)
            # A failed verification (wrong password) must not echo it either.
            response = client.post(
                "/api/email-accounts",
                json={
                    "host": dovecot.host,
                    "port": dovecot.port,
                    "tls_mode": "plain",
                    "username": other,
                    "password": wrong,
                },
                headers=api_service.as_user(bad),
            )
            assert response.status_code == 400
            from sync_function.crypto import encrypt_password

            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    """INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, password_encrypted)
                       VALUES (%s, %s, %s, 'plain', %s, %s)""",
                    (
                        bad,
                        dovecot.host,
                        dovecot.port,
                        other,
                        encrypt_password(settings.encryption_key.get_secret_value(), wrong),
                    ),
                )
            for user in (good, bad):
                enable(api_service, user)
                # Through pg_cron's own path: trigger_auto_sync with the stored key.
                with psycopg.connect(database_url, autocommit=True) as conn:
                    conn.execute("SELECT public.trigger_auto_sync(%s)", (user,))
            for user in (good, bad):
                with psycopg.connect(database_url) as conn:
                    (run_id,) = conn.execute(
                        "SELECT id FROM public.sync_runs WHERE user_id = %s", (user,)
                    ).fetchone()  # type: ignore[misc]
                wait_for_run(database_url, str(run_id))
            client.get("/api/sync/history", headers=api_service.as_user(bad))
            client.get("/metrics")
            worker_log = worker.log()
            with psycopg.connect(database_url) as conn:
                history = str(conn.execute("SELECT * FROM public.sync_runs").fetchall()) + str(
                    conn.execute("SELECT * FROM public.sync_run_attempts").fetchall()
                )
    finally:
        dbsettings.reset(database_url)
        if "client" in locals():
            client.close()
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=20)
    secrets_to_find = {
        "service key": key,
        "jwt secret": settings.jwt_secret.get_secret_value(),
        "encryption key": settings.encryption_key.get_secret_value(),
        **{f"mailbox password {i}": p for i, p in enumerate(passwords)},
    }
    with psycopg.connect(database_url) as conn:
        places = {
            "API log": api_log.read_text(errors="replace"),
            "worker log": worker_log,
            "responses": "\n".join(f"{r.headers}\n{r.text}" for r in responses),
            "cron.job": str(conn.execute("SELECT * FROM cron.job").fetchall()),
            "cron.job_run_details": str(conn.execute("SELECT * FROM cron.job_run_details").fetchall()),
            "settings (SHOW ALL)": str(conn.execute("SHOW ALL").fetchall()),
            "database and role settings": str(conn.execute("SELECT * FROM pg_db_role_setting").fetchall()),
            "sync history": history,
            "queue": str(conn.execute("SELECT * FROM public.procrastinate_jobs").fetchall())
            + str(conn.execute("SELECT * FROM public.procrastinate_events").fetchall()),
            "Postgres server log": docker_engine.containers.get(postgres_server.name)
            .logs()
            .decode(errors="replace"),
        }
    assert "rejected the login" in places["sync history"], "the failing import ran"
    assert "import attempt finished" in places["worker log"], "the worker log is being read"
    for place, text in places.items():
        for what, secret in secrets_to_find.items():
            assert secret not in text, f"the {what} appears in the {place}"
    assert places["API log"].strip(), "the API log is being read"
