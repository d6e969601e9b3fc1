"""The layers of asyncmail, read from its own source: imports only go down, and none go round.

The import graph is built with ``ast`` from every module under asyncmail/, counting every import
wherever it stands: at the top, under ``if TYPE_CHECKING:``, inside a function. The same layer
order is an import-linter contract in pyproject.toml (``lint-imports`` in scripts/check).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "asyncmail"

#: Top to bottom; a module may import only from layers below its own. A set is one layer of
#: independent parts: neither imports the other.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"asyncmail.cli", "asyncmail.django"}),
    frozenset({"asyncmail.preview", "asyncmail.relay"}),
    frozenset(
        {
            "asyncmail.batch",
            "asyncmail.bounces",
            "asyncmail.outbox",
            "asyncmail.sync",
            "asyncmail.testing",
        }
    ),
    frozenset({"asyncmail.suppression"}),
    frozenset({"asyncmail.engine"}),
    frozenset({"asyncmail._pool"}),
    frozenset({"asyncmail.smtp", "asyncmail.dkim"}),
    frozenset({"asyncmail.message"}),
    frozenset({"asyncmail._config"}),
    frozenset({"asyncmail._exceptions"}),
)
#: The public facade, asyncmail/__init__.py: it may import anything, and nothing imports it.
FACADE = "asyncmail"
#: Data, not code: outside the layers.
DATA = frozenset({"asyncmail._demo_data"})

#: Imports that break the layer order today, each to be removed by its owner.
KNOWN_UPWARD_IMPORTS: frozenset[tuple[str, str]] = frozenset()

#: Import cycles that exist today, each written from its smallest module name.
KNOWN_CYCLES: frozenset[tuple[str, ...]] = frozenset(
    {
        # TODO(testing): type-only and lazy imports between the server and its protocol and
        # thread runner (testing/ takes lint fixes only while the engine is rewritten).
        ("asyncmail.testing._protocol", "asyncmail.testing._server"),
        ("asyncmail.testing._server", "asyncmail.testing._thread"),
    }
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> Mapping[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Every absolute name an import statement in the module names, wherever it stands."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                submodule = f"{source}.{alias.name}"
                yield submodule if submodule in modules() else source


@cache
def import_graph() -> Mapping[str, frozenset[str]]:
    """Module -> the asyncmail modules it imports (a name resolves to its nearest module)."""
    graph: dict[str, frozenset[str]] = {}
    for module, path in modules().items():
        targets = set()
        for name in imported_names(module, path):
            if name.partition(".")[0] != FACADE:
                continue
            while name not in modules():
                name = name.rpartition(".")[0]
            if name != module:
                targets.add(name)
        graph[module] = frozenset(targets)
    return graph


def part_of(module: str) -> str:
    """The facade, or the layer part a module belongs to: ``asyncmail.X``."""
    return ".".join(module.split(".")[:2])


def layer_of(part: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if part in layer), None)


def upward_imports() -> set[tuple[str, str]]:
    """(importer, imported) pairs that do not go strictly down the layers."""
    bad = set()
    for module, targets in import_graph().items():
        part = part_of(module)
        if part == FACADE:
            continue
        for target in targets:
            if part_of(target) == part or part_of(target) in DATA:
                continue
            below, above = layer_of(part_of(target)), layer_of(part)
            if below is None or above is None or below <= above:
                bad.add((module, target))
    return bad


def import_cycles() -> set[tuple[str, ...]]:
    """Every elementary cycle, written from its smallest module name (no rotations twice)."""
    graph = import_graph()
    found: set[tuple[str, ...]] = set()

    def walk(start: str, path: tuple[str, ...]) -> None:
        for target in graph[path[-1]]:
            if target == start:
                found.add(path)
            elif target > start and target not in path:
                walk(start, (*path, target))

    for start in graph:
        walk(start, (start,))
    return found


def show(cycles: set[tuple[str, ...]] | frozenset[tuple[str, ...]]) -> str:
    return "\n".join(" -> ".join((*cycle, cycle[0])) for cycle in sorted(cycles))


def test_the_graph_sees_imports_at_the_top_under_type_checking_and_in_functions() -> None:
    graph = import_graph()
    assert "asyncmail.smtp._connection" in graph["asyncmail._pool"]  # at the top
    assert "asyncmail.engine._driver" in graph["asyncmail.engine._send_many"]  # TYPE_CHECKING
    assert "asyncmail.message._message" in graph["asyncmail.batch._template"]  # in a function
    assert "asyncmail.testing" in graph["asyncmail.cli._serve"]  # a package


def test_every_module_has_its_place_in_the_layers() -> None:
    placed = set().union(*LAYERS) | DATA | {FACADE}
    unplaced = sorted(m for m in modules() if part_of(m) not in placed)
    assert not unplaced, f"add these to LAYERS here and in pyproject.toml: {unplaced}"


def test_only_the_facade_imports_anything_above_it() -> None:
    importers = sorted(m for m, targets in import_graph().items() if FACADE in targets)
    assert not importers, f"import from the module itself, not from `asyncmail`: {importers}"


def test_imports_only_go_down_the_layers() -> None:
    new = sorted(upward_imports() - KNOWN_UPWARD_IMPORTS)
    assert not new, "imports against the layer order:\n" + "\n".join(
        f"{importer} -> {imported}" for importer, imported in new
    )


def test_no_new_import_cycles() -> None:
    new = import_cycles() - KNOWN_CYCLES
    assert not new, f"{len(new)} new import cycle(s):\n{show(new)}"


def test_the_known_exceptions_are_still_there() -> None:
    """A fixed upward import or cycle leaves its KNOWN_* entry: delete the entry."""
    gone_imports = sorted(KNOWN_UPWARD_IMPORTS - upward_imports())
    assert not gone_imports, f"fixed, delete from KNOWN_UPWARD_IMPORTS: {gone_imports}"
    gone_cycles = KNOWN_CYCLES - import_cycles()
    assert not gone_cycles, f"fixed, delete from KNOWN_CYCLES:\n{show(gone_cycles)}"
