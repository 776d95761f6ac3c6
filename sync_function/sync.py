"""One attempt at importing a user's mail: every account, recorded in the user's history."""

from __future__ import annotations

import ssl
import time
import uuid
from dataclasses import dataclass, field

import structlog
from psycopg_pool import ConnectionPool

from sync_function import accounts, metrics, notify, runs
from sync_function.config import Config
from sync_function.imap import ImapError
from sync_function.importer import import_mailbox

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
) -> AttemptResult:
    """Import every account of the run's user; raises ImportFailed when any account failed.

    Accounts are independent: one failing does not stop the others, and whatever was imported
    stays imported (the importer checkpoints each batch).
    """
    started = time.perf_counter()
    with pool.connection() as conn:
        user_id = runs.start_attempt(conn, run_id=run_id, attempt=attempt, worker=worker)
        if user_id is None:
            log.info("run already finished", run_id=str(run_id))
            return AttemptResult(run_id=run_id, status="finished")
        errors: list[str] = []
        retryable = True
        counts = {"fetched": 0, "imported": 0, "skipped": 0, "duplicates": 0, "bytes": 0}
        try:
            user_accounts = accounts.imap_accounts(
                conn, user_id=user_id, encryption_key=config.encryption_key.get_secret_value()
            )
        except Exception as exc:  # decryption or database: the whole attempt fails
            user_accounts = []
            errors.append(str(exc))
        for account in user_accounts:
            try:
                result = import_mailbox(
                    conn,
                    account=account,
                    user_id=user_id,
                    batch_size=config.imap_batch_size,
                    max_message_bytes=config.max_message_bytes,
                    ssl_context=ssl_context,
                    timeout_s=config.imap_timeout_seconds,
                    allowed=config.imap_destinations(),
                )
            except (ImapError, ValueError) as exc:
                errors.append(f"{account.username}@{account.host}/{account.mailbox}: {exc}")
                # One permanent failure is enough: retrying would fail the same way for that account.
                retryable = retryable and isinstance(exc, ImapError) and exc.transient
                continue
            except Exception as exc:
                errors.append(
                    f"{account.username}@{account.host}/{account.mailbox}: internal error ({type(exc).__name__})"
                )
                log.exception("import crashed", run_id=str(run_id), account_id=str(account.account_id))
                continue
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
    if error is not None:
        raise ImportFailed(error, retryable=retryable)
    return AttemptResult(
        run_id=run_id, status=status, accounts=len(user_accounts), seconds=seconds, errors=errors, **counts
    )


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
