"""Capabilities announced in the greeting spare the CAPABILITY round trip, and never outlive LOGIN."""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from harness.dovecot import LOOPBACK_ALLOWED, DovecotServer
from sync_function.imap import connect
from tests.support.mailboxes import Mailbox

pytestmark = pytest.mark.docker


# Before LOGIN Dovecot offers AUTH=PLAIN (and STARTTLS on the plain port); after it, neither.
@pytest.mark.parametrize(("tls_mode", "commands"), [("plain", 1), ("tls", 1), ("starttls", 3)])
def test_dovecot_greeting_capabilities_are_used_and_replaced_at_login(
    tls_mode: str, commands: int, dovecot: DovecotServer, make_mailbox: Callable[..., Mailbox]
) -> None:
    box = make_mailbox(tls_mode=tls_mode)
    account = box.account
    assert account.password is not None
    session = connect(
        host=account.host,
        port=account.port,
        tls_mode=tls_mode,  # type: ignore[arg-type]
        username=account.username,
        password=account.password,
        ssl_context=dovecot.ssl_context(),
        allowed=LOOPBACK_ALLOWED,
    )
    with session:
        # plain and tls: LOGIN only. starttls: STARTTLS, CAPABILITY again over TLS (RFC 2595 3.1:
        # what was said in the clear is not trusted), LOGIN.
        assert session._tag_count() == commands  # tags sent so far, LOGIN's included
        capabilities = session.capabilities
        assert "IMAP4REV1" in capabilities
        assert not any(c.startswith("AUTH=") for c in capabilities), capabilities
        assert "STARTTLS" not in capabilities
        assert session.status(account.mailbox).uidvalidity > 0


@dataclass
class ScriptedServer:
    """A real IMAP listener on loopback with a greeting that announces nothing, recording what it is sent."""

    port: int
    received: list[bytes] = field(default_factory=list)


@pytest.fixture
def bare_greeting_server() -> Iterator[ScriptedServer]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    server = ScriptedServer(port=listener.getsockname()[1])
    replies = {
        b"CAPABILITY": b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n%s OK done\r\n",
        b"LOGIN": b"%s OK [CAPABILITY IMAP4rev1 IDLE] signed in\r\n",
        b"LOGOUT": b"* BYE see you\r\n%s OK done\r\n",
    }

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as reader:
            conn.sendall(b"* OK ready\r\n")
            for line in reader:
                tag, command = line.rstrip(b"\r\n").split(b" ", 2)[:2]
                server.received.append(command.upper())
                conn.sendall(replies.get(command.upper(), b"%s BAD unknown\r\n") % tag)
                if command.upper() == b"LOGOUT":
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        thread.join(timeout=10)
        listener.close()


def test_a_greeting_without_capabilities_still_gets_them_asked(bare_greeting_server: ScriptedServer) -> None:
    session = connect(
        host="127.0.0.1",
        port=bare_greeting_server.port,
        tls_mode="plain",
        username="someone",
        password=secrets.token_urlsafe(9),
        allowed=LOOPBACK_ALLOWED,
    )
    with session:
        assert session.capabilities == frozenset({"IMAP4REV1", "IDLE"})
    assert bare_greeting_server.received == [b"CAPABILITY", b"LOGIN", b"LOGOUT"]
