"""OAuth2 for IMAP accounts: the token endpoint client, an access-token cache, the SASL strings.

Microsoft 365 / Outlook.com take no passwords over IMAP and Gmail only app passwords: those accounts
sign in with `AUTHENTICATE XOAUTH2` or `OAUTHBEARER` (RFC 7628) and a short-lived access token,
obtained from the provider's token endpoint with the account's refresh token (RFC 6749 section 6),
or, once, with an authorization code and its PKCE verifier (RFC 6749 section 4.1.3, RFC 7636).

Providers are data: presets for Google and Microsoft, or any provider given by its token endpoint.
A custom endpoint is a destination a user chose, checked like an IMAP host (sync_function/destinations.py)
against its own allow-list, AUTOSYNC_OAUTH_ALLOWED_NETWORKS: when the account is added, and again at
every request, which goes to the checked address (no second DNS lookup to rebind).

A refusal of the grant itself (`invalid_grant`: consent revoked, password changed, code used) is
permanent and says the user must reconnect; an endpoint that is down, slow or answers garbage is
transient, worth a retry. Tokens never appear in messages or reprs.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from sync_function.destinations import (
    PUBLIC_ONLY,
    DestinationPolicy,
    DestinationRefused,
    InvalidHost,
    check_url,
)

# Seconds before expiry at which a cached access token is no longer handed out: an import started
# with it must be able to log in.
DEFAULT_EXPIRY_MARGIN_S = 120.0
# A token endpoint answers in well under a second; a stuck one must not hold a worker.
DEFAULT_TIMEOUT_S = 15.0
# The allow-list of token endpoints that are not public (named in refusals).
ALLOWED_NETWORKS_SETTING = "AUTOSYNC_OAUTH_ALLOWED_NETWORKS"


@dataclass(frozen=True)
class Provider:
    """Where tokens come from, and the scopes IMAP access needs there."""

    name: str
    token_endpoint: str
    scopes: tuple[str, ...] = ()


PROVIDERS: dict[str, Provider] = {
    "google": Provider("google", "https://oauth2.googleapis.com/token", ("https://mail.google.com/",)),
    "microsoft": Provider(
        "microsoft",
        "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        ("https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access"),
    ),
}


def provider(
    name: str | None = None,
    *,
    token_endpoint: str | None = None,
    scopes: tuple[str, ...] = (),
    policy: DestinationPolicy = PUBLIC_ONLY,
) -> Provider:
    """A preset by name, or a provider given by its token endpoint, checked against `policy`
    (https, to a public address or one the policy allows; plain http only to an allowed one).

    Raises ValueError (a message safe to return) for an unknown preset or a refused endpoint.
    """
    if name is not None and token_endpoint is None:
        try:
            return PROVIDERS[name]
        except KeyError:
            raise ValueError(
                f"unknown OAuth2 provider {name!r}: use one of {', '.join(sorted(PROVIDERS))} or give token_endpoint"
            ) from None
    if token_endpoint is None:
        raise ValueError("give an OAuth2 provider name or its token_endpoint")
    try:
        checked = check_url(token_endpoint, policy, setting=ALLOWED_NETWORKS_SETTING)
    except (InvalidHost, DestinationRefused) as exc:
        raise ValueError(f"token_endpoint: {exc}") from None
    except OSError:  # socket.gaierror: the name does not resolve
        raise ValueError("token_endpoint: its host name does not resolve") from None
    return Provider(name or checked.host, checked.url, scopes)


class OAuthError(Exception):
    """Tokens could not be obtained. `transient` tells a retrying caller whether trying again may help."""

    transient = True


class InvalidGrant(OAuthError):
    """The provider refused the refresh token or code: only the user reconnecting the account helps."""

    transient = False


class TokenEndpointError(OAuthError):
    """The token endpoint is unreachable, failed, or answered something that is not a token."""


@dataclass(frozen=True)
class Tokens:
    access_token: str = field(repr=False)
    # time.time() at which the access token expires.
    expires_at: float
    # Providers may rotate the refresh token; None when they keep the old one.
    refresh_token: str | None = field(default=None, repr=False)
    scope: str | None = None


@dataclass(frozen=True)
class Client:
    """The registered OAuth2 client of the product at a provider. The secret is optional (PKCE public clients)."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)


