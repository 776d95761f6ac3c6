"""Email accounts: verified by logging in, stored with the password encrypted, listed without secrets."""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass, replace
from typing import Any

import httpx
import psycopg
from psycopg import Connection
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from sync_function import imap, oauth, ratelimits
from sync_function.crypto import decrypt_password, encrypt_password
from sync_function.destinations import PUBLIC_ONLY, DestinationPolicy, DestinationRefused, InvalidHost
from sync_function.importer import ImapAccount, login
from sync_function.users import UnknownUser, require_user

# Adding an account waits on the user's IMAP server while the user waits on the page: cap it below
# the import timeout.
VERIFY_TIMEOUT_S = 15.0

INSERT = """
INSERT INTO public.email_accounts (
    user_id, host, port, tls_mode, username, password_encrypted, mailbox, ca_pem,
    folders, all_folders, skip_special_use,
    auth_method, oauth_provider, oauth_token_endpoint, oauth_scopes, oauth_client_id,
    oauth_client_secret_encrypted, oauth_refresh_token_encrypted, oauth_mechanism
)
VALUES (
    %(user_id)s, %(host)s, %(port)s, %(tls_mode)s, %(username)s, %(password)s, %(mailbox)s, %(ca_pem)s,
    %(folders)s, %(all_folders)s, %(skip_special_use)s,
    %(auth_method)s, %(oauth_provider)s, %(oauth_token_endpoint)s, %(oauth_scopes)s, %(oauth_client_id)s,
    %(oauth_client_secret)s, %(oauth_refresh_token)s, %(oauth_mechanism)s
)
RETURNING {view}
"""

# The columns users may see, in AccountView's order.
VIEW_COLUMNS = """id, host, port, tls_mode, username, mailbox, ca_pem, folders, all_folders, skip_special_use,
       auth_method, oauth_provider, oauth_mechanism, needs_reconnect_since, needs_reconnect_reason, created_at"""

INSERT = INSERT.replace("{view}", VIEW_COLUMNS)

LIST = f"""
SELECT {VIEW_COLUMNS}
FROM public.email_accounts WHERE user_id = %(user_id)s ORDER BY created_at, id
"""

WITH_SECRETS = """
SELECT id, host, port, tls_mode, username, password_encrypted, mailbox, ca_pem,
       folders, all_folders, skip_special_use,
       auth_method, oauth_provider, oauth_token_endpoint, oauth_scopes, oauth_client_id,
       oauth_client_secret_encrypted, oauth_refresh_token_encrypted, oauth_mechanism
FROM public.email_accounts WHERE user_id = %(user_id)s ORDER BY created_at, id
"""

# The provider refused the grant: the user must sign in again. The first refusal's time is kept.
MARK_NEEDS_RECONNECT = """
UPDATE public.email_accounts
SET needs_reconnect_since = now(), needs_reconnect_reason = %(reason)s, updated_at = now()
WHERE id = %(id)s AND needs_reconnect_since IS NULL
"""

CLEAR_NEEDS_RECONNECT = """
UPDATE public.email_accounts
SET needs_reconnect_since = NULL, needs_reconnect_reason = NULL, updated_at = now()
WHERE id = %(id)s AND needs_reconnect_since IS NOT NULL
"""

STORE_ROTATED = """
UPDATE public.email_accounts
SET oauth_refresh_token_encrypted = %(refresh_token)s, updated_at = now()
WHERE id = %(id)s AND auth_method = 'oauth2'
"""

RECONNECT = """
UPDATE public.email_accounts
SET oauth_refresh_token_encrypted = %(refresh_token)s, needs_reconnect_since = NULL,
    needs_reconnect_reason = NULL, updated_at = now()
WHERE id = %(id)s AND user_id = %(user_id)s AND auth_method = 'oauth2'
RETURNING {view}
""".replace("{view}", VIEW_COLUMNS)

DELETE = "DELETE FROM public.email_accounts WHERE id = %(id)s AND user_id = %(user_id)s"


class LoginFailed(ValueError):
    """The IMAP server did not accept the account (unreachable, TLS, credentials, no such mailbox)."""


class DestinationNotAllowed(ValueError):
    """The host is not one the service may connect to (sync_function.destinations); nothing was dialled."""


class DuplicateAccount(ValueError):
    """The user already has this mailbox."""


@dataclass(frozen=True)
class AccountView:
    """What the API shows of an account: never the password."""

    id: uuid.UUID
    host: str
    port: int
    tls_mode: str
    username: str
    mailbox: str
    ca_pem: str | None
    folders: list[str] | None
    all_folders: bool
    skip_special_use: list[str]
    auth_method: str
    oauth_provider: str | None
    oauth_mechanism: str | None
    needs_reconnect_since: Any
    needs_reconnect_reason: str | None
    created_at: Any


