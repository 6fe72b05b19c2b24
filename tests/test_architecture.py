"""The layout's dependency rules (shared/ARCHITECTURE.md), checked on every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "locksmithd"
EDGES = ("etcd", "bus", "host", "sources")
ENTRY_POINTS = ("daemon", "ctl", "fleetlock")
# What the pure core may not touch: I/O, processes, the clock, the network, dependencies.
IMPURE = {"os", "socket", "subprocess", "time", "asyncio", "threading", "fcntl", "shutil", "signal",
          "etcd3", "grpc", "dbus_fast", "click", "tenacity", "systemd", "aiohttp", "prometheus_client"}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic"}


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


def imports_of(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), TYPE_CHECKING ones included."""
    tree = ast.parse(path.read_text(), str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def area(module: str) -> str:
    """The layout area of a locksmithd module: core, etcd, ..., or the top-level module name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


ALL = modules()


def test_the_rules_see_every_module() -> None:
    """The walk finds the package's modules, so the rules below are not vacuous."""
    areas = {area(name) for name, _ in ALL}
    assert {"core", "etcd", "bus", "host", "daemon", "ctl", "strategies", "errors"} <= areas


@pytest.mark.parametrize(("module", "path"), [m for m in ALL if area(m[0]) == "core"], ids=lambda v: str(v))
def test_core_is_pure(module: str, path: Path) -> None:
    """core/ imports only core/ and errors, no I/O, clock or dependency, and never reads the clock."""
    for name in imports_of(path, module):
        top = name.split(".")[0]
        assert top not in IMPURE, f"{module} imports {name}"
        if top == "locksmithd":
            assert area(name) in ("core", "errors"), f"{module} imports {name}"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in CLOCK_CALLS, f"{module} calls .{node.func.attr}() (pass the clock in)"


@pytest.mark.parametrize(("module", "path"), [m for m in ALL if area(m[0]) in EDGES], ids=lambda v: str(v))
def test_edges_use_only_core(module: str, path: Path) -> None:
    """An edge imports core/, errors and itself: never another edge, a strategy or an entry point."""
    own = area(module)
    for name in imports_of(path, module):
        if name.split(".")[0] == "locksmithd" and "." in name:
            assert area(name) in ("core", "errors", own), f"{module} imports {name}"


@pytest.mark.parametrize(("module", "path"), ALL, ids=lambda v: str(v))
def test_nothing_imports_an_entry_point_or_the_harness(module: str, path: Path) -> None:
    """Entry points compose everything and nobody imports them; the package never imports harness/."""
    for name in imports_of(path, module):
        assert name.split(".")[0] not in ("harness", "tests", "bench", "contrib"), f"{module} imports {name}"
        target = area(name) if name.startswith("locksmithd.") else ""
        if target in ENTRY_POINTS:
            assert area(module) == target, f"{module} imports entry point {name}"


def test_errors_import_only_core() -> None:
    """The exception tree sits below everything but the pure helpers it formats with."""
    path = PACKAGE / "errors.py"
    for name in imports_of(path, "locksmithd.errors"):
        if name.startswith("locksmithd"):
            assert area(name) == "core", name