def refresh(
    http: httpx.Client,
    where: Provider,
    client: Client,
    *,
    refresh_token: str,
    policy: DestinationPolicy = PUBLIC_ONLY,
) -> Tokens:
    """A fresh access token from the refresh token (grant_type=refresh_token)."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if where.scopes:
        form["scope"] = " ".join(where.scopes)
    return _token_request(http, where, client, form, policy)


def exchange_code(
    http: httpx.Client,
    where: Provider,
    client: Client,
    *,
    code: str,
    code_verifier: str,
    redirect_uri: str,
    policy: DestinationPolicy = PUBLIC_ONLY,
) -> Tokens:
    """Tokens for an authorization code from the product's consent screen (with its PKCE verifier)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": code_verifier,
        "redirect_uri": redirect_uri,
    }
    tokens = _token_request(http, where, client, form, policy)
    if tokens.refresh_token is None:
        scopes = " ".join(where.scopes) or "the provider's offline scope"
        raise InvalidGrant(
            f"{where.name} issued no refresh token: the consent must ask for offline access ({scopes})"
        )
    return tokens


def _token_request(
    http: httpx.Client, where: Provider, client: Client, form: dict[str, str], policy: DestinationPolicy
) -> Tokens:
    form = {**form, "client_id": client.client_id}
    if client.client_secret is not None:
        form["client_secret"] = client.client_secret
    response = _post(http, where, form, policy)
    body = _json(response)
    if response.status_code >= 400 or "error" in body:
        error = str(body.get("error") or f"HTTP {response.status_code}")
        if error == "invalid_grant":
            raise InvalidGrant(
                f"{where.name} refused the account's authorization (invalid_grant: consent revoked, password "
                "changed or token expired): the user must reconnect the account"
            )
        if error in ("invalid_client", "unauthorized_client", "unsupported_grant_type", "invalid_scope"):
            # The product's registration is wrong: retrying cannot help, reconnecting neither.
            exc_type: type[OAuthError] = PermanentTokenError
        else:
            exc_type = TokenEndpointError
        raise exc_type(f"the {where.name} token endpoint refused the request ({error})")
    token = body.get("access_token")
    expires_in = body.get("expires_in", 3600)
    if not isinstance(token, str) or not token or not isinstance(expires_in, int | float) or expires_in <= 0:
        raise TokenEndpointError(f"the {where.name} token endpoint answered without a usable access token")
    rotated = body.get("refresh_token")
    return Tokens(
        access_token=token,
        expires_at=time.time() + float(expires_in),
        refresh_token=rotated if isinstance(rotated, str) and rotated else None,
        scope=body.get("scope") if isinstance(body.get("scope"), str) else None,
    )


def _post(
    http: httpx.Client, where: Provider, form: dict[str, str], policy: DestinationPolicy
) -> httpx.Response:
    """POST the form to the endpoint, checked again now and sent to the checked addresses only."""
    try:
        checked = check_url(where.token_endpoint, policy, setting=ALLOWED_NETWORKS_SETTING)
    except (InvalidHost, DestinationRefused) as exc:
        # Allowed when the account was added, or stored before the check existed; the name may now
        # resolve elsewhere. Only an operator (or the user, with another endpoint) can change that.
        raise EndpointRefused(
            f"the {where.name} token endpoint ({where.token_endpoint}) is refused: {exc}"
        ) from None
    except OSError:  # socket.gaierror
        raise TokenEndpointError(
            f"the {where.name} token endpoint cannot be reached (its host name does not resolve)"
        ) from None
    failure: httpx.HTTPError | None = None
    for address in checked.addresses:
        url, headers, extensions = checked.pinned(address)
        try:
            return http.post(
                url,
                data=form,
                headers={"Accept": "application/json", **headers},
                extensions=extensions,
                timeout=DEFAULT_TIMEOUT_S,
                follow_redirects=False,  # a redirect would go to an unchecked destination
            )
        except httpx.ConnectError as exc:
            failure = exc  # the next address, as a resolver-driven client would
        except httpx.TimeoutException:
            raise TokenEndpointError(f"the {where.name} token endpoint did not answer in time") from None
        except httpx.HTTPError as exc:
            failure = exc
            break
    raise TokenEndpointError(
        f"the {where.name} token endpoint cannot be reached ({type(failure).__name__})"
    ) from None


class PermanentTokenError(OAuthError):
    """The token endpoint refuses the product's client (id, secret, grant type or scope): an operator must fix it."""

    transient = False