def create(conn: Connection, *, user_id: uuid.UUID, account: ImapAccount, encryption_key: str) -> AccountView:
    login = account.oauth
    secret = login.client.client_secret if login is not None else None
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            INSERT,
            {
                "user_id": user_id,
                "host": account.host,
                "port": account.port,
                "tls_mode": account.tls_mode,
                "username": account.username,
                "password": encrypt_password(encryption_key, account.password)
                if account.password is not None
                else None,
                "mailbox": account.mailbox,
                "ca_pem": account.ca_pem,
                "folders": list(account.folders) if account.folders is not None else None,
                "all_folders": account.all_folders,
                "skip_special_use": list(account.skip_special_use),
                "auth_method": "oauth2" if login is not None else "password",
                "oauth_provider": login.provider.name if login else None,
                "oauth_token_endpoint": login.provider.token_endpoint if login else None,
                "oauth_scopes": list(login.provider.scopes) if login else None,
                "oauth_client_id": login.client.client_id if login else None,
                "oauth_client_secret": encrypt_password(encryption_key, secret)
                if secret is not None
                else None,
                "oauth_refresh_token": encrypt_password(encryption_key, login.refresh_token)
                if login
                else None,
                "oauth_mechanism": login.mechanism if login else None,
            },
        ).fetchone()
    assert row is not None
    return AccountView(**row)


def verify_login(
    account: ImapAccount,
    *,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None,
    allowed: DestinationPolicy = PUBLIC_ONLY,
) -> None:
    """Log in and STATUS the mailbox; raises LoginFailed with the server's reason in words.

    Raises DestinationNotAllowed (before any connection) for a host that resolves to a refused address.
    """
    try:
        with login(
            account, timeout_s=min(timeout_s, VERIFY_TIMEOUT_S), ssl_context=ssl_context, allowed=allowed
        ) as session:
            if account.all_folders:
                session.list_folders()
            else:
                # Every chosen folder must exist when the account is saved.
                for name in account.folders or (account.mailbox,):
                    session.status(name)
    except (DestinationRefused, InvalidHost) as exc:
        raise DestinationNotAllowed(str(exc)) from None
    except (imap.ImapError, oauth.OAuthError) as exc:
        raise LoginFailed(f"could not verify the account: {exc}") from None


def add(
    pool: ConnectionPool,
    *,
    user_id: uuid.UUID,
    account: ImapAccount,
    encryption_key: str,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None,
    code: oauth.AuthorizationCode | None = None,
    allowed: DestinationPolicy = PUBLIC_ONLY,
    limit: ratelimits.Limit | None = None,
) -> AccountView:
    """Verify the login first, then store the account: nothing is stored for an account that fails.

    An OAuth2 account given an authorization `code` gets its refresh token by exchanging it first.

    The login is checked before a pooled connection is taken: a slow IMAP server must not hold a
    database connection. Raises LoginFailed, DestinationNotAllowed, DuplicateAccount, UnknownUser or
    ratelimits.RateLimited (when `limit` is given and used up).
    """
    if limit is not None:
        # Counted before the login and committed: every attempt is an outbound login, failed or not.
        with pool.connection() as conn, conn.transaction():
            require_user(conn, user_id=user_id)
            ratelimits.hit(conn, user_id=user_id, limit=limit)
    if code is not None and account.oauth is not None:
        account = replace(account, oauth=replace(account.oauth, refresh_token=exchange(account.oauth, code)))
    try:
        verify_login(account, timeout_s=timeout_s, ssl_context=ssl_context, allowed=allowed)
    finally:
        # Taken whatever happened, so that a failed sign-in leaves nothing behind in the process.
        account = _with_rotated_token(account)
    try:
        with pool.connection() as conn:
            return create(conn, user_id=user_id, account=account, encryption_key=encryption_key)
    except psycopg.errors.UniqueViolation:
        raise DuplicateAccount("this mailbox is already added") from None
    except psycopg.errors.ForeignKeyViolation:
        raise UnknownUser(user_id) from None


def exchange(login: oauth.OAuthLogin, code: oauth.AuthorizationCode) -> str:
    """The refresh token for an authorization code; raises LoginFailed with the provider's reason."""
    try:
        with httpx.Client() as http:
            tokens = oauth.exchange_code(
                http,
                login.provider,
                login.client,
                code=code.code,
                code_verifier=code.code_verifier,
                redirect_uri=code.redirect_uri,
                policy=login.endpoints,
            )
    except oauth.OAuthError as exc:
        raise LoginFailed(f"could not complete the sign-in: {exc}") from None
    assert tokens.refresh_token is not None  # exchange_code refuses answers without one
    return tokens.refresh_token


def list_for_user(conn: Connection, *, user_id: uuid.UUID) -> list[AccountView]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [AccountView(**row) for row in cur.execute(LIST, {"user_id": user_id}).fetchall()]


def delete(conn: Connection, *, user_id: uuid.UUID, account_id: uuid.UUID) -> bool:
    return conn.execute(DELETE, {"id": account_id, "user_id": user_id}).rowcount > 0


