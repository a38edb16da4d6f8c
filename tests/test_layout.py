"""The package's layout: entry points only at the root, argparse only in the CLI, and no library module
importing an entry point (the runner or the CLI), directly or lazily inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bookseg"
ENTRY_POINTS = {"bookseg.cli", "bookseg.run", "bookseg.__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (top level or inside functions), absolute names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_package_root_holds_only_entry_points():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == {"__init__", "__main__", "cli", "run"}


def test_library_modules_never_import_the_runner_or_the_cli():
    upward = {
        _module_name(path): sorted(_imports(path) & ENTRY_POINTS)
        for path in PACKAGE.rglob("*.py")
        if _module_name(path) not in ENTRY_POINTS
    }
    assert {module: names for module, names in upward.items() if names} == {}


def test_argparse_wiring_lives_in_the_cli_only():
    users = sorted(_module_name(p) for p in PACKAGE.rglob("*.py") if "argparse" in _imports(p))
    assert users == ["bookseg.cli"]
