"""How tests run the `autosync` command."""

from __future__ import annotations

import sys

# `python -m sync_function.cli` is the `autosync` command without relying on the venv's bin/.
AUTOSYNC = (sys.executable, "-m", "sync_function.cli")
