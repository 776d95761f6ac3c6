"""The layout rule of DESIGN.md, checked on every run: imports point one way.

- `sync_function/` (the service image) and `alembic/` (the schema) import nothing from `infra/`,
  `harness/` or `bench/`, which sit on top of them (nor from `tests/`);
- `infra/` knows nothing of the service's code: it calls SQL, runs containers and the service's
  command line, and imports nothing from `sync_function/` (nor from the layers above it);
- `bench/` imports no test module, and no module imports a test file (support lives in
  `tests/support/` and `tests/fixtures/`).

Every import statement counts, including those inside functions (the dynamic providers import
lazily), read from the syntax tree rather than by pattern.
"""

from __future__ import annotations

import ast
from pathlib import Path

from infra.containers import REPO_ROOT

# (folder, the top-level packages it must not import)
FORBIDDEN: tuple[tuple[str, frozenset[str]], ...] = (
    ("sync_function", frozenset({"infra", "harness", "bench", "tests"})),
    ("alembic", frozenset({"infra", "harness", "bench", "tests"})),
    ("infra", frozenset({"sync_function", "harness", "bench", "tests"})),
    ("bench", frozenset({"tests"})),
)

# Known crossings, each with what will remove it. Nothing else is excused; none is left today.
ALLOWED: frozenset[tuple[str, str]] = frozenset()


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every absolute import in `path`; `from a import b` gives `a.b` (a module or
    a name in it), so that `from tests import test_x` is seen as the test file it is."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def python_files(folder: str) -> list[Path]:
    return sorted(path for path in (REPO_ROOT / folder).rglob("*.py") if ".venv" not in path.parts)


def is_test_file(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "tests" and any(part.startswith("test_") or part == "conftest" for part in parts[1:])


def crossings(folder: str, forbidden: frozenset[str]) -> list[str]:
    problems: list[str] = []
    for path in python_files(folder):
        relative = path.relative_to(REPO_ROOT).as_posix()
        for line, module in imported_modules(path):
            if module.split(".")[0] in forbidden and (relative, module) not in ALLOWED:
                problems.append(f"{relative}:{line} imports {module}")
    return problems


def test_imports_point_one_way() -> None:
    for folder, _ in FORBIDDEN:
        assert python_files(folder), f"{folder}/ has no Python files: the rule would check nothing"
    problems = [problem for folder, forbidden in FORBIDDEN for problem in crossings(folder, forbidden)]
    assert not problems, "imports that cross a boundary the design keeps closed:\n" + "\n".join(problems)


def test_no_module_imports_a_test_file() -> None:
    problems: list[str] = []
    for folder in ("sync_function", "alembic", "infra", "harness", "bench", "tests"):
        for path in python_files(folder):
            problems.extend(
                f"{path.relative_to(REPO_ROOT).as_posix()}:{line} imports {module}"
                for line, module in imported_modules(path)
                if is_test_file(module)
            )
    assert not problems, "test files are not libraries; move what is shared to tests/support:\n" + "\n".join(
        problems
    )


def test_every_allowance_is_still_needed() -> None:
    # An allowance outliving its import would excuse the next one silently.
    for relative, module in ALLOWED:
        imported = {name for _, name in imported_modules(REPO_ROOT / relative)}
        assert module in imported, f"{relative} no longer imports {module}: remove it from ALLOWED"


def test_the_scan_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "lazy.py"
    source.write_text(
        "def f():\n    from sync_function import crypto\n    import harness.cli\n"
        "from tests import test_x\nfrom . import sibling\n"
    )
    modules = [module for _, module in imported_modules(source)]
    assert {"sync_function.crypto", "harness.cli", "tests.test_x"} <= set(modules)
    assert not any(module.endswith("sibling") for module in modules), "relative imports stay in a package"
    assert is_test_file("tests.test_x") and is_test_file("tests.infra.test_rotation.OLD")
    assert not is_test_file("tests.support.db.new_user")
