"""The layout's dependency rules (shared/ARCHITECTURE.md), checked on every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "locksmithd"
EDGES = ("etcd", "bus", "host")
# sources/ sit above the edges: a source may listen on the bus (update_engine) or run a command (host/).
SOURCES = "sources"
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


def imports_of(path: Path, module: str, with_bases: bool = True) -> set[str]:
    """Every module ``path`` imports (relative imports resolved), TYPE_CHECKING ones included.

    ``from a.b import c`` gives ``a.b.c`` and, ``with_bases``, ``a.b`` too.
    """
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
            if with_bases:
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


# --- No import circles (shared/ARCHITECTURE.md "Dependency rules") -------------------------------

ROOT = PACKAGE.parent


def graph_modules() -> dict[str, Path]:
    """Every module of locksmithd/, harness/ and contrib/ by its import name.

    contrib/'s scripts run with contrib/ on ``sys.path``, so they import each other by bare name."""
    found = {name: path for name, path in ALL}
    for path in sorted((ROOT / "harness").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    for path in sorted((ROOT / "contrib").glob("*.py")):
        found[path.stem] = path
    return found


GRAPH_MODULES = graph_modules()


def import_graph() -> dict[str, set[str]]:
    """Module -> the known modules it imports, anywhere in the file (functions and TYPE_CHECKING too).

    ``from a.b import c`` counts as an import of ``a.b.c`` when that is a module, else of ``a.b``. The
    parent packages Python runs on the way (``a/__init__.py``) are not counted: a package whose ``__init__``
    re-exports its modules would otherwise be a circle with each of them."""
    graph: dict[str, set[str]] = {}
    for module, path in GRAPH_MODULES.items():
        targets: set[str] = set()
        for name in imports_of(path, module, with_bases=False):
            while name and name not in GRAPH_MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


# Circles not yet broken, each with its reason. Empty is the goal; an entry here is a known debt.
ALLOWED_CYCLES: list[list[str]] = []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check is not vacuous: a planted circle a -> b -> c -> a is found, a tail d -> a is not in it."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    assert {"harness.etcd", "demo", "locksmithd.daemon.main"} <= set(graph)
    assert "locksmithd.settings.table" in graph["locksmithd.settings.loader"]  # from locksmithd.settings import table
    assert "locksmithd.strategies" in graph["locksmithd.daemon.main"]  # a name from a package: the package
    assert "harness.etcd_docker" in graph["harness.etcd"]  # imported inside a function


def test_no_import_circles() -> None:
    """No module of locksmithd/, harness/ or contrib/ imports itself back, type-only imports included."""
    found = [cycle for cycle in cycles(import_graph()) if cycle not in ALLOWED_CYCLES]
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(cycle) for cycle in found)


def module_imports(module: str) -> set[str]:
    """The known modules ``module`` imports (as in the import graph)."""
    return IMPORT_GRAPH[module]


IMPORT_GRAPH = import_graph()

def test_settings_import_no_strategy_edge_or_entry_point() -> None:
    """settings/ describes and parses: it reads the strategies' declarations from core/, never imports
    strategies, sources, entry points or edges. What it needs of the host (configuration files, the machine
    id, the local zone) is handed in by the entry points (``core.host_reads.HostReads``); the etcd
    connection config and its parsers are core/etcd_config.py, the stale policy core/stale_policy.py, the
    default paths core/host_defaults.py (issue 22: the settings-edge debts are all paid)."""
    checked = 0
    for module in IMPORT_GRAPH:
        if not module.startswith("locksmithd.settings"):
            continue
        checked += 1
        for name in module_imports(module):
            assert area(name) not in EDGES + ENTRY_POINTS + ("strategies", SOURCES), f"{module} imports {name}"
    assert checked >= 10


def test_observe_imports_no_strategy_source_setting_or_entry_point() -> None:
    """observe/ turns what it is handed into figures: it imports core/, errors, edges and itself, never a
    strategy (no probing them), a source, settings/ or an entry point."""
    checked = 0
    for module in IMPORT_GRAPH:
        if module.startswith("locksmithd.observe"):
            checked += 1
            for name in module_imports(module):
                forbidden = ENTRY_POINTS + ("strategies", "sources", "settings")
                assert area(name) not in forbidden, f"{module} imports {name}"
    assert checked >= 3


def test_strategies_compose_edges_but_no_entry_point() -> None:
    """strategies/ compose core/ and edges; they import no entry point, no observe/, no sources/ and no
    settings/: each factory is handed its own config slice (``core/strategy_config.py``), built by the loader."""
    checked = 0
    for module in IMPORT_GRAPH:
        if not module.startswith("locksmithd.strategies"):
            continue
        checked += 1
        for name in module_imports(module):
            assert area(name) not in ENTRY_POINTS + ("observe", "sources", "settings"), f"{module} imports {name}"
    assert checked >= 5


def test_strategy_labels_match_the_registry() -> None:
    """The labels settings/ parses are exactly the strategies that have a factory."""
    from locksmithd import strategies
    from locksmithd.core import strategy_labels

    assert tuple(strategies.REGISTRY) == strategy_labels.LABELS
    assert set(strategy_labels.ALIASES.values()) <= set(strategy_labels.LABELS)


@pytest.mark.parametrize(("module", "path"), [m for m in ALL if area(m[0]) == SOURCES], ids=lambda v: str(v))
def test_sources_use_core_and_edges_only(module: str, path: Path) -> None:
    """A source imports core/, errors, edges and sources/: never settings/ (it is handed its settings),
    a strategy, observe/ or an entry point."""
    for name in imports_of(path, module):
        if name.startswith("locksmithd."):
            assert area(name) in ("core", "errors", SOURCES) + EDGES, f"{module} imports {name}"


def test_source_names_match_the_registry() -> None:
    """The source names settings/ parses and describes are exactly the sources that have a factory, and each
    source module names itself."""
    from locksmithd.settings import table
    from locksmithd.sources.registry import registry

    kinds = registry()
    assert set(kinds) == set(table.SOURCE_KINDS) >= {"update-engine", "reboot-required", "command"}
    assert all(kind.name == name for name, kind in kinds.items())
