"""Mailbox passwords at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key list from the environment.

AUTOSYNC_ENCRYPTION_KEY holds one key, or several separated by commas. The first encrypts; every one
of them decrypts. That is what makes the key rotatable:

1. run every service process with `NEW,OLD` (new passwords are stored under NEW, old ones still read);
2. `autosync reencrypt` (or the Pulumi program, itself) rewrites every stored password under NEW;
3. drop OLD: nothing needs it any more.

The re-encryption functions below work on the stored secrets listed in `STORED_SECRETS` and need a
connection that may read and update them (the database owner, as for `autosync doctor`).
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from psycopg import Connection, sql

KEY_SEPARATOR = ","

# Every column that holds a secret encrypted with AUTOSYNC_ENCRYPTION_KEY: (table, key column, column).
STORED_SECRETS: tuple[tuple[str, str, str], ...] = (("email_accounts", "id", "password_encrypted"),)


class DecryptionError(RuntimeError):
    """A stored password cannot be decrypted (wrong AUTOSYNC_ENCRYPTION_KEY, or corrupted data)."""


class KeyListError(ValueError):
    """AUTOSYNC_ENCRYPTION_KEY is not a list of Fernet keys; the message never contains key material."""


class UnreadableSecretsError(RuntimeError):
    """Stored secrets that no key of the list decrypts: re-encrypting now would leave them behind."""

    def __init__(self, count: int) -> None:
        self.count = count
        super().__init__(
            f"{count} stored secret(s) cannot be decrypted with any key of AUTOSYNC_ENCRYPTION_KEY; nothing "
            "was changed. Put the key they were stored with after the new one (NEW,OLD) and run again."
        )


def parse_keys(value: str) -> list[str]:
    """The keys of a key list, first (the encrypting one) first; raises `KeyListError`."""
    keys = [key.strip() for key in value.split(KEY_SEPARATOR)]
    if not value.strip() or any(not key for key in keys):
        raise KeyListError("must be one Fernet key, or several separated by commas (no empty entries)")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, binascii.Error):
            raise KeyListError(
                f"key {position} of {len(keys)} is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
    if len(set(keys)) != len(keys):
        raise KeyListError("lists the same key twice")
    return keys


def _fernet(keys: str | list[str]) -> MultiFernet:
    key_list = parse_keys(keys) if isinstance(keys, str) else keys
    return MultiFernet([Fernet(key.encode()) for key in key_list])


def encrypt_password(key: str, password: str) -> bytes:
    """Encrypt under the first key of the list `key`."""
    return _fernet(key).encrypt(password.encode())


def decrypt_password(key: str, token: bytes) -> str:
    """Decrypt with whichever key of the list `key` the token was encrypted with."""
    try:
        return _fernet(key).decrypt(bytes(token)).decode()
    except InvalidToken:
        raise DecryptionError(
            "a stored mailbox password cannot be decrypted: AUTOSYNC_ENCRYPTION_KEY differs from the key it "
            "was saved with"
        ) from None


def key_index(keys: list[str], token: bytes) -> int | None:
    """The position in `keys` of the key that decrypts `token`, or None if none does."""
    for index, key in enumerate(keys):
        try:
            Fernet(key.encode()).decrypt(bytes(token))
        except InvalidToken:
            continue
        return index
    return None


@dataclass(frozen=True)
class KeyUsage:
    """How the stored secrets relate to a key list."""

    total: int
    per_key: tuple[int, ...]  # secrets stored under each key of the list, in list order
    unreadable: int  # secrets no key of the list decrypts

    def needed(self, keys: list[str]) -> list[str]:
        """The keys some stored secret still needs."""
        return [key for key, count in zip(keys, self.per_key, strict=True) if count]


def _select(table: str, id_column: str, column: str) -> sql.Composed:
    return sql.SQL("SELECT {id}, {column} FROM {table} ORDER BY {id}").format(
        id=sql.Identifier(id_column), column=sql.Identifier(column), table=sql.Identifier("public", table)
    )


def _update(table: str, id_column: str, column: str) -> sql.Composed:
    # Only if unchanged since it was read: a password saved meanwhile is already under the new key.
    return sql.SQL("UPDATE {table} SET {column} = %(new)s WHERE {id} = %(id)s AND {column} = %(old)s").format(
        id=sql.Identifier(id_column), column=sql.Identifier(column), table=sql.Identifier("public", table)
    )


def key_usage(conn: Connection, keys: list[str]) -> KeyUsage:
    """Which key of `keys` each stored secret is encrypted with."""
    per_key = [0] * len(keys)
    total = unreadable = 0
    for table, id_column, column in STORED_SECRETS:
        for _id, token in conn.execute(_select(table, id_column, column)):
            total += 1
            index = key_index(keys, token)
            if index is None:
                unreadable += 1
            else:
                per_key[index] += 1
    return KeyUsage(total=total, per_key=tuple(per_key), unreadable=unreadable)


@dataclass(frozen=True)
class Reencryption:
    """What `reencrypt_stored` did."""

    total: int
    rewritten: int  # were under another key of the list, now under the first
    already: int  # were under the first key already
    changed_meanwhile: int  # saved by the service while this ran (under the first key: it runs with the list)


def reencrypt_stored(conn: Connection, keys: list[str], *, dry_run: bool = False) -> Reencryption:
    """Rewrite every stored secret under `keys[0]`, in one transaction.

    Refuses (`UnreadableSecretsError`) and changes nothing when any stored secret is unreadable with
    every key of the list. Idempotent: secrets already under the first key are left as they are.
    """
    fernet = _fernet(keys)
    total = rewritten = already = changed = 0
    with conn.transaction():
        stale: list[tuple[tuple[str, str, str], object, bytes]] = []
        unreadable = 0
        for where in STORED_SECRETS:
            for row_id, token in conn.execute(_select(*where)).fetchall():
                total += 1
                index = key_index(keys, token)
                if index is None:
                    unreadable += 1
                elif index == 0:
                    already += 1
                else:
                    stale.append((where, row_id, bytes(token)))
        if unreadable:
            raise UnreadableSecretsError(unreadable)
        for where, row_id, token in stale:
            if dry_run:
                rewritten += 1
                continue
            params = {"id": row_id, "old": token, "new": fernet.rotate(token)}
            if conn.execute(_update(*where), params).rowcount:
                rewritten += 1
            else:
                changed += 1
    return Reencryption(total=total, rewritten=rewritten, already=already, changed_meanwhile=changed)