class EndpointRefused(PermanentTokenError):
    """The token endpoint is a destination the service must not reach (AUTOSYNC_OAUTH_ALLOWED_NETWORKS)."""


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TokenEndpointError(
            f"the token endpoint answered HTTP {response.status_code} with something that is not a JSON object"
        )
    return body


class TokenCache:
    """Access tokens per account, reused until `margin_s` before they expire. Thread-safe.

    `get` calls `fetch` (which refreshes at the provider) only when no usable token is cached;
    `invalidate` drops a token the server refused, so that the next `get` refreshes once more.
    """

    def __init__(
        self, *, margin_s: float = DEFAULT_EXPIRY_MARGIN_S, clock: Callable[[], float] = time.time
    ) -> None:
        self._margin_s = margin_s
        self._clock = clock
        self._tokens: dict[object, Tokens] = {}
        self._lock = threading.Lock()

    def get(self, key: object, fetch: Callable[[], Tokens]) -> Tokens:
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and cached.expires_at - self._margin_s > self._clock():
                return cached
        fresh = fetch()
        with self._lock:
            # Expired entries go (accounts deleted, sign-ins only verified): the cache stays small.
            now = self._clock()
            self._tokens = {k: t for k, t in self._tokens.items() if t.expires_at > now}
            self._tokens[key] = fresh
        return fresh

    def invalidate(self, key: object) -> None:
        with self._lock:
            self._tokens.pop(key, None)


@dataclass(frozen=True)
class AuthorizationCode:
    """What the product's consent screen returns, for the service to exchange (RFC 6749 4.1.3, RFC 7636)."""

    code: str = field(repr=False)
    code_verifier: str = field(repr=False)
    redirect_uri: str


@dataclass(frozen=True)
class OAuthLogin:
    """What an OAuth2 account signs in with: where tokens come from, and its refresh token."""

    provider: Provider
    client: Client
    refresh_token: str = field(repr=False)
    mechanism: Literal["XOAUTH2", "OAUTHBEARER"] = "XOAUTH2"
    # Where its token endpoint may be besides public addresses (the operator's
    # AUTOSYNC_OAUTH_ALLOWED_NETWORKS): checked at every request.
    endpoints: DestinationPolicy = PUBLIC_ONLY


# One cache per process: the worker's accounts reuse their access tokens across runs.
CACHE = TokenCache()
# Refresh tokens the provider replaced (Microsoft rotates them), per account, until stored.
_ROTATED: dict[object, str] = {}
_ROTATED_LOCK = threading.Lock()


def _cache_key(account_id: object, login: OAuthLogin) -> tuple[object, str]:
    # A reconnected account (new refresh token) must not reuse the old grant's access token.
    return account_id, hashlib.sha256(login.refresh_token.encode()).hexdigest()


def current_token(account_id: object, login: OAuthLogin) -> Tokens:
    """A cached access token with time left, or a fresh one from the token endpoint."""

    def fetch() -> Tokens:
        with httpx.Client() as http:
            tokens = refresh(
                http, login.provider, login.client, refresh_token=login.refresh_token, policy=login.endpoints
            )
        if tokens.refresh_token is not None and tokens.refresh_token != login.refresh_token:
            with _ROTATED_LOCK:
                _ROTATED[account_id] = tokens.refresh_token
        return tokens

    return CACHE.get(_cache_key(account_id, login), fetch)


def take_rotated(account_id: object) -> str | None:
    """The refresh token that replaced the account's stored one, once: the caller must store it."""
    with _ROTATED_LOCK:
        return _ROTATED.pop(account_id, None)


def forget_token(account_id: object, login: OAuthLogin) -> None:
    """The server refused the cached token: the next `current_token` asks the provider again."""
    CACHE.invalidate(_cache_key(account_id, login))


def xoauth2(user: str, access_token: str) -> bytes:
    """The initial response of SASL XOAUTH2 (Google's and Microsoft's format), before base64."""
    return f"user={user}\x01auth=Bearer {access_token}\x01\x01".encode()


def oauthbearer(user: str, access_token: str, *, host: str, port: int) -> bytes:
    """The initial client response of SASL OAUTHBEARER (RFC 7628 section 3.1), before base64."""
    # The GS2 header escapes ',' and '=' in the authorization identity (RFC 5801).
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    return f"n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {access_token}\x01\x01".encode()


def encoded(initial_response: bytes) -> str:
    return base64.b64encode(initial_response).decode()
