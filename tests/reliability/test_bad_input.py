"""Bad input: every case is a clear 4xx (or SQL error) and changes nothing.

Complements tests/service/test_settings_api.py (save bodies, malformed JSON, tokens),
test_functions.py (service-endpoint bodies), test_accounts_api.py (account bodies) and
tests/db/test_scheduling.py / test_trigger.py (interval and URL arguments): the cases here are the
ones those do not try, across headers, query parameters, bodies, SQL arguments and mail."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from harness.dovecot import DovecotServer
from harness.service import Service
from tests.support.db import as_role
from tests.support.users import users

pytestmark = pytest.mark.docker

SAVE = "/api/settings/save-auto-sync"
ACCOUNTS = "/api/email-accounts"
HISTORY = "/api/sync/history"
GOOD_SAVE = {"enabled": True, "interval_minutes": 30}


def snapshot(database_url: str, user: uuid.UUID) -> tuple[object, ...]:
    """Everything stored for a user, and the cron jobs: what 'no state changed' compares."""
    with psycopg.connect(database_url) as conn:
        return tuple(
            conn.execute(query, {"u": user}).fetchall()
            for query in (
                "SELECT enabled, interval_minutes, updated_at FROM public.user_settings WHERE user_id = %(u)s",
                "SELECT cron_job_id, interval_minutes, updated_at FROM public.auto_sync_jobs WHERE user_id = %(u)s",
                "SELECT jobname, schedule, command, active FROM cron.job ORDER BY jobid",
                "SELECT id, host, port, tls_mode, username, mailbox FROM public.email_accounts WHERE user_id = %(u)s",
                "SELECT id, status FROM public.sync_runs WHERE user_id = %(u)s",
                "SELECT count(*) FROM public.messages WHERE user_id = %(u)s",
                "SELECT count(*) FROM public.procrastinate_jobs",
            )
        )


@pytest.fixture
def user(service: Service, database_url: str) -> Iterator[uuid.UUID]:
    with users(database_url) as (user_id,):
        assert (
            service.client.post(
                SAVE, json={"enabled": True, "interval_minutes": 15}, headers=service.as_user(user_id)
            ).status_code
            == 200
        )
        yield user_id


def account(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 9,
        "tls_mode": "plain",
        "username": "u",
        "password": "p",
    }
    body.update(overrides)
    return body


# (name, method, path, body or raw bytes, extra headers, expected status, words in the error)
HTTP_CASES: list[tuple[str, str, str, object, dict[str, str], int, str]] = [
    # headers
    (
        "content-type text/plain",
        "POST",
        SAVE,
        b'{"enabled": true, "interval_minutes": 30}',
        {"Content-Type": "text/plain"},
        422,
        "body",
    ),
    (
        "content-type xml",
        "POST",
        SAVE,
        b"<enabled>true</enabled>",
        {"Content-Type": "application/xml"},
        422,
        "body",
    ),
    ("token with trailing junk", "POST", SAVE, GOOD_SAVE, {"Authorization": "+junk"}, 401, "token"),
    ("two tokens", "POST", SAVE, GOOD_SAVE, {"Authorization": "Bearer a b"}, 401, "invalid token"),
    ("wrong scheme", "POST", SAVE, GOOD_SAVE, {"Authorization": "Token abc"}, 401, "Bearer <token>"),
    ("8 KB token", "POST", SAVE, GOOD_SAVE, {"Authorization": "Bearer " + "a" * 8192}, 401, "invalid token"),
    (
        "token as query parameter only",
        "GET",
        "/api/settings/load-auto-sync?access_token=x",
        None,
        {"Authorization": ""},
        401,
        "missing",
    ),
    # query parameters
    ("limit 0", "GET", HISTORY + "?limit=0", None, {}, 422, "limit"),
    ("limit 101", "GET", HISTORY + "?limit=101", None, {}, 422, "limit"),
    ("limit -1", "GET", HISTORY + "?limit=-1", None, {}, 422, "limit"),
    ("limit text", "GET", HISTORY + "?limit=abc", None, {}, 422, "limit"),
    ("limit float", "GET", HISTORY + "?limit=10.5", None, {}, 422, "limit"),
    ("limit empty", "GET", HISTORY + "?limit=", None, {}, 422, "limit"),
    ("limit huge", "GET", HISTORY + "?limit=99999999999999999999", None, {}, 422, "limit"),
    ("account id not a uuid", "DELETE", ACCOUNTS + "/not-a-uuid", None, {}, 422, "account_id"),
    (
        "account id of nobody",
        "DELETE",
        ACCOUNTS + f"/{uuid.UUID(int=1)}",
        None,
        {},
        404,
        "no such email account",
    ),
    ("account id sql", "DELETE", ACCOUNTS + "/1';DROP TABLE messages;--", None, {}, 422, "account_id"),
    # bodies
    ("json null", "POST", SAVE, b"null", {"Content-Type": "application/json"}, 422, "body"),
    ("json number", "POST", SAVE, b"42", {"Content-Type": "application/json"}, 422, "body"),
    (
        "NaN interval",
        "POST",
        SAVE,
        b'{"enabled": true, "interval_minutes": NaN}',
        {"Content-Type": "application/json"},
        422,
        "interval_minutes",
    ),
    ("bool interval", "POST", SAVE, {"enabled": True, "interval_minutes": True}, {}, 422, "interval_minutes"),
    (
        "nested 1000 deep",
        "POST",
        SAVE,
        b"[" * 1000 + b"]" * 1000,
        {"Content-Type": "application/json"},
        400,
        "error parsing the body",
    ),
    (
        "1 MB string",
        "POST",
        SAVE,
        {"enabled": True, "interval_minutes": "x" * 1_000_000},
        {},
        422,
        "interval_minutes",
    ),
    ("port 0", "POST", ACCOUNTS, account(port=0), {}, 422, "port"),
    ("port 65536", "POST", ACCOUNTS, account(port=65536), {}, 422, "port"),
    ("port as text", "POST", ACCOUNTS, account(port="143"), {}, 422, "port"),
    ("tls_mode ssl", "POST", ACCOUNTS, account(tls_mode="ssl"), {}, 422, "tls_mode"),
    ("host with path", "POST", ACCOUNTS, account(host="imap.example.com/x"), {}, 422, "host"),
    ("host with space", "POST", ACCOUNTS, account(host="imap example.com"), {}, 422, "host"),
    ("host 254 chars", "POST", ACCOUNTS, account(host="a" * 254), {}, 422, "host"),
    (
        "username with CRLF (IMAP injection)",
        "POST",
        ACCOUNTS,
        account(username="u\r\nA1 DELETE INBOX"),
        {},
        422,
        "control characters",
    ),
    ("password with NUL", "POST", ACCOUNTS, account(password="p\x00w"), {}, 422, "control characters"),  # noqa: S106
    ("mailbox with CR", "POST", ACCOUNTS, account(mailbox="INBOX\r"), {}, 422, "control characters"),
    ("mailbox 513 chars", "POST", ACCOUNTS, account(mailbox="m" * 513), {}, 422, "mailbox"),
    ("password 1025 chars", "POST", ACCOUNTS, account(password="p" * 1025), {}, 422, "password"),
    ("account with user_id", "POST", ACCOUNTS, account(user_id=str(uuid.uuid4())), {}, 422, "user_id"),
    (
        "service call with int user_id",
        "POST",
        "/functions/v1/auto-sync",
        {"user_id": 1},
        {"service": "1"},
        422,
        "user_id",
    ),
    (
        "service call for the nil user",
        "POST",
        "/functions/v1/auto-sync",
        {"user_id": str(uuid.UUID(int=0))},
        {"service": "1"},
        404,
        "no such user",
    ),
    (
        "service call, body in query",
        "POST",
        f"/functions/v1/import-emails?user_id={uuid.uuid4()}",
        None,
        {"service": "1"},
        422,
        "body",
    ),
    ("unknown path", "GET", "/api/settings/../../etc/passwd", None, {}, 404, ""),
    ("wrong method", "PUT", SAVE, GOOD_SAVE, {}, 405, "Method Not Allowed"),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "headers", "status", "words"),
    HTTP_CASES,
    ids=[c[0] for c in HTTP_CASES],
)
def test_http_bad_input(
    service: Service,
    database_url: str,
    user: uuid.UUID,
    name: str,
    method: str,
    path: str,
    body: object,
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    before = snapshot(database_url, user)
    sent = dict(service.as_service if headers.pop("service", None) else service.as_user(user))
    if "Authorization" in headers:
        value = headers.pop("Authorization")
        sent["Authorization"] = sent["Authorization"] + value if value.startswith("+") else value
        if not value:
            del sent["Authorization"]
    sent.update(headers)
    kwargs: dict[str, object] = {"headers": sent}
    if isinstance(body, bytes):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    response = service.client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text[:500]
    payload = response.json()
    assert payload["success"] is False and isinstance(payload["error"], str)
    assert words in payload["error"], payload["error"][:500]
    assert len(response.content) < 5000, "errors are short: no echo of a huge input, no stack trace"
    assert snapshot(database_url, user) == before


# (name, SQL, parameters, error class, words): as the owner unless `role` says otherwise.
SQL_CASES: list[tuple[str, str, tuple[object, ...], type[Exception], str]] = [
    (
        "schedule null user",
        "SELECT public.schedule_auto_sync(NULL, 15)",
        (),
        psycopg.errors.NullValueNotAllowed,
        "must not be null",
    ),
    (
        "schedule null interval",
        "SELECT public.schedule_auto_sync(%s, NULL)",
        ("user",),
        psycopg.errors.InvalidParameterValue,
        "interval",
    ),
    (
        "schedule int max",
        "SELECT public.schedule_auto_sync(%s, 2147483647)",
        ("user",),
        psycopg.errors.InvalidParameterValue,
        "supported",
    ),
    (
        "schedule int overflow",
        "SELECT public.schedule_auto_sync(%s, 2147483648)",
        ("user",),
        psycopg.errors.UndefinedFunction,
        "does not exist",
    ),
    (
        "schedule negative",
        "SELECT public.schedule_auto_sync(%s, -5)",
        ("user",),
        psycopg.errors.InvalidParameterValue,
        "supported",
    ),
    (
        "update null user",
        "SELECT public.update_auto_sync_schedule(NULL, 15)",
        (),
        psycopg.errors.NullValueNotAllowed,
        "must not be null",
    ),
    (
        "unschedule null user",
        "SELECT public.unschedule_auto_sync(NULL)",
        (),
        psycopg.errors.NullValueNotAllowed,
        "must not be null",
    ),
    (
        "trigger null user",
        "SELECT public.trigger_auto_sync(NULL)",
        (),
        psycopg.errors.NullValueNotAllowed,
        "must not be null",
    ),
    (
        "cron schedule of 7",
        "SELECT public.auto_sync_cron_schedule(%s, 7)",
        ("user",),
        psycopg.errors.InvalidParameterValue,
        "supported",
    ),
    (
        "check interval null",
        "SELECT public.auto_sync_check_interval(NULL)",
        (),
        psycopg.errors.InvalidParameterValue,
        "interval",
    ),
    (
        "url javascript:",
        "SELECT autosync_private.set_sync_function_url('javascript:alert(1)')",
        (),
        psycopg.errors.InvalidParameterValue,
        "invalid sync function URL",
    ),
    (
        "url with quote and space",
        "SELECT autosync_private.set_sync_function_url('http://x'' ; DROP')",
        (),
        psycopg.errors.InvalidParameterValue,
        "invalid sync function URL",
    ),
    (
        "key null",
        "SELECT autosync_private.set_service_key(NULL)",
        (),
        psycopg.errors.InvalidParameterValue,
        "at least 32",
    ),
    (
        "user id with injection",
        "SELECT public.schedule_auto_sync(%s::uuid, 15)",
        ("x'); DROP TABLE public.messages; --",),
        psycopg.errors.InvalidTextRepresentation,
        "uuid",
    ),
]


@pytest.mark.parametrize(
    ("name", "sql", "params", "error", "words"), SQL_CASES, ids=[c[0] for c in SQL_CASES]
)
def test_sql_bad_arguments(
    database_url: str,
    user: uuid.UUID,
    name: str,
    sql: str,
    params: tuple[object, ...],
    error: type[Exception],
    words: str,
) -> None:
    before = snapshot(database_url, user)
    with psycopg.connect(database_url, autocommit=True) as conn:
        url_before = conn.execute("SELECT current_setting('app.settings.sync_function_url', true)").fetchone()
        with pytest.raises(error) as raised:
            conn.execute(sql, tuple(user if p == "user" else p for p in params))
        assert words in str(raised.value)
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert (
            conn.execute("SELECT current_setting('app.settings.sync_function_url', true)").fetchone()
            == url_before
        )
    assert snapshot(database_url, user) == before


def test_authenticated_role_bad_arguments(db: psycopg.Connection, database_url: str, user: uuid.UUID) -> None:
    """As a signed-in user in SQL: another user's id, a forged claim, no claim: refused, nothing changed."""
    before = snapshot(database_url, user)
    other = uuid.uuid4()
    for claims_sub, target, words in ((other, user, "may not manage"), (None, user, "may not manage")):
        with (
            as_role(db, "authenticated", sub=claims_sub),
            pytest.raises(psycopg.errors.InsufficientPrivilege, match=words),
        ):
            db.execute("SELECT public.schedule_auto_sync(%s, 5)", (target,))
    with as_role(db, "authenticated", sub=user), pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("SELECT public.trigger_auto_sync(%s)", (user,))
    assert snapshot(database_url, user) == before


