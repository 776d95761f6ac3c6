"""Schemathesis hooks for the suite's fuzz run (loaded by `st run` through SCHEMATHESIS_HOOKS).

Each request gets the credentials its path needs (the service key for /functions/v1/*, a user JWT
elsewhere), and a well-formed email account never sends the service to a generated host: it goes to
a closed port on loopback instead; so does a well-formed OAuth2 token endpoint (the schema's pattern
cannot state every host-name rule the service checks, such as a numeric top-level label). A `ca_pem` the schema allows (a string within its length) becomes a
real CA certificate: whether a text is one cannot be said in JSON Schema, and the fuzzer cannot make
one any more than it can make a mailbox (refusing a bad one is tested in tests/service/test_private_ca.py).
The values come from the environment the test sets.
"""

from __future__ import annotations

import os
import re
from typing import Any

import schemathesis

from sync_function.certs import MAX_CA_PEM_CHARS
from sync_function.schemas import ENDPOINT_URL_PATTERN


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    service = case.operation.path.startswith("/functions/")
    token = os.environ["AUTOSYNC_FUZZ_SERVICE_KEY" if service else "AUTOSYNC_FUZZ_USER_TOKEN"]
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("host"), str):
        host = body["host"].strip()
        if host and len(host) <= 253 and not any(c.isspace() or c in "/@" for c in host):
            body["host"] = "127.0.0.1"
            if isinstance(body.get("port"), int) and 1 <= body["port"] <= 65535:
                body["port"] = int(os.environ["AUTOSYNC_FUZZ_DEAD_PORT"])
    if (
        isinstance(body, dict)
        and isinstance(body.get("ca_pem"), str)
        and len(body["ca_pem"]) <= MAX_CA_PEM_CHARS
    ):
        body["ca_pem"] = os.environ["AUTOSYNC_FUZZ_CA_PEM"]
    oauth2 = body.get("oauth2") if isinstance(body, dict) else None
    if (
        isinstance(oauth2, dict)
        and isinstance(oauth2.get("token_endpoint"), str)
        and re.fullmatch(ENDPOINT_URL_PATTERN, oauth2["token_endpoint"])
    ):
        oauth2["token_endpoint"] = f"https://127.0.0.1:{os.environ['AUTOSYNC_FUZZ_DEAD_PORT']}/token"