def imap_accounts(
    conn: Connection,
    *,
    user_id: uuid.UUID,
    encryption_key: str,
    token_endpoints: DestinationPolicy = PUBLIC_ONLY,
) -> list[ImapAccount]:
    """The user's accounts with decrypted passwords, for the importer only. OAuth2 accounts' token
    endpoints will be checked against `token_endpoints` at every request."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(WITH_SECRETS, {"user_id": user_id}).fetchall()
    return [
        ImapAccount(
            account_id=row["id"],
            host=row["host"],
            port=row["port"],
            tls_mode=row["tls_mode"],
            username=row["username"],
            password=decrypt_password(encryption_key, row["password_encrypted"])
            if row["password_encrypted"] is not None
            else None,
            oauth=_oauth_login(row, encryption_key, token_endpoints),
            mailbox=row["mailbox"],
            ca_pem=row["ca_pem"],
            folders=tuple(row["folders"]) if row["folders"] is not None else None,
            all_folders=row["all_folders"],
            skip_special_use=tuple(row["skip_special_use"]),
        )
        for row in rows
    ]


def _oauth_login(
    row: dict[str, Any], encryption_key: str, token_endpoints: DestinationPolicy
) -> oauth.OAuthLogin | None:
    if row["auth_method"] != "oauth2":
        return None
    secret = row["oauth_client_secret_encrypted"]
    return oauth.OAuthLogin(
        provider=oauth.Provider(
            row["oauth_provider"], row["oauth_token_endpoint"], tuple(row["oauth_scopes"] or ())
        ),
        client=oauth.Client(
            row["oauth_client_id"], decrypt_password(encryption_key, secret) if secret is not None else None
        ),
        refresh_token=decrypt_password(encryption_key, row["oauth_refresh_token_encrypted"]),
        mechanism=row["oauth_mechanism"],
        endpoints=token_endpoints,
    )


def mark_needs_reconnect(conn: Connection, *, account_id: uuid.UUID, reason: str) -> bool:
    """The provider refused the account's grant: shown in the accounts list until it is reconnected.

    True when the account was not marked before (so that the operator is told once).
    """
    return conn.execute(MARK_NEEDS_RECONNECT, {"id": account_id, "reason": reason}).rowcount == 1


def _with_rotated_token(account: ImapAccount) -> ImapAccount:
    """The account with the refresh token the provider rotated while its sign-in was verified."""
    rotated = oauth.take_rotated(account.account_id)
    if rotated is None or account.oauth is None:
        return account
    return replace(account, oauth=replace(account.oauth, refresh_token=rotated))


def store_rotated_refresh_token(conn: Connection, *, account_id: uuid.UUID, encryption_key: str) -> bool:
    """Keep the refresh token the provider replaced the stored one with (the old one may stop working)."""
    rotated = oauth.take_rotated(account_id)
    if rotated is None:
        return False
    params = {"id": account_id, "refresh_token": encrypt_password(encryption_key, rotated)}
    return conn.execute(STORE_ROTATED, params).rowcount == 1


def clear_needs_reconnect(conn: Connection, *, account_id: uuid.UUID) -> None:
    conn.execute(CLEAR_NEEDS_RECONNECT, {"id": account_id})


def reconnect(
    pool: ConnectionPool,
    *,
    user_id: uuid.UUID,
    account_id: uuid.UUID,
    refresh_token: str | None,
    encryption_key: str,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None,
    code: oauth.AuthorizationCode | None = None,
    allowed: DestinationPolicy = PUBLIC_ONLY,
    token_endpoints: DestinationPolicy = PUBLIC_ONLY,
) -> AccountView:
    """A new grant for an OAuth2 account: verified by signing in, then stored; clears needs-reconnect.

    The grant is a refresh token, or an authorization `code` that is exchanged for one first.

    Raises LookupError when the user has no such OAuth2 account, LoginFailed when the sign-in fails.
    """
    with pool.connection() as conn:
        stored = [
            a
            for a in imap_accounts(
                conn, user_id=user_id, encryption_key=encryption_key, token_endpoints=token_endpoints
            )
            if a.account_id == account_id
        ]
    if not stored or stored[0].oauth is None:
        raise LookupError("no such OAuth2 email account")
    if code is not None:
        refresh_token = exchange(stored[0].oauth, code)
    if refresh_token is None:
        raise LoginFailed("give a refresh token or an authorization code")
    account = replace(stored[0], oauth=replace(stored[0].oauth, refresh_token=refresh_token))
    verify_login(account, timeout_s=timeout_s, ssl_context=ssl_context, allowed=allowed)
    account = _with_rotated_token(account)
    assert account.oauth is not None
    refresh_token = account.oauth.refresh_token
    with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            RECONNECT,
            {
                "id": account_id,
                "user_id": user_id,
                "refresh_token": encrypt_password(encryption_key, refresh_token),
            },
        ).fetchone()
    if row is None:
        raise LookupError("no such OAuth2 email account")
    return AccountView(**row)
