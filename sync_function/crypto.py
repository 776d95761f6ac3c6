"""Mailbox passwords at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a key from the environment."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken


class DecryptionError(RuntimeError):
    """A stored password cannot be decrypted (wrong AUTOSYNC_ENCRYPTION_KEY, or corrupted data)."""


def encrypt_password(key: str, password: str) -> bytes:
    return Fernet(key.encode()).encrypt(password.encode())


def decrypt_password(key: str, token: bytes) -> str:
    try:
        return Fernet(key.encode()).decrypt(bytes(token)).decode()
    except InvalidToken:
        raise DecryptionError(
            "a stored mailbox password cannot be decrypted: AUTOSYNC_ENCRYPTION_KEY differs from the key it "
            "was saved with"
        ) from None
