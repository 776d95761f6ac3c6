"""Schemathesis against the published OpenAPI document: generated requests, positive and negative,
to every operation of the real app under uvicorn, with valid credentials. Zero 5xx, and every
error is the service's JSON error body."""

from __future__ import annotations

import sys

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from harness.service import Service
from tests.support.reliability import closed_port
from tests.support.users import users

EXAMPLES_PER_OPERATION = 100

# Top-level packages of the installed distributions that register a pytest11 plugin (this repo's too).
PLUGIN_DISTRIBUTIONS = (
    "schemathesis",
    "hypothesis",
    "anyio",
    "pytest_timeout",
    "sync_function",
    "infra",
    "harness",
)


def test_no_library_module_is_assertion_rewritten() -> None:
    """Guards the suite's `--disable-plugin-autoload` (see tests/conftest.py).

    Auto-loaded, each of these distributions is marked for assertion rewriting as a whole, and the
    modules schemathesis imports lazily inside the test below (about ninety) are then parsed by the
    rewriter mid-test: the moment when a leaked socket's ResourceWarning crashed CPython 3.11.7.
    """
    import schemathesis.specs.openapi.schemas  # noqa: F401 - imported lazily by `from_url`

    rewritten = sorted(
        name
        for name, module in list(sys.modules.items())
        if name.split(".")[0] in PLUGIN_DISTRIBUTIONS
        and type(getattr(module, "__loader__", None)).__name__ == "AssertionRewritingHook"
    )
    assert rewritten == []


@pytest.mark.docker
def test_no_5xx_on_generated_requests(service: Service, database_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    dead_port = closed_port()
    tried: dict[str, int] = {}
    with users(database_url) as (user,):
        user_headers = service.as_user(user)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 8, [op.label for op in operations]
        for operation in operations:

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(
                case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
                | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
            )
            def call(case) -> None:  # type: ignore[no-untyped-def]
                body = case.body
                # Loopback only: a well-formed account must not send the service to a generated
                # host name. Ill-formed hosts stay as generated (they never get past validation).
                if isinstance(body, dict) and isinstance(body.get("host"), str):
                    host = body["host"].strip()
                    if host and len(host) <= 253 and not any(c.isspace() or c in "/@:" for c in host):
                        body["host"] = "127.0.0.1"
                        if isinstance(body.get("port"), int) and 1 <= body["port"] <= 65535:
                            body["port"] = dead_port
                op = case.operation
                auth = service.as_service if op.path.startswith("/functions/") else user_headers
                case.headers = {**(case.headers or {}), **auth}
                response = case.call(base_url=service.url, timeout=30)
                tried[op.label] = tried.get(op.label, 0) + 1
                assert response.status_code < 500, (
                    op.label,
                    case.as_curl_command(),
                    response.text[:500],
                )
                if response.status_code >= 400 and op.path not in ("/readyz",):
                    payload = response.json()
                    assert payload["success"] is False and isinstance(payload["error"], str), payload

            call()
    print(f"schemathesis: {sum(tried.values())} requests: {tried}")
    assert sum(tried.values()) >= 8 * 10
