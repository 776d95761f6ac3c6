"""OAuth2 token endpoints are destinations a user chooses: checked like IMAP hosts, against their own
allow-list (AUTOSYNC_OAUTH_ALLOWED_NETWORKS), when an account is added and at every token request,
which goes to the checked address. Against the real local provider (harness.oauth_provider) and the API.
"""

from __future__ import annotations

import ipaddress

import httpx
import psycopg
import pytest

from harness.dovecot import DovecotServer
from harness.oauth_provider import FakeProvider
from harness.service import Service, make_config, running_service
from sync_function import oauth
from sync_function.destinations import (
    PUBLIC_ONLY,
    DestinationPolicy,
    DestinationRefused,
    InvalidHost,
    check_url,
)
from tests.support.users import users

SETTING = "AUTOSYNC_OAUTH_ALLOWED_NETWORKS"
LOOPBACK = DestinationPolicy.parse(["127.0.0.0/8", "::1/128"])


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/token",
        "https://[::1]:8443/token",
        "https://[::ffff:127.0.0.1]/token",
        "https://169.254.169.254/latest/meta-data",
        "https://10.1.2.3/token",
        "https://192.168.0.10/token",
        "https://0.0.0.0/token",
        "https://localhost:8443/token",  # a name is checked by what it resolves to
    ],
)
def test_non_public_endpoints_are_refused_by_default(url: str) -> None:
    with pytest.raises(DestinationRefused, match=SETTING):
        check_url(url, PUBLIC_ONLY, setting=SETTING)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/token", "https URL"),
        ("https:///token", "https URL"),
        ("https://user:secret@example.com/token", "user name or password"),
        ("https://example.com:99999/token", "invalid port"),
        ("https://exa mple.com/token", "not a valid host name"),
    ],
)
def test_urls_that_are_not_endpoints(url: str, says: str) -> None:
    with pytest.raises(InvalidHost, match=says):
        check_url(url, PUBLIC_ONLY, setting=SETTING)


def test_plain_http_only_to_allowed_destinations() -> None:
    # A public address over plain http: the secrets would cross the internet in clear.
    with pytest.raises(DestinationRefused, match=f"https URL .*{SETTING}"):
        check_url("http://93.184.216.34/token", PUBLIC_ONLY, setting=SETTING)
    with pytest.raises(DestinationRefused, match="https URL"):
        check_url("http://93.184.216.34/token", LOOPBACK, setting=SETTING)
    checked = check_url("http://127.0.0.1:8080/token?x=1", LOOPBACK, setting=SETTING)
    assert checked.addresses == (ipaddress.ip_address("127.0.0.1"),)
    assert checked.pinned(checked.addresses[0]) == (
        "http://127.0.0.1:8080/token?x=1",
        {"Host": "127.0.0.1:8080"},
        {"sni_hostname": "127.0.0.1"},
    )


def test_a_name_is_dialled_at_its_checked_address_and_still_named() -> None:
    checked = check_url("https://LocalHost:8443/oauth/token", LOOPBACK, setting=SETTING)
    assert ipaddress.ip_address("127.0.0.1") in checked.addresses
    url, headers, extensions = checked.pinned(ipaddress.ip_address("127.0.0.1"))
    # The socket goes to the address that was checked; TLS (SNI, certificate) and Host use the name.
    assert url == "https://127.0.0.1:8443/oauth/token"
    assert headers == {"Host": "localhost:8443"} and extensions == {"sni_hostname": "localhost"}
    v6 = check_url("https://[::1]/t", LOOPBACK, setting=SETTING)
    assert v6.pinned(v6.addresses[0]) == ("https://[::1]/t", {"Host": "[::1]"}, {"sni_hostname": "::1"})


def test_an_allowed_host_name_may_use_plain_http() -> None:
    policy = DestinationPolicy.parse(["localhost"])
    checked = check_url("http://localhost:1/token", policy, setting=SETTING)
    assert checked.host == "localhost"


def test_a_refused_endpoint_gets_no_request(oauth_provider: FakeProvider) -> None:
    before = oauth_provider.token_requests
    with httpx.Client() as http, pytest.raises(oauth.EndpointRefused, match=SETTING) as caught:
        oauth.refresh(
            http,
            oauth.Provider("custom", oauth_provider.token_endpoint),
            oauth.Client("c"),
            refresh_token=oauth_provider.grant("someone"),
        )
    assert not caught.value.transient, "retrying cannot help: an operator or the user must act"
    assert oauth_provider.token_requests == before


