"""The project layout works for the engine: program and provider host find the same virtualenv.

The facts these tests encode are Pulumi's (see tests/infra/provider_host.py for where each is read
from); the CLI-driven test at the end runs the real thing where the `pulumi` CLI is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from infra.containers import REPO_ROOT
from tests.infra.provider_host import (
    LAUNCH_SCRIPT,
    engine_environment,
    program_directory,
    program_virtualenv,
    provider_host,
    provider_virtualenv,
)


def test_program_and_provider_host_resolve_the_same_virtualenv() -> None:
    cwd = program_directory()
    program_venv = program_virtualenv()
    provider_venv = provider_virtualenv(cwd, engine_environment())
    assert program_venv is not None, "Pulumi.yaml must name the virtualenv (runtime.options.virtualenv)"
    assert provider_venv == program_venv, (
        f"the program runs from {program_venv} but the dynamic-provider host would look in {provider_venv}"
    )


def write_project(root: Path, main: str | None) -> None:
    (root / "infra").mkdir()
    lines = ["name: p", "runtime:", "  name: python", "  options:", "    virtualenv: .venv"]
    if main is not None:
        lines.append(f"main: {main}")
    (root / "Pulumi.yaml").write_text("\n".join(lines) + "\n")


def test_a_program_folder_would_send_the_host_elsewhere(tmp_path: Path) -> None:
    # Why Pulumi.yaml has no `main`: with the program in a folder the two resolutions part (issue 7061).
    write_project(tmp_path, "infra/")
    cwd = program_directory(tmp_path)
    assert cwd == tmp_path / "infra"
    assert provider_virtualenv(cwd, engine_environment(tmp_path)) == tmp_path / "infra" / ".venv"
    assert program_virtualenv(tmp_path) == tmp_path / ".venv"


def test_the_engine_runs_the_root_entry_point() -> None:
    # With no `main` the language host runs the program directory, i.e. its __main__.py.
    assert program_directory() == REPO_ROOT
    entry = REPO_ROOT / "__main__.py"
    assert "from infra.program import main" in entry.read_text()


def test_pulumi_install_installs_the_project_with_its_infra_extra() -> None:
    # `pulumi install` creates the virtualenv and runs `pip install -r requirements.txt` in the
    # program directory (sdk/python/toolchain/pip.go, InstallDependencies).
    requirements = program_directory() / "requirements.txt"
    lines = [
        line.strip()
        for line in requirements.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == ["-e .[infra]"], "the pins live in pyproject.toml; requirements.txt only points at it"
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    infra = {requirement.split("==")[0] for requirement in project["optional-dependencies"]["infra"]}
    assert {"pulumi", "pulumi-docker"} <= infra
    assert any(dependency.startswith("psycopg") for dependency in project["dependencies"])


def test_the_launch_script_finds_a_working_virtualenv_from_the_engines_directory() -> None:
    cwd = program_directory()
    venv = provider_virtualenv(cwd, engine_environment())
    assert venv is not None
    python = venv / "bin" / "python"
    if not python.exists():
        pytest.skip(
            f"the project's virtualenv is not at {venv} here (`make venv` or `pulumi install` creates it)"
        )
    # What the launch script then runs needs the SDK and this project's providers.
    result = subprocess.run(
        [str(python), "-c", "import sys, pulumi.dynamic, infra.components.migrations; print(sys.prefix)"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve() == venv.resolve()
    # The encryption providers run the service's command from there (infra/encryption_keys.py).
    assert (venv / "bin" / "autosync").is_file(), "the project is not installed in the virtualenv"


def test_the_real_launch_script_starts_the_host() -> None:
    if shutil.which(LAUNCH_SCRIPT) is None:
        pytest.skip(
            f"{LAUNCH_SCRIPT} is not on PATH: it ships with the Pulumi CLI, which no registry reachable "
            "here carries; the host tests run the command it would run instead"
        )
    with provider_host() as host:
        assert Path(host.command[0]).name == LAUNCH_SCRIPT
        assert host.configure().acceptSecrets is False


@pytest.mark.docker
def test_pulumi_preview_from_a_fresh_clone(tmp_path: Path) -> None:
    cli = shutil.which("pulumi")
    if cli is None:
        pytest.skip(
            "the pulumi CLI is not installed (shutil.which('pulumi') is None; no registry reachable here "
            "carries it): `pulumi install` and `pulumi preview` from a fresh clone run only where it is"
        )
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True, timeout=120)
    env = {
        **os.environ,
        "PULUMI_BACKEND_URL": f"file://{tmp_path}",
        "PULUMI_CONFIG_PASSPHRASE": "test-only-passphrase",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }
    for command in (["install"], ["stack", "init", "ci"], ["preview", "--non-interactive"]):
        result = subprocess.run(
            [cli, *command], cwd=clone, env=env, capture_output=True, text=True, timeout=1200, check=False
        )
        assert result.returncode == 0, f"pulumi {' '.join(command)}:\n{result.stdout}\n{result.stderr}"
