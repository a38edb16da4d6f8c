"""The package's layout: entry points only at the root, argparse only in the CLI, no library module
importing an entry point (the runner or the CLI) and none importing a higher layer, directly or lazily
inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bookseg"
ENTRY_POINTS = {"bookseg.cli", "bookseg.run", "bookseg.__main__"}

# bookseg's packages by layer, bottom to top: a module may import its own package and the packages of its
# layer or lower ones, never a higher one. `compat` (matterport's API) sits beside inference and analysis and
# reaches down to tracking only; `sweep` sits beside experiment.
LAYER = {
    "data": 0,
    "mrcnn": 1,
    "evaluation": 2,
    "config": 3,
    "tracking": 4,
    "inference": 5,
    "compat": 5,
    "analysis": 6,
    "experiment": 6,
    "sweep": 6,
}
REACH = {**LAYER, "compat": LAYER["tracking"]}  # the highest layer each package may import


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (top level or inside functions), absolute names (relative imports
    resolved against `path`'s package)."""
    package = _module_name(path).split(".")[: None if path.stem == "__init__" else -1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) + 1 - node.level] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
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


def test_every_package_has_a_layer():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages <= LAYER.keys(), f"give {sorted(packages - LAYER.keys())} a layer in LAYER"


def test_no_module_imports_a_higher_layer():
    upward = {}
    for path in PACKAGE.rglob("*.py"):
        source = _module_name(path)
        if source in ENTRY_POINTS or source == "bookseg":
            continue
        package = source.split(".")[1]
        imported = {name.split(".")[1] for name in _imports(path) if name.startswith("bookseg.")}
        higher = sorted(p for p in imported - {package} if p in LAYER and LAYER[p] > REACH[package])
        if higher:
            upward[source] = higher
    assert upward == {}
