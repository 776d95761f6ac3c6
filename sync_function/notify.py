"""Failure notifications: a POST to the operator's webhook when a user's syncs keep failing."""

from __future__ import annotations

import uuid

import httpx
import structlog

log = structlog.get_logger(__name__)


def post_failure_alert(
    webhook_url: str,
    *,
    user_id: uuid.UUID,
    run_id: uuid.UUID,
    consecutive_failures: int,
    last_error: str,
    timeout_s: float = 5.0,
    event: str = "auto_sync.failing",
    account_id: uuid.UUID | None = None,
) -> bool:
    """POST the alert; a failing webhook is logged, never raised (the sync outcome stands).

    `event` "auto_sync.needs_reconnect" names the account whose provider refused its sign-in.
    """
    payload: dict[str, object] = {
        "event": event,
        "user_id": str(user_id),
        "run_id": str(run_id),
        "consecutive_failures": consecutive_failures,
        "last_error": last_error,
    }
    if account_id is not None:
        payload["account_id"] = str(account_id)
    try:
        response = httpx.post(webhook_url, json=payload, timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("failure webhook not delivered", user_id=str(user_id), error=type(exc).__name__)
        return False
    return True
