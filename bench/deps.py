"""Install the `bench` optional dependencies from pyproject.toml when missing (fast when present)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def missing() -> list[str]:
    """Pinned requirements of the `bench` group whose installed version differs (or is absent)."""
    wanted = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["bench"]
    out: list[str] = []
    for requirement in wanted:
        name, _, version = requirement.partition("==")
        try:
            if metadata.version(name) != version:
                out.append(requirement)
        except metadata.PackageNotFoundError:
            out.append(requirement)
    return out


def main() -> None:
    needed = missing()
    if needed:
        print(f"installing {' '.join(needed)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *needed], check=True)


if __name__ == "__main__":
    main()
