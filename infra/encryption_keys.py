"""The encryption key list of a deployment, and re-encryption of what it stores (Pulumi's providers).

The service reads AUTOSYNC_ENCRYPTION_KEY as a key list: the first key encrypts, every key decrypts.
A rotation in a Pulumi stack is three steps in one `pulumi up`:

1. `key_list` (before the function containers): the configured key first, then the previous first
   key, and any older key some stored secret still needs;
2. the containers are replaced with that list (they read everything, and write under the new key);
3. `reencrypt` (after the containers): every stored secret is rewritten under the new key, so the
   old one is needed by nothing and is left out of the list the next time it is computed.

Both refuse, changing nothing, when a stored secret is readable with no key they have: rotating
then would make it unreadable for good.

What is stored, and how it is encrypted, is the service's business: this module asks its public
command line (`autosync encryption-keys usage --json`, `autosync reencrypt --json`), as the rest of
infra/ asks the database through SQL, and imports nothing of the service. The database URL and the
keys go to the command in its environment only, never on its command line (which any local user can
read in the process list).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# AUTOSYNC_ENCRYPTION_KEY's documented format (README): keys separated by commas, the first encrypts.
# Only split here; the service's command validates the keys and says which position is wrong.
SEPARATOR = ","
COMMAND = "autosync"
# Re-encryption is one transaction over every stored secret; a hung command must not hang `pulumi up`.
COMMAND_TIMEOUT_S = 900
# stderr kept in an error message: the service's messages are a line or two; a traceback ends with its cause.
STDERR_TAIL = 2000


class KeyListError(RuntimeError):
    """The stack's keys cannot read what the database stores, or the command refused them; the
    message says what to do and never contains a key or the database URL."""


def split_keys(keys: str) -> list[str]:
    return [key.strip() for key in keys.split(SEPARATOR)]


def autosync_command(python: str | None = None) -> Path:
    """The `autosync` entry point installed beside the interpreter running this (the virtualenv
    `pulumi install` fills); the provider host runs from that virtualenv's python."""
    interpreter = Path(python or sys.executable)
    # Not resolved: a virtualenv's python is a symlink to the base interpreter, whose bin/ has no autosync.
    command = interpreter.parent / COMMAND
    if not command.is_file():
        raise KeyListError(
            f"the `{COMMAND}` command is not installed beside {interpreter}, so the encryption keys cannot be "
            "checked: install the project into the Pulumi virtualenv (`pulumi install`, or "
            "`pip install -e '.[infra]'` in it)"
        )
    return command


def _unreadable(count: int) -> KeyListError:
    return KeyListError(
        f"{count} stored secret(s) in the database cannot be decrypted with the stack's encryption keys, "
        "so the key cannot change now: that would make them unreadable for good. Set autosync:encryptionKey "
        "to the new key followed by the one they were stored with ('NEW,OLD', as a secret)."
    )


def run_autosync(args: list[str], *, database_url: str, keys: list[str]) -> dict[str, Any]:
    """Run `autosync ARGS --json` with the database and keys in its environment; its JSON answer
    (whatever its exit code: a refusal is an answer too). Raises `KeyListError` when it gives none
    (it could not run or reach the database) or refused the keys themselves."""
    command = [str(autosync_command()), *args, "--json"]
    env = {**os.environ, "DATABASE_URL": database_url, "AUTOSYNC_ENCRYPTION_KEY": SEPARATOR.join(keys)}
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise KeyListError(f"`{COMMAND} {' '.join(args)}` did not finish in {COMMAND_TIMEOUT_S} s") from None
    try:
        answer = json.loads(done.stdout)
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        raise KeyListError(
            f"`{COMMAND} {' '.join(args)}` failed (exit {done.returncode}): {done.stderr.strip()[-STDERR_TAIL:]}"
        )
    if answer.get("error") == "bad_key_list":
        raise KeyListError(
            f"the stack's encryption keys (autosync:encryptionKey) were refused: {answer['detail']}"
        )
    return answer


def key_list(database_url: str, *, configured: list[str], previous: list[str]) -> list[str]:
    """The keys the service should run with: `configured` (its first key encrypts), then the previous
    first key (the running containers still encrypt with it until they are replaced), then any other
    previous key some stored secret needs. Raises `KeyListError` if stored secrets would be unreadable."""
    candidates = configured + [key for key in previous if key not in configured]
    # One count over every candidate: a Fernet token decrypts under one key only, so a previous key
    # with a count is one some stored secret needs, and what none of them reads, the result cannot.
    usage = run_autosync(["encryption-keys", "usage"], database_url=database_url, keys=candidates)
    if usage["unreadable"]:
        raise _unreadable(int(usage["unreadable"]))
    counts = dict(zip(candidates, usage["per_key"], strict=True))
    return configured + [
        key for index, key in enumerate(previous) if key not in configured and (index == 0 or counts[key])
    ]


def reencrypt(database_url: str, keys: list[str]) -> int:
    """Rewrite every stored secret under `keys[0]` (one transaction; refuses when one is unreadable);
    how many were rewritten."""
    result = run_autosync(["reencrypt"], database_url=database_url, keys=keys)
    if result.get("error") == "unreadable_secrets":
        raise _unreadable(int(result["unreadable"]))
    if "error" in result:
        raise KeyListError(f"`{COMMAND} reencrypt` failed: {result.get('detail')}")
    return int(result["rewritten"])
