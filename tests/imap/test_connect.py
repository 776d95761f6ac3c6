"""Connection modes and failures: each error is the right type, says what to do, and stores nothing."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import psycopg
import pytest

from harness import mailgen
from harness.dovecot import LOOPBACK_ALLOWED, DovecotServer
from harness.ports import free_port
from sync_function.imap import (
    ImapAuthError,
    ImapConnectionError,
    ImapMailboxError,
    ImapTimeout,
    ImapTlsError,
    connect,
)
from sync_function.importer import ImportResult, import_mailbox
from tests.support.db import delete_users, new_user
from tests.support.mailboxes import Mailbox, with_password

pytestmark = pytest.mark.docker
Run = Callable[..., ImportResult]


def nothing_stored(db: psycopg.Connection, account_id: uuid.UUID) -> bool:
    row = db.execute(
        "SELECT (SELECT count(*) FROM public.messages WHERE account_id = %(a)s)"
        " + (SELECT count(*) FROM public.mailbox_state WHERE account_id = %(a)s)",
        {"a": account_id},
    ).fetchone()
    return row == (0,)


@pytest.mark.parametrize("tls_mode", ["tls", "starttls", "plain"])
def test_each_tls_mode_imports(
    tls_mode: str, db: psycopg.Connection, dovecot: DovecotServer, make_mailbox: Callable[..., Mailbox], run_import: Run
) -> None:
    box = make_mailbox(tls_mode=tls_mode)
    dovecot.deliver(box.user, (g.raw for g in mailgen.generate(3, seed=20)))

    result = run_import(box)

    assert result.imported == 3
    # Dovecot's login line says whether the session was encrypted.
    logins = [line for line in dovecot.log().splitlines() if f"user=<{box.user}>" in line and "Logged in" in line]
    assert logins and all((", TLS" in line) == (tls_mode != "plain") for line in logins), logins


def test_wrong_password_is_an_auth_error_that_names_the_user_but_not_the_password(
    db: psycopg.Connection, mailbox: Mailbox, run_import: Run, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-" + uuid.uuid4().hex
    with pytest.raises(ImapAuthError) as caught:
        run_import(mailbox, account=with_password(mailbox, wrong))
    message = str(caught.value)
    assert mailbox.user in message and "password" in message
    assert wrong not in message and wrong not in repr(caught.value.__cause__)
    assert wrong not in caplog.text and mailbox.password not in caplog.text
    assert not caught.value.transient
    assert nothing_stored(db, mailbox.account.account_id)


def test_account_repr_hides_the_password(mailbox: Mailbox) -> None:
    assert mailbox.password not in repr(mailbox.account)


def test_dead_port_is_a_connection_error(db: psycopg.Connection, mailbox: Mailbox, run_import: Run) -> None:
    dead = replace(mailbox.account, port=free_port())
    with pytest.raises(ImapConnectionError, match="connection refused") as caught:
        run_import(mailbox, account=dead)
    assert caught.value.transient
    assert nothing_stored(db, mailbox.account.account_id)


def test_implicit_tls_against_the_plain_port_says_which_port_to_use(
    dovecot: DovecotServer, mailbox: Mailbox
) -> None:
    with pytest.raises(ImapTlsError, match="993"):
        connect(host=dovecot.host, port=dovecot.port, tls_mode="tls", username=mailbox.user,
                allowed=LOOPBACK_ALLOWED, password=mailbox.password, timeout_s=5, ssl_context=dovecot.ssl_context())


@pytest.mark.parametrize("tls_mode", ["tls", "starttls"])
def test_an_untrusted_certificate_is_refused(tls_mode: str, dovecot: DovecotServer, mailbox: Mailbox) -> None:
    port = dovecot.tls_port if tls_mode == "tls" else dovecot.port
    with pytest.raises(ImapTlsError, match="not trusted"):
        # The system trust store does not know the test server's self-signed certificate.
        connect(host=dovecot.host, port=port, tls_mode=tls_mode, username=mailbox.user,  # type: ignore[arg-type]
                allowed=LOOPBACK_ALLOWED, password=mailbox.password, timeout_s=5, ssl_context=ssl.create_default_context())


def test_missing_mailbox_is_a_mailbox_error(db: psycopg.Connection, mailbox: Mailbox, run_import: Run) -> None:
    missing = replace(mailbox.account, mailbox="No/Such/Folder")
    with pytest.raises(ImapMailboxError, match="No/Such/Folder"):
        run_import(mailbox, account=missing)
    assert nothing_stored(db, mailbox.account.account_id)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_server_that_never_answers_times_out(silent_server: int) -> None:
    with pytest.raises(ImapTimeout, match="did not answer in time"):
        connect(host="127.0.0.1", port=silent_server, tls_mode="plain", username="u", password=uuid.uuid4().hex,
                timeout_s=0.5, allowed=LOOPBACK_ALLOWED)


def test_bad_arguments_fail_before_anything_happens(
    db: psycopg.Connection, service_conn: psycopg.Connection, mailbox: Mailbox, dovecot: DovecotServer
) -> None:
    dovecot.deliver(mailbox.user, mailgen.message("plain", 1).raw)
    other_user = new_user(db)
    try:
        cases: list[tuple[dict[str, object], str]] = [
            ({"user_id": other_user}, "does not belong"),
            ({"account": replace(mailbox.account, account_id=uuid.uuid4())}, "does not exist"),
            ({"batch_size": 0}, "batch_size"),
            ({"max_message_bytes": 0}, "max_message_bytes"),
            ({"account": replace(mailbox.account, tls_mode="ssl")}, "tls_mode"),  # type: ignore[arg-type]
        ]
        for overrides, expected in cases:
            kwargs: dict[str, object] = {"account": mailbox.account, "user_id": mailbox.user_id, **overrides}
            with pytest.raises(ValueError, match=expected):
                import_mailbox(service_conn, **kwargs)  # type: ignore[arg-type]
        with service_conn.transaction(), pytest.raises(ValueError, match="idle connection"):
            import_mailbox(service_conn, account=mailbox.account, user_id=mailbox.user_id)
    finally:
        delete_users(db, [other_user])
    assert nothing_stored(db, mailbox.account.account_id)


def test_server_down_then_back(db: psycopg.Connection, dovecot: DovecotServer, mailbox: Mailbox, run_import: Run) -> None:
    dovecot.deliver(mailbox.user, (g.raw for g in mailgen.generate(3, seed=21)))
    dovecot.stop()
    try:
        with pytest.raises(ImapConnectionError):
            run_import(mailbox)
    finally:
        dovecot.start()
    assert nothing_stored(db, mailbox.account.account_id)
    assert run_import(mailbox).imported == 3
