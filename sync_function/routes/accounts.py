"""Email accounts: the login is verified before anything is stored (sync_function.accounts)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, status

from sync_function import accounts, ratelimits
from sync_function.deps import ConfigDep, CurrentUser, PoolDep
from sync_function.errors import ApiError
from sync_function.importer import ImapAccount
from sync_function.schemas import (
    EmailAccount,
    EmailAccountCreated,
    EmailAccountList,
    NewEmailAccount,
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
    """Log in to the IMAP server, then store the account with its password encrypted."""
    account = ImapAccount(
        account_id=uuid.uuid4(),  # a placeholder: the database assigns the stored account's id
        host=body.host,
        port=body.port,
        tls_mode=body.tls_mode,
        username=body.username,
        password=body.password,
        mailbox=body.mailbox,
    )
    try:
        view = accounts.add(
            pool,
            user_id=user_id,
            account=account,
            encryption_key=config.encryption_key.get_secret_value(),
            timeout_s=config.imap_timeout_seconds,
            ssl_context=getattr(request.app.state, "imap_ssl_context", None),
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
