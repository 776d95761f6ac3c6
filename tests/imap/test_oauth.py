"""OAuth2 sign-in against a real Dovecot that checks bearer tokens with a real local provider."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import httpx
import psycopg
import pytest

from harness import mailgen
from harness.dovecot import LOOPBACK_ALLOWED, DovecotServer
from harness.oauth_provider import FakeProvider
from sync_function import importer, oauth
from sync_function.imap import ImapAuthError
from sync_function.importer import ImapAccount, import_account
from tests.support.db import delete_users, new_user

pytestmark = pytest.mark.docker


@dataclass
class OAuthBox:
    user: str
    user_id: uuid.UUID
    account: ImapAccount
    refresh_token: str


@pytest.fixture
def make_box(db: psycopg.Connection, oauth_dovecot: DovecotServer, oauth_provider: FakeProvider) -> Iterator:  # type: ignore[type-arg]
    made: list[uuid.UUID] = []

    def make(mechanism: str = "XOAUTH2") -> OAuthBox:
        name, _ = oauth_dovecot.new_user("oauth")
        user_id = new_user(db)
        made.append(user_id)
        row = db.execute(
            """INSERT INTO public.email_accounts (user_id, host, port, tls_mode, username, auth_method,
                   oauth_provider, oauth_token_endpoint, oauth_client_id, oauth_refresh_token_encrypted,
                   oauth_mechanism)
               VALUES (%s, %s, %s, 'plain', %s, 'oauth2', 'test', %s, 'c', '\\x00', %s) RETURNING id""",
            (user_id, oauth_dovecot.host, oauth_dovecot.port, name, oauth_provider.token_endpoint, mechanism),
        ).fetchone()
        assert row is not None
        refresh_token = oauth_provider.grant(name)
        login = oauth.OAuthLogin(
            provider=oauth.provider(token_endpoint=oauth_provider.token_endpoint, policy=LOOPBACK_ALLOWED),
            client=oauth.Client(oauth_provider.client_id, oauth_provider.client_secret),
            refresh_token=refresh_token,
            mechanism=mechanism,  # type: ignore[arg-type]
            endpoints=LOOPBACK_ALLOWED,
        )
        account = ImapAccount(
            account_id=row[0],
            host=oauth_dovecot.host,
            port=oauth_dovecot.port,
            tls_mode="plain",
            username=name,
            password=None,
            oauth=login,
        )
        return OAuthBox(name, user_id, account, refresh_token)

    yield make
    delete_users(db, made)


def run(service_conn: psycopg.Connection, box: OAuthBox):  # type: ignore[no-untyped-def]
    return import_account(service_conn, account=box.account, user_id=box.user_id, allowed=LOOPBACK_ALLOWED)


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_an_oauth2_account_imports_and_reuses_its_access_token(
    mechanism: str,
    make_box,
    service_conn,
    oauth_dovecot: DovecotServer,
    oauth_provider: FakeProvider,  # type: ignore[no-untyped-def]
) -> None:
    box = make_box(mechanism)
    oauth_dovecot.deliver(box.user, (g.raw for g in mailgen.generate(5, seed=61)))
    before = oauth_provider.token_requests

    assert run(service_conn, box).imported == 5
    oauth_dovecot.deliver(box.user, mailgen.generate(6, seed=61)[5].raw)
    assert run(service_conn, box).imported == 1

    # One refresh for both runs: the access token was cached.
    assert oauth_provider.token_requests == before + 1
    assert f"method={mechanism}" in oauth_dovecot.log()


def test_a_token_the_server_refuses_is_refreshed_once(
    make_box,
    service_conn,
    oauth_dovecot: DovecotServer,
    oauth_provider: FakeProvider,  # type: ignore[no-untyped-def]
) -> None:
    box = make_box()
    oauth_dovecot.deliver(box.user, (g.raw for g in mailgen.generate(3, seed=62)))
    run(service_conn, box)
    # The provider ends the cached token early (as a password change does): the server refuses it.
    oauth_provider.expire_access_tokens()
    oauth_dovecot.deliver(box.user, mailgen.generate(4, seed=62)[3].raw)
    before = oauth_provider.token_requests

    assert run(service_conn, box).imported == 1
    assert oauth_provider.token_requests == before + 1


def test_a_token_about_to_expire_is_not_used(
    make_box,
    service_conn,
    oauth_provider: FakeProvider,  # type: ignore[no-untyped-def]
) -> None:
    box = make_box()
    oauth_provider.expires_in = 60  # below the cache's margin: each run must refresh
    before = oauth_provider.token_requests
    run(service_conn, box)
    run(service_conn, box)
    assert oauth_provider.token_requests == before + 2


def test_a_revoked_grant_fails_at_once_as_invalid_grant(
    make_box,
    service_conn,
    oauth_provider: FakeProvider,  # type: ignore[no-untyped-def]
) -> None:
    box = make_box()
    oauth_provider.revoke(box.refresh_token)
    with pytest.raises(oauth.InvalidGrant, match="reconnect") as caught:
        run(service_conn, box)
    assert not caught.value.transient
    assert box.refresh_token not in str(caught.value)


@pytest.mark.parametrize(("mode", "says"), [("down", "not a JSON object"), ("garbage", "not a JSON object")])
def test_a_token_endpoint_that_is_down_or_answers_garbage_is_transient(
    mode: str,
    says: str,
    make_box,
    service_conn,
    oauth_provider: FakeProvider,  # type: ignore[no-untyped-def]
) -> None:
    box = make_box()
    oauth_provider.mode = mode  # type: ignore[assignment]
    with pytest.raises(oauth.TokenEndpointError, match=says) as caught:
        run(service_conn, box)
    assert caught.value.transient


def test_an_unreachable_token_endpoint_is_transient(make_box, service_conn) -> None:  # type: ignore[no-untyped-def]
    box = make_box()
    with httpx.Client() as http:
        with pytest.raises(oauth.TokenEndpointError, match="cannot be reached") as caught:
            oauth.refresh(
                http,
                oauth.Provider("nowhere", "http://127.0.0.1:9/token"),
                oauth.Client("c"),
                refresh_token=box.refresh_token,
                policy=LOOPBACK_ALLOWED,
            )
    assert caught.value.transient


def test_a_token_for_someone_else_is_refused_by_the_server(
    make_box,
    service_conn,
    oauth_provider: FakeProvider,  # type: ignore[no-untyped-def]
) -> None:
    box = make_box()
    other = make_box()
    # The grant is another user's: the provider issues tokens, the IMAP server refuses them for this user.
    wrong = replace(box, account=replace(box.account, oauth=other.account.oauth))
    with pytest.raises(ImapAuthError, match="refused the OAuth2 access token"):
        run(service_conn, wrong)


def test_an_authorization_code_with_pkce_is_exchanged_for_a_refresh_token(
    oauth_provider: FakeProvider,
) -> None:
    verifier = "v" * 64
    where = oauth.provider(token_endpoint=oauth_provider.token_endpoint, policy=LOOPBACK_ALLOWED)
    client = oauth.Client(oauth_provider.client_id, oauth_provider.client_secret)
    code = oauth_provider.authorization_code("someone", code_verifier=verifier, redirect_uri="https://app/cb")
    with httpx.Client() as http:
        with pytest.raises(oauth.InvalidGrant):
            oauth.exchange_code(
                http,
                where,
                client,
                code=code,
                code_verifier="w" * 64,
                redirect_uri="https://app/cb",
                policy=LOOPBACK_ALLOWED,
            )
        code = oauth_provider.authorization_code(
            "someone", code_verifier=verifier, redirect_uri="https://app/cb"
        )
        tokens = oauth.exchange_code(
            http,
            where,
            client,
            code=code,
            code_verifier=verifier,
            redirect_uri="https://app/cb",
            policy=LOOPBACK_ALLOWED,
        )
    assert tokens.refresh_token in oauth_provider.refresh_tokens
    assert "access_token" not in repr(tokens) or tokens.access_token not in repr(tokens)


def test_presets_and_custom_endpoints() -> None:
    assert oauth.provider("google").scopes == ("https://mail.google.com/",)
    assert oauth.provider("microsoft").scopes == (
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "offline_access",
    )
    with pytest.raises(ValueError, match="https"):
        oauth.provider(token_endpoint="http://127.0.0.1:1/token")  # noqa: S106 (a URL)
    with pytest.raises(ValueError, match="https"):
        oauth.provider(token_endpoint="http://example.com/token", policy=LOOPBACK_ALLOWED)  # noqa: S106
    with pytest.raises(ValueError, match="unknown OAuth2 provider"):
        oauth.provider("yahoo")


def test_a_token_expiring_during_a_long_import_does_not_stop_it(
    make_box,  # type: ignore[no-untyped-def]
    service_conn: psycopg.Connection,
    oauth_dovecot: DovecotServer,
    oauth_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box = make_box()
    oauth_dovecot.deliver(box.user, (g.raw for g in mailgen.generate(40, seed=63)))
    real_store = importer._store_batch

    def expire_then_store(*args, **kwargs):  # type: ignore[no-untyped-def]
        oauth_provider.expire_access_tokens()  # the token dies while batches are still coming
        return real_store(*args, **kwargs)

    monkeypatch.setattr(importer, "_store_batch", expire_then_store)
    result = import_account(
        service_conn, account=box.account, user_id=box.user_id, batch_size=5, allowed=LOOPBACK_ALLOWED
    )
    monkeypatch.setattr(importer, "_store_batch", real_store)
    assert result.imported == 40, "the session signed in before expiry stays signed in"

    # The next run: the server refuses the cached token, one refresh, and it imports.
    oauth_dovecot.deliver(box.user, mailgen.generate(41, seed=63)[40].raw)
    before = oauth_provider.token_requests
    assert import_account(service_conn, account=box.account, user_id=box.user_id, allowed=LOOPBACK_ALLOWED).imported == 1
    assert oauth_provider.token_requests == before + 1
