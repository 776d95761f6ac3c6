"""Each import default has one home: Config and every signature use the library's constants."""

from __future__ import annotations

import inspect

from cryptography.fernet import Fernet

from sync_function import imap, importer
from sync_function.config import Config


def test_config_defaults_are_the_library_defaults() -> None:
    defaults = {name: Config.model_fields[name].default for name in Config.model_fields}
    assert defaults["imap_timeout_seconds"] == imap.DEFAULT_TIMEOUT_S
    assert defaults["imap_batch_size"] == importer.DEFAULT_BATCH_SIZE
    assert defaults["max_message_bytes"] == importer.DEFAULT_MAX_MESSAGE_BYTES


def test_signatures_default_to_the_same_constants() -> None:
    imported = inspect.signature(importer.import_mailbox).parameters
    assert imported["timeout_s"].default == imap.DEFAULT_TIMEOUT_S
    assert imported["batch_size"].default == importer.DEFAULT_BATCH_SIZE
    assert imported["max_message_bytes"].default == importer.DEFAULT_MAX_MESSAGE_BYTES
    assert inspect.signature(imap.connect).parameters["timeout_s"].default == imap.DEFAULT_TIMEOUT_S


def test_the_library_defaults_are_valid_config_values() -> None:
    # Pydantic does not validate defaults: a constant outside Config's bounds would slip through.
    values: dict[str, object] = {
        "DATABASE_URL": "postgresql://user@127.0.0.1/autosync",
        "service_key": "k" * 32,
        "jwt_secret": "s" * 32,
        "encryption_key": Fernet.generate_key().decode(),
        "imap_timeout_seconds": imap.DEFAULT_TIMEOUT_S,
        "imap_batch_size": importer.DEFAULT_BATCH_SIZE,
        "max_message_bytes": importer.DEFAULT_MAX_MESSAGE_BYTES,
    }
    config = Config(**values)  # type: ignore[arg-type]
    assert (config.imap_timeout_seconds, config.imap_batch_size, config.max_message_bytes) == (
        imap.DEFAULT_TIMEOUT_S,
        importer.DEFAULT_BATCH_SIZE,
        importer.DEFAULT_MAX_MESSAGE_BYTES,
    )
