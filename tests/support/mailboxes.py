"""A Dovecot user paired with the email_accounts row that imports from it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from sync_function.importer import ImapAccount


@dataclass(frozen=True)
class Mailbox:
    """A Dovecot user and the account row that imports from its mailbox."""

    user: str
    password: str
    user_id: uuid.UUID
    account: ImapAccount


def with_password(box: Mailbox, password: str) -> ImapAccount:
    return replace(box.account, password=password)
