"""Email accounts: the login is verified before anything is stored (sync_function.accounts)."""

from __future__ import annotations

import uuid
from dataclasses import replace

from fastapi import APIRouter, Request, status

from sync_function import accounts, oauth, ratelimits
from sync_function.config import Config
from sync_function.deps import ConfigDep, CurrentUser, PoolDep
from sync_function.errors import ApiError
from sync_function.importer import ImapAccount
from sync_function.schemas import (
    EmailAccount,
    EmailAccountCreated,
    EmailAccountList,
    NewEmailAccount,
    OAuth2Sign,
    Reconnect,
    Success,
)
from sync_function.users import UnknownUser

router = APIRouter(prefix="/api/email-accounts", tags=["email accounts"])


# Plain `def` routes run in the threadpool, and each takes its pooled connection inside the route:
# a connection dependency would hold a threadpool slot while it waits for the pool, and a burst of
# requests could then leave no slot for the routes that hold the connections.
@router.post("", status_code=status.HTTP_201_CREATED, response_model=EmailAccountCreated)
def add_account(
    body: NewEmailAccount, user_id: CurrentUser, pool: PoolDep, config: ConfigDep, request: Request
) -> EmailAccountCreated:
    """Log in to the IMAP server, then store the account with its password or refresh token encrypted."""
    try:
        login, code = _oauth(body.oauth2, config)
    except ValueError as exc:
        raise ApiError(422, f"oauth2: {exc}") from None
    account = ImapAccount(
        account_id=uuid.uuid4(),  # a placeholder: the database assigns the stored account's id
        host=body.host,
        port=body.port,
        tls_mode=body.tls_mode,
        username=body.username,
        password=body.password,
        oauth=login,
        # The first chosen folder names the account (its unique key) as the single folder did.
        mailbox=body.folders[0] if body.folders else body.mailbox,
        ca_pem=body.ca_pem,
        folders=tuple(body.folders) if body.folders is not None else None,
        all_folders=body.all_folders,
        skip_special_use=tuple(body.skip_special_use),
    )
    try:
        view = accounts.add(
            pool,
            user_id=user_id,
            account=account,
            encryption_key=config.encryption_key.get_secret_value(),
            timeout_s=config.imap_timeout_seconds,
            ssl_context=getattr(request.app.state, "imap_ssl_context", None),
            code=code,
            allowed=config.imap_destinations(),
            limit=ratelimits.add_email_account(config),
        )
    except accounts.DestinationNotAllowed as exc:
        raise ApiError(422, str(exc)) from None
    except accounts.LoginFailed as exc:
        raise ApiError(400, str(exc)) from None
    except accounts.DuplicateAccount as exc:
        raise ApiError(409, str(exc)) from None
    except UnknownUser:
        raise ApiError(403, "the token's user does not exist") from None
    return EmailAccountCreated(account=EmailAccount(**vars(view)))


def _oauth(
    sign: OAuth2Sign | None, config: Config
) -> tuple[oauth.OAuthLogin | None, oauth.AuthorizationCode | None]:
    if sign is None:
        return None, None
    where = oauth.provider(
        sign.provider, token_endpoint=sign.token_endpoint, policy=config.oauth_destinations()
    )
    if sign.scopes is not None:
        where = replace(where, scopes=tuple(sign.scopes))
    login = oauth.OAuthLogin(
        provider=where,
        client=oauth.Client(sign.client_id, sign.client_secret),
        # Filled by the exchange when a code is given.
        refresh_token=sign.refresh_token or "",
        mechanism=sign.mechanism,
        endpoints=config.oauth_destinations(),
    )
    code = (
        oauth.AuthorizationCode(sign.code, sign.code_verifier or "", sign.redirect_uri or "")
        if sign.code is not None
        else None
    )
    return login, code


@router.post("/{account_id}/reconnect", response_model=EmailAccountCreated)
def reconnect_account(
    account_id: uuid.UUID,
    body: Reconnect,
    user_id: CurrentUser,
    pool: PoolDep,
    config: ConfigDep,
    request: Request,
) -> EmailAccountCreated:
    """Give an OAuth2 account a new grant (after the provider refused the old one); clears needs-reconnect."""
    code = (
        oauth.AuthorizationCode(body.code, body.code_verifier or "", body.redirect_uri or "")
        if body.code is not None
        else None
    )
    try:
        view = accounts.reconnect(
            pool,
            user_id=user_id,
            account_id=account_id,
            refresh_token=body.refresh_token,
            code=code,
            encryption_key=config.encryption_key.get_secret_value(),
            timeout_s=config.imap_timeout_seconds,
            ssl_context=getattr(request.app.state, "imap_ssl_context", None),
            allowed=config.imap_destinations(),
            token_endpoints=config.oauth_destinations(),
        )
    except accounts.DestinationNotAllowed as exc:
        raise ApiError(422, str(exc)) from None
    except LookupError as exc:
        raise ApiError(404, str(exc)) from None
    except accounts.LoginFailed as exc:
        raise ApiError(400, str(exc)) from None
    return EmailAccountCreated(account=EmailAccount(**vars(view)))


@router.get("", response_model=EmailAccountList)
def list_accounts(user_id: CurrentUser, pool: PoolDep) -> EmailAccountList:
    with pool.connection() as conn:
        views = accounts.list_for_user(conn, user_id=user_id)
    return EmailAccountList(accounts=[EmailAccount(**vars(v)) for v in views])


@router.delete("/{account_id}", response_model=Success)
def delete_account(account_id: uuid.UUID, user_id: CurrentUser, pool: PoolDep) -> Success:
    with pool.connection() as conn:
        deleted = accounts.delete(conn, user_id=user_id, account_id=account_id)
    if not deleted:
        raise ApiError(404, "no such email account")
    return Success()
