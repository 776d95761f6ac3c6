"""Many Dovecot users at once (`DovecotServer.add_users_with_mail`, what the no-op benchmark uses)."""

from __future__ import annotations

import secrets

from harness.dovecot import DovecotServer


def test_bulk_users_log_in_and_see_their_mail(dovecot: DovecotServer) -> None:
    tag = secrets.token_hex(3)
    users = {f"bulk-{tag}-{n}": secrets.token_urlsafe(9) for n in range(5)}
    messages = [b"Subject: one\r\n\r\nfirst\r\n", b"Subject: two\r\n\r\nsecond\r\n"]
    dovecot.add_users_with_mail(users, messages, chunk=2)  # three tars: the chunking is exercised
    for user in users:
        assert dovecot.status(user)[b"MESSAGES"] == 2
        assert sorted(dovecot.messages(user).values()) == sorted(messages)