HOSTILE_MAIL = {
    "empty": b"",
    "no headers, binary": bytes(range(256)) * 8,
    "one 200 KB header line": b"Subject: " + b"A" * 200_000 + b"\r\n\r\nbody\r\n",
    "header injection in subject": b"Subject: hi\r\n\tBcc: x@example.com\r\nFrom: <<<>>>\r\nDate: yesterday\r\n\r\nx\r\n",
    "boundary bomb": b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
    + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 500,
}


def test_hostile_messages_are_stored_byte_exact_not_refused(
    service: Service,
    database_url: str,
    dovecot: DovecotServer,
    worker,  # type: ignore[no-untyped-def]
) -> None:
    """Mail is input too: for it the right answer is not an error but the bytes kept exactly."""
    from tests.support.api import add_account, enable, trigger, wait_for_run
    from tests.support.reliability import served, stored

    with users(database_url) as (owner,):
        name = add_account(service, owner, dovecot)
        dovecot.deliver(name, list(HOSTILE_MAIL.values()))
        enable(service, owner)
        status, _, imported, error = wait_for_run(database_url, trigger(service, owner))
        assert (status, error) == ("succeeded", None)
        assert imported == len(served(dovecot, name))
        assert dict(stored(database_url, owner)) == served(dovecot, name)
