"""The service keys a deployment's function accepts while the key rotates (Pulumi's ServiceKeys provider).

pg_cron's trigger sends the key stored in the database; the function accepts AUTOSYNC_SERVICE_KEY and,
during a rotation, AUTOSYNC_SERVICE_KEY_PREVIOUS. A rotation without a refused run is therefore:

1. the function is redeployed accepting the new key and the one the database holds now;
2. the database stores the new key;
3. the function is redeployed accepting the new key only.

`previous_key` decides step 1 and 3 from what the database holds, not from what the stack remembers:
whatever key pg_cron sends right now stays accepted until the database holds the new one, whether the
last `up` finished, failed half-way, or the key was set by hand.
"""

from __future__ import annotations

import psycopg

# autosync_private.set_service_key's own lower bound, and the function's: a shorter stored key could
# not be accepted anyway (the function would refuse to start with it).
MIN_KEY_LENGTH = 32


def stored_key(database_url: str) -> str | None:
    """The key pg_cron's trigger sends now (the private store is readable by the owner only)."""
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SELECT key FROM autosync_private.service_key").fetchone()
    return None if row is None else str(row[0])


def previous_key(database_url: str, current: str) -> str:
    """The key the function must accept besides `current`: the stored one while it differs, else ''."""
    stored = stored_key(database_url)
    if stored is None or stored == current or len(stored) < MIN_KEY_LENGTH:
        return ""
    return stored