def test_an_allowed_endpoint_is_reached_by_name(oauth_provider: FakeProvider) -> None:
    refresh_token = oauth_provider.grant("someone")
    by_name = oauth_provider.token_endpoint.replace("127.0.0.1", "localhost")
    where = oauth.provider(token_endpoint=by_name, policy=DestinationPolicy.parse(["localhost"]))
    before = oauth_provider.token_requests
    with httpx.Client() as http:
        tokens = oauth.refresh(
            http,
            where,
            oauth.Client(oauth_provider.client_id, oauth_provider.client_secret),
            refresh_token=refresh_token,
            policy=DestinationPolicy.parse(["localhost"]),
        )
    # localhost may resolve to ::1 first, where nothing listens: the next checked address is tried.
    assert tokens.access_token and oauth_provider.token_requests == before + 1


def new_account(dovecot: DovecotServer, provider: FakeProvider, token_endpoint: str) -> dict[str, object]:
    name, _ = dovecot.new_user("oauth")
    return {
        "host": dovecot.host,
        "port": dovecot.port,
        "tls_mode": "plain",
        "username": name,
        "oauth2": {
            "token_endpoint": token_endpoint,
            "client_id": provider.client_id,
            "client_secret": provider.client_secret,
            "refresh_token": provider.grant(name),
        },
    }


def stored_accounts(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM public.email_accounts").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.docker
@pytest.mark.parametrize(
    "endpoint", ["https://169.254.169.254/token", "https://10.0.0.1/token", "http://93.184.216.34/token"]
)
def test_adding_an_account_with_a_refused_endpoint_is_a_422(
    endpoint: str,
    service: Service,
    database_url: str,
    oauth_dovecot: DovecotServer,
    oauth_provider: FakeProvider,
) -> None:
    with users(database_url) as (user,):
        before = stored_accounts(database_url)
        response = service.client.post(
            "/api/email-accounts",
            json=new_account(oauth_dovecot, oauth_provider, endpoint),
            headers=service.as_user(user),
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"].startswith("oauth2: token_endpoint: ")
        assert SETTING in response.json()["error"]
        assert stored_accounts(database_url) == before


@pytest.mark.docker
def test_an_endpoint_the_operator_no_longer_allows_fails_the_run_with_no_request(
    service: Service, database_url: str, oauth_dovecot: DovecotServer, oauth_provider: FakeProvider
) -> None:
    """Added while the loopback provider was allowed; the service then runs without that allowance
    (a changed setting, or a name that now resolves elsewhere): the refresh is refused before any
    request, the run says why, and the account is not marked for reconnection (not the user's grant)."""
    strict = make_config(
        database_url,
        encryption_key=service.config.encryption_key.get_secret_value(),
        oauth_allow_loopback_http=False,
    )
    assert strict.oauth_destinations() == PUBLIC_ONLY
    with users(database_url) as (user,):
        response = service.client.post(
            "/api/email-accounts",
            json=new_account(oauth_dovecot, oauth_provider, oauth_provider.token_endpoint),
            headers=service.as_user(user),
        )
        assert response.status_code == 201, response.text
        # Also refused when adding it now.
        refused = new_account(oauth_dovecot, oauth_provider, oauth_provider.token_endpoint)
        with running_service(strict) as api:
            assert (
                api.client.post("/api/email-accounts", json=refused, headers=api.as_user(user)).status_code
                == 422
            )
            before = oauth_provider.token_requests
            run = api.client.post(
                "/functions/v1/import-emails", json={"user_id": str(user)}, headers=api.as_service
            )
        assert run.status_code == 502, run.text
        error = run.json()["error"]
        assert "token endpoint" in error and "is refused" in error and SETTING in error
        assert oauth_provider.token_requests == before
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT needs_reconnect_since FROM public.email_accounts WHERE user_id = %s", (user,)
            ).fetchone()
            history = conn.execute(
                "SELECT status, error FROM public.sync_runs WHERE user_id = %s", (user,)
            ).fetchall()
        assert row == (None,)
        assert [status for status, _ in history] == ["failed"] and SETTING in history[0][1]


def test_the_setting_is_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(
        "postgresql://u:p@127.0.0.1/db",
        imap_allowed_networks="10.0.0.0/8",
        oauth_allowed_networks="auth.internal,172.16.0.0/12",
        oauth_allow_loopback_http=False,
    )
    # Allowing an internal mail server does not allow POSTs with secrets into its network.
    with pytest.raises(DestinationRefused, match=SETTING):
        check_url("https://10.1.1.1/token", config.oauth_destinations(), setting=SETTING)
    check_url("https://172.16.5.5/token", config.oauth_destinations(), setting=SETTING)
    assert config.oauth_destinations().hosts == frozenset({"auth.internal"})
