"""Stopping child processes: SIGTERM first, SIGKILL for whatever is still running after a grace."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from typing import Any


def stop(processes: Iterable[subprocess.Popen[Any]], *, grace_s: float = 20.0) -> None:
    """SIGTERM every process, then wait for each; one still running after `grace_s` is killed.

    All are signalled before any is waited for, so that they shut down side by side. A process
    that has already exited is left as it is.
    """
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
