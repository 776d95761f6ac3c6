"""Server-side request forgery: IMAP hosts are checked as host names, then as addresses, at add and at connect."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from imapclient.exceptions import LoginError

from harness.dovecot import DovecotServer
from harness.service import Service, WorkerThread, running_service
from sync_function.config import Config
from sync_function.destinations import (
    PUBLIC_ONLY,
    DestinationPolicy,
    DestinationRefused,
    InvalidHost,
    PinnedIMAPClient,
    is_public,
    normalize_host,
    resolve_checked,
)
from tests.support.api import add_account, enable, trigger, wait_for_run
from tests.support.users import users

PATH = "/api/email-accounts"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("imap.example.com", "imap.example.com"),
        ("IMAP.Example.COM.", "imap.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
)
def test_host_names_are_normalized_as_dialled(text: str, expected: str) -> None:
    assert normalize_host(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "a..b",
        "a" * 64 + ".example",
        "\udcff.example",
        "ab\u0000c.example",
        "0",
        "127.1",
        "0x7f.1",
        "-a.example",
        "a_b.example",
        ".",
        "",
        ("a" * 60 + ".") * 5 + "com",
    ],
)
def test_what_is_not_a_host_name_is_refused(text: str) -> None:
    with pytest.raises(InvalidHost):
        normalize_host(text)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",  # noqa: S104 - an address under test, not a bind
        "224.0.0.1",
        "240.0.0.1",
        "100.64.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "2002:7f00:1::",
    ],
)
def test_non_public_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


def test_public_addresses_are_public() -> None:
    assert is_public(ipaddress.ip_address("1.1.1.1")) and is_public(ipaddress.ip_address("2606:4700::1111"))


def test_a_name_resolving_to_loopback_is_refused_unless_allowed() -> None:
    with pytest.raises(DestinationRefused, match=r"127\.0\.0\.1|::1"):
        resolve_checked("localhost", 143, PUBLIC_ONLY)
    with pytest.raises(DestinationRefused, match=r"169\.254\.169\.254"):
        resolve_checked("169.254.169.254", 80, PUBLIC_ONLY)
    allowed = DestinationPolicy.parse(["127.0.0.0/8", "::1"])
    assert all(not is_public(a) for _, a in resolve_checked("localhost", 143, allowed))
    by_name = DestinationPolicy.parse(["localhost"])
    assert resolve_checked("localhost", 143, by_name)


@pytest.mark.docker
@pytest.mark.parametrize("setting", ["imap_allowed_networks", "oauth_allowed_networks"])
def test_the_allow_list_settings_are_validated(database_url: str, setting: str) -> None:
    from harness.service import make_config

    with pytest.raises(ValueError, match="neither a network"):
        make_config(database_url, **{setting: "10.0.0.0/8,a..b"})
    config = make_config(database_url, **{setting: "10.0.0.0/8, mail.internal"}, oauth_allow_loopback_http=False)
    policy = config.imap_destinations() if setting == "imap_allowed_networks" else config.oauth_destinations()
    assert policy.allows("x.example", ipaddress.ip_address("10.9.9.9"))
    assert policy.allows("mail.internal", ipaddress.ip_address("192.168.0.1"))
    assert not policy.allows("x.example", ipaddress.ip_address("192.168.0.1"))


@pytest.mark.docker
def test_the_connection_goes_to_the_checked_address_not_a_new_lookup(dovecot: DovecotServer) -> None:
    """A pinned client never resolves the name again (rebinding), yet TLS still checks the name."""
    pinned = [(socket.AF_INET, ipaddress.ip_address("127.0.0.1"))]
    name, password = dovecot.new_user()
    # `.invalid` never resolves: the login can only succeed through the pinned address.
    client = PinnedIMAPClient("imap.invalid", addresses=pinned, port=dovecot.port, ssl=False, timeout=5)
    try:
        client.login(name, password)
    finally:
        client.logout()
    # The certificate names localhost: over TLS to the same address, another name must fail verification.
    with pytest.raises(ssl.SSLCertVerificationError):
        PinnedIMAPClient(
            "mail.example.com",
            addresses=pinned,
            port=dovecot.tls_port,
            ssl=True,
            ssl_context=dovecot.ssl_context(),
            timeout=5,
        )
    client = PinnedIMAPClient(
        "localhost",
        addresses=pinned,
        port=dovecot.tls_port,
        ssl=True,
        ssl_context=dovecot.ssl_context(),
        timeout=5,
    )
    try:
        with pytest.raises(LoginError):
            client.login(name, "wrong-" + password)
    finally:
        client.shutdown()


@pytest.fixture(scope="module")
def strict_service(service_config: Config, dovecot: DovecotServer) -> Iterator[Service]:
    """The API as deployed by default: no allow-list, so the loopback Dovecot is out of bounds."""
    strict = service_config.model_copy(update={"imap_allowed_networks": ""})
    with running_service(strict, imap_ssl_context=dovecot.ssl_context()) as running:
        yield running


def _stored(database_url: str, user: uuid.UUID) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM public.email_accounts WHERE user_id = %s", (user,)
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.docker
@pytest.mark.parametrize(
    ("host", "status", "words"),
    [
        ("a..b", 422, "empty label"),
        ("a" * 64 + ".example.com", 422, "1 to 63"),
        ("\ufffd.example.com", 422, "IDNA"),
        ("ü" * 60 + ".example.com", 422, "IDNA"),
        ("0", 422, "numeric"),
        ("127.1", 422, "numeric"),
        ("127.0.0.1", 422, "not allowed"),
        ("localhost", 422, "not allowed"),
        ("169.254.169.254", 422, "not allowed"),
        ("10.0.0.1", 422, "not allowed"),
        ("::1", 422, "not allowed"),
        ("0.0.0.0", 422, "not allowed"),  # noqa: S104 - refused, not bound
    ],
)
def test_the_api_refuses_bad_and_internal_hosts_and_stores_nothing(
    strict_service: Service, database_url: str, dovecot: DovecotServer, host: str, status: int, words: str
) -> None:
    name, password = dovecot.new_user()
    with users(database_url) as (user,):
        response = strict_service.client.post(
            PATH,
            json={
                "host": host,
                "port": dovecot.port,
                "tls_mode": "plain",
                "username": name,
                "password": password,
            },
            headers=strict_service.as_user(user),
        )
        assert response.status_code == status, response.text
        body = response.json()
        assert body["success"] is False and words in body["error"], body
        assert password not in response.text
        assert _stored(database_url, user) == 0


@pytest.mark.docker
def test_the_worker_refuses_an_internal_host_at_connect_time(
    service: Service, service_config: Config, database_url: str, dovecot: DovecotServer
) -> None:
    """An account stored while allowed (or whose name now resolves elsewhere) is checked again at each sync."""
    strict = service_config.model_copy(update={"imap_allowed_networks": ""})
    with users(database_url) as (user,):
        add_account(service, user, dovecot)
        enable(service, user)
        worker = WorkerThread(strict, dovecot.ssl_context())
        try:
            status, attempts, imported, error = wait_for_run(database_url, trigger(service, user))
        finally:
            worker.stop()
        assert worker.error is None
        assert (status, attempts, imported) == ("failed", 1, 0)
        assert error is not None and "not allowed" in error
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) FROM public.messages WHERE user_id = %s", (user,)).fetchone()
        assert row == (0,)
