"""Email accounts: the login is verified before anything is stored."""

from __future__ import annotations

import uuid

import psycopg
from fastapi import APIRouter, Request, status

from sync_function import accounts, imap
from sync_function.deps import ConfigDep, CurrentUser, PoolDep
from sync_function.errors import ApiError
from sync_function.schemas import (
    EmailAccount,
    EmailAccountCreated,
    EmailAccountList,
    NewEmailAccount,
    Success,
)

router = APIRouter(prefix="/api/email-accounts", tags=["email accounts"])


def _verify_login(body: NewEmailAccount, *, timeout_s: float, ssl_context: object) -> None:
    try:
        with imap.connect(
            host=body.host,
            port=body.port,
            tls_mode=body.tls_mode,
            username=body.username,
            password=body.password,
            timeout_s=timeout_s,
            ssl_context=ssl_context,  # type: ignore[arg-type]
        ) as session:
            session.status(body.mailbox)
    except imap.ImapError as exc:
        raise ApiError(400, f"could not verify the account: {exc}") from None


# Plain `def` routes run in the threadpool, and each takes its pooled connection inside the route:
# a connection dependency would hold a threadpool slot while it waits for the pool, and a burst of
# requests could then leave no slot for the routes that hold the connections.
@router.post("", status_code=status.HTTP_201_CREATED, response_model=EmailAccountCreated)
def add_account(
    body: NewEmailAccount, user_id: CurrentUser, pool: PoolDep, config: ConfigDep, request: Request
) -> EmailAccountCreated:
    """Log in to the IMAP server, then store the account with its password encrypted."""
    ssl_context = getattr(request.app.state, "imap_ssl_context", None)
    _verify_login(body, timeout_s=min(config.imap_timeout_seconds, 15.0), ssl_context=ssl_context)
    try:
        with pool.connection() as conn:
            view = accounts.create(
                conn,
                user_id=user_id,
                host=body.host,
                port=body.port,
                tls_mode=body.tls_mode,
                username=body.username,
                password=body.password,
                mailbox=body.mailbox,
                encryption_key=config.encryption_key.get_secret_value(),
            )
    except psycopg.errors.UniqueViolation:
        raise ApiError(409, "this mailbox is already added") from None
    except psycopg.errors.ForeignKeyViolation:
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
