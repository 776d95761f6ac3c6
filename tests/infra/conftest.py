"""Fixtures for the offline tests of the Pulumi program (no Pulumi CLI, no Docker)."""

from __future__ import annotations

import runpy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pulumi
import pytest

from infra.containers import REPO_ROOT
from tests.infra.mocks import ProgramMocks, ProgramRun, RecordingMonitor

# The entry point the engine runs (Pulumi.yaml has no `main`).
PROGRAM = REPO_ROOT / "__main__.py"
STACK = "dev"


@pytest.fixture
def monitor() -> Iterator[RecordingMonitor]:
    """Fresh mocks for one test; components can then be declared directly under @pulumi.runtime.test."""
    program_mocks = ProgramMocks()
    recording = RecordingMonitor(program_mocks)
    pulumi.runtime.set_mocks(program_mocks, project="autosync", stack=STACK, preview=False, monitor=recording)
    pulumi.runtime.set_all_config({}, [])
    yield recording
    pulumi.runtime.set_all_config({}, [])


@pytest.fixture
def run_program(monitor: RecordingMonitor, monkeypatch: pytest.MonkeyPatch) -> Callable[..., ProgramRun]:
    """Run the real program with `config` (keys without namespace); `secret` names secret keys."""

    def run(config: Mapping[str, str] | None = None, *, secret: frozenset[str] = frozenset()) -> ProgramRun:
        config = dict(config or {})
        pulumi.runtime.set_all_config(
            {f"autosync:{key}": value for key, value in config.items()},
            [f"autosync:{key}" for key in secret],
        )
        exports: dict[str, Any] = {}
        monkeypatch.setattr(pulumi, "export", lambda name, value: exports.__setitem__(name, value))

        @pulumi.runtime.test
        def program() -> None:
            runpy.run_path(str(PROGRAM), run_name="__main__")

        program()
        return ProgramRun(monitor=monitor, exports=exports)

    return run
