"""The encryption key list of a deployment, and re-encryption of what it stores (Pulumi's providers).

The service reads AUTOSYNC_ENCRYPTION_KEY as a key list: the first key encrypts, every key decrypts
(`sync_function.crypto`). A rotation in a Pulumi stack is three steps in one `pulumi up`:

1. `key_list` (before the function containers): the configured key first, then the previous first
   key, and any older key some stored secret still needs;
2. the containers are replaced with that list (they read everything, and write under the new key);
3. `reencrypt` (after the containers): every stored secret is rewritten under the new key, so the
   old one is needed by nothing and is left out of the list the next time it is computed.

Both refuse, changing nothing, when a stored secret is readable with no key they have: rotating
then would make it unreadable for good.
"""

from __future__ import annotations

import psycopg

from sync_function import crypto


class KeyListError(RuntimeError):
    """The stack's keys cannot read what the database stores; the message says what to do."""


def _unreadable(count: int) -> KeyListError:
    return KeyListError(
        f"{count} stored secret(s) in the database cannot be decrypted with the stack's encryption keys, "
        "so the key cannot change now: that would make them unreadable for good. Set autosync:encryptionKey "
        "to the new key followed by the one they were stored with ('NEW,OLD', as a secret)."
    )


def key_list(database_url: str, *, configured: list[str], previous: list[str]) -> list[str]:
    """The keys the service should run with: `configured` (its first key encrypts), then the previous
    first key (the running containers still encrypt with it until they are replaced), then any other
    previous key some stored secret needs. Raises `KeyListError` if stored secrets would be unreadable."""
    keys = list(configured)
    with psycopg.connect(database_url) as connection:
        needed = set(crypto.key_usage(connection, previous).needed(previous)) if previous else set()
        for index, key in enumerate(previous):
            if key not in keys and (index == 0 or key in needed):
                keys.append(key)
        usage = crypto.key_usage(connection, keys)
    if usage.unreadable:
        raise _unreadable(usage.unreadable)
    return keys


def reencrypt(database_url: str, keys: list[str]) -> crypto.Reencryption:
    """Rewrite every stored secret under `keys[0]` (one transaction; refuses when one is unreadable)."""
    with psycopg.connect(database_url) as connection:
        try:
            return crypto.reencrypt_stored(connection, keys)
        except crypto.UnreadableSecretsError as exc:
            raise _unreadable(exc.count) from None
