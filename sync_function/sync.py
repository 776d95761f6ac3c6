"""One attempt at importing a user's mail: every account, recorded in the user's history."""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool

from sync_function import accounts, metrics, notify, oauth, runs
from sync_function.config import Config
from sync_function.imap import ImapError
from sync_function.importer import AccountImportResult, ImapAccount, ProgressCallback, import_account

log = structlog.get_logger(__name__)


class ImportFailed(Exception):
    """An attempt failed; the message is safe to show the user (no secrets).

    `retryable` is False when trying again cannot help (wrong password, TLS mismatch, missing
    mailbox): the run is then failed at once instead of after every backoff step.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class AttemptResult:
    run_id: uuid.UUID
    status: str
    accounts: int = 0
    fetched: int = 0
    imported: int = 0
    skipped: int = 0
    duplicates: int = 0
    bytes: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def run_attempt(
    pool: ConnectionPool,
    config: Config,
    *,
    run_id: uuid.UUID,
    attempt: int,
    final: bool,
    ssl_context: ssl.SSLContext | None = None,
    worker: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> AttemptResult:
    """Import every account of the run's user; raises ImportFailed when any account failed.

    Accounts are independent: one failing does not stop the others, and whatever was imported
    stays imported (the importer checkpoints each batch). Progress (messages handled of the total
    known so far) is recorded on the run after every batch, and passed to `on_progress` too.
    """
    started = time.perf_counter()
    with pool.connection() as conn:
        user_id = runs.start_attempt(conn, run_id=run_id, attempt=attempt, worker=worker)
        if user_id is None:
            log.info("run already finished", run_id=str(run_id))
            return AttemptResult(run_id=run_id, status="finished")
        errors: list[str] = []
        reconnect: list[tuple[uuid.UUID, str]] = []
        retryable = True
        counts = {"fetched": 0, "imported": 0, "skipped": 0, "duplicates": 0, "bytes": 0}
        try:
            user_accounts = accounts.imap_accounts(
                conn,
                user_id=user_id,
                encryption_key=config.encryption_key.get_secret_value(),
                token_endpoints=config.oauth_destinations(),
            )
        except Exception as exc:  # decryption or database: the whole attempt fails
            user_accounts = []
            errors.append(str(exc))
        progress = _RunProgress(conn, run_id=run_id, listener=on_progress)
        for account in user_accounts:
            progress.next_account()
            try:
                result = _import_account(
                    conn,
                    config,
                    account=account,
                    user_id=user_id,
                    batch_size=config.imap_batch_size,
                    max_message_bytes=config.max_message_bytes,
                    ssl_context=ssl_context,
                    timeout_s=config.imap_timeout_seconds,
                    on_progress=progress.update,
                    allowed=config.imap_destinations(),
                )
            except oauth.InvalidGrant as exc:
                errors.append(f"{account.username}@{account.host}: {exc}")
                # Retrying cannot help: only the user signing in again can.
                retryable = False
                if accounts.mark_needs_reconnect(conn, account_id=account.account_id, reason=str(exc)):
                    reconnect.append((account.account_id, str(exc)))
                continue
            except (ImapError, ValueError, oauth.OAuthError) as exc:
                errors.append(f"{account.username}@{account.host}/{account.mailbox}: {exc}")
                # One permanent failure is enough: retrying would fail the same way for that account.
                retryable = retryable and isinstance(exc, ImapError | oauth.OAuthError) and exc.transient
                continue
            except Exception as exc:
                errors.append(
                    f"{account.username}@{account.host}/{account.mailbox}: internal error ({type(exc).__name__})"
                )
                log.exception("import crashed", run_id=str(run_id), account_id=str(account.account_id))
                continue
            if account.oauth is not None:
                accounts.clear_needs_reconnect(conn, account_id=account.account_id)
            if result.missing:
                # Renamed or deleted on the server: recorded (mailbox_state.missing_since), not a failure.
                log.warning(
                    "folders gone from the server were skipped",
                    run_id=str(run_id),
                    account_id=str(account.account_id),
                    folders=list(result.missing),
                )
            for key in counts:
                counts[key] += getattr(result, key)
        seconds = time.perf_counter() - started
        error = "; ".join(errors) if errors else None
        status = runs.finish_attempt(
            conn,
            run_id=run_id,
            attempt=attempt,
            messages=counts["imported"],
            error=error,
            final=final or not retryable,
        )
        metrics.record_attempt(status=status, imported=counts["imported"], seconds=seconds)
        log.info(
            "import attempt finished",
            run_id=str(run_id),
            user_id=str(user_id),
            attempt=attempt,
            status=status,
            accounts=len(user_accounts),
            seconds=round(seconds, 3),
            **counts,
        )
        if status == "failed":
            _maybe_alert(conn, config, user_id=user_id, run_id=run_id, error=error or "")
        for account_id, reason in reconnect:
            if config.failure_webhook_url is not None:
                notify.post_failure_alert(
                    str(config.failure_webhook_url),
                    user_id=user_id,
                    run_id=run_id,
                    consecutive_failures=runs.consecutive_failures(conn, user_id=user_id),
                    last_error=reason,
                    event="auto_sync.needs_reconnect",
                    account_id=account_id,
                )
    if error is not None:
        raise ImportFailed(error, retryable=retryable)
    return AttemptResult(
        run_id=run_id, status=status, accounts=len(user_accounts), seconds=seconds, errors=errors, **counts
    )


def _import_account(
    conn: psycopg.Connection[Any], config: Config, *, account: ImapAccount, **kwargs: Any
) -> AccountImportResult:
    """import_account, then keep a refresh token the provider rotated, whatever the import did."""
    try:
        return import_account(conn, account=account, **kwargs)
    finally:
        if account.oauth is not None:
            accounts.store_rotated_refresh_token(
                conn, account_id=account.account_id, encryption_key=config.encryption_key.get_secret_value()
            )


class _RunProgress:
    """Sums the importer's per-mailbox progress over the user's accounts, imported one after another."""

    def __init__(self, conn, *, run_id: uuid.UUID, listener: Callable[[int, int], None] | None) -> None:  # type: ignore[no-untyped-def]
        self.conn = conn
        self.run_id = run_id
        self.listener = listener
        self.done_before = 0  # messages of the accounts already finished (or given up)
        self.current_done = 0
        self.current_total = 0

    def next_account(self) -> None:
        # An account that failed half-way counts as handled: the total must stay reachable.
        self.done_before += self.current_total
        self.current_done = self.current_total = 0

    def update(self, done: int, total: int) -> None:
        self.current_done, self.current_total = done, total
        done_all, total_all = self.done_before + done, self.done_before + total
        runs.set_progress(self.conn, run_id=self.run_id, done=done_all, total=total_all)
        if self.listener is not None:
            self.listener(done_all, total_all)


def _maybe_alert(conn, config: Config, *, user_id: uuid.UUID, run_id: uuid.UUID, error: str) -> None:  # type: ignore[no-untyped-def]
    if config.failure_webhook_url is None:
        return
    failures = runs.consecutive_failures(conn, user_id=user_id)
    # Once per streak, when it reaches the threshold: operators want a signal, not a flood.
    if failures == config.failure_threshold:
        notify.post_failure_alert(
            str(config.failure_webhook_url),
            user_id=user_id,
            run_id=run_id,
            consecutive_failures=failures,
            last_error=error,
        )
