"""Schemathesis against the published OpenAPI document, as its CLI runs it: every phase (examples,
coverage, fuzzing, stateful), every check (`--checks all`: no 5xx, responses and status codes as
documented, bad data refused, good data accepted, `Allow` on 405, …), 300 examples per operation,
to every operation of the real app under uvicorn, with valid credentials. Zero failures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.service import Service, running_service
from sync_function.config import Config
from tests.support.certs import certificate
from tests.support.reliability import closed_port
from tests.support.users import users

pytestmark = pytest.mark.docker

EXAMPLES_PER_OPERATION = 300
PHASES = "examples,coverage,fuzzing,stateful"

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


@pytest.fixture(scope="module")
def fuzz_service(service_config: Config) -> Iterator[Service]:
    """The API with limits a fuzzer's hundreds of requests per operation do not reach.

    The limits themselves are tested in tests/service/test_rate_limits.py; here a 429 would only
    hide what the generated requests would have found.
    """
    config = service_config.model_copy(
        update={
            "manual_import_limit": 1000,
            "save_auto_sync_limit": 100000,
            "add_email_account_limit": 100000,
            "imap_timeout_seconds": 2.0,
        }
    )
    with running_service(config) as running:
        yield running


def test_all_phases_and_checks_find_nothing(fuzz_service: Service, database_url: str, tmp_path: Path) -> None:
    with users(database_url) as (user,):
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.support.fuzz_hooks",
            "AUTOSYNC_FUZZ_USER_TOKEN": fuzz_service.token(user, expires_in=3600),
            "AUTOSYNC_FUZZ_SERVICE_KEY": fuzz_service.config.service_key.get_secret_value(),
            "AUTOSYNC_FUZZ_DEAD_PORT": str(closed_port()),
            "AUTOSYNC_FUZZ_CA_PEM": certificate(ca=True),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
        started = time.monotonic()
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "--config-file",
                str(Path(__file__).resolve().parents[1] / "support" / "schemathesis.toml"),
                "run",
                f"{fuzz_service.url}/openapi.json",
                "--phases",
                PHASES,
                "--checks",
                "all",
                "--max-examples",
                str(EXAMPLES_PER_OPERATION),
                "--seed",
                "13",
                "--generation-deterministic",
                "--request-timeout",
                "30",
                "--report",
                "junit",
                "--report-dir",
                str(tmp_path),
                "--no-color",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            check=False,
            timeout=900,
        )
        seconds = time.monotonic() - started
    print(f"schemathesis ({PHASES}, --checks all, {EXAMPLES_PER_OPERATION} examples): {seconds:.0f} s")
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert "No issues found" in result.stdout or "passed" in result.stdout.lower()
