"""Suite-wide fixtures, and two rules that keep a leaked socket from crashing pytest itself.

The crash: `SystemError: AST constructor recursion depth mismatch` on CPython 3.11.7
(python/cpython#106905, fixed in later releases). `ast.parse` keeps its recursion count in one
per-interpreter counter. When a garbage collection runs in the middle of a parse and finalizes an
object that was never closed, a Python finalizer's ResourceWarning (asyncio's "unclosed event loop",
psycopg's "connection … deleted while still open") is an error here (`filterwarnings = error`), so it
becomes an "unraisable" exception; pytest's hook formats its traceback, and in 3.11 formatting a
traceback parses the finalizer's source line with `ast.parse`. The nested parse resets the counter
and the outer one fails. A leaked event loop is such an object, and its self-pipe (an AF_UNIX
socketpair) gives the `unclosed <socket.socket … family=1>` warnings that came with the crash.

pytest parses whenever it rewrites a module's asserts, and it does that lazily, at the module's first
import. Besides test files and conftests, it rewrites every module of every distribution that
registers an auto-loaded `pytest11` plugin: schemathesis, hypothesis, anyio, and this repository
itself (`autosync = "harness.pytest_plugin"`; when the checkout is on sys.path at start-up, as under
`python -m pytest` and `autosync env test`, the editable install's `autosync.egg-info` lists
`harness`, `infra` and `sync_function`). schemathesis alone imports some ninety modules lazily
inside `test_openapi_fuzz`, after most of the suite has run and left whatever it left. So:

1. pyproject.toml names its plugins (`--disable-plugin-autoload -p …`): pytest then marks no
   distribution for rewriting, and the only modules it parses are test files, conftests and the
   `pytest_plugins` below, all at collection, before any test has run. No leak anywhere can meet a
   rewrite. (`tests/reliability/test_openapi_fuzz.py` checks that no library module was rewritten.)
2. Garbage is collected at the end of every test, so an unclosed socket, connection or event loop
   fails the test that leaked it, instead of surfacing later in someone else's test (or in pytest's
   own parsing of a failing test's source, which the first rule does not cover).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.http_recorder",
    "tests.fixtures.dovecot",
    "tests.fixtures.service",
    "tests.fixtures.oauth",
    "tests.fixtures.seed",
]


def pytest_collection_finish(session: pytest.Session) -> None:
    # Everything imported so far lives for the whole session: moved out of the collector's reach, so
    # that the collection after each test only walks what tests created (milliseconds, not 0.1 s).
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    # Autouse, so set up before the test's other function-scoped fixtures and torn down after them;
    # pytest checks for unraisable exceptions after that: a finalizer's ResourceWarning fails this test.
    yield
    gc.collect()
