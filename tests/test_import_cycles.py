"""No import cycles among OpenDSO's modules, type-checking imports and function-level imports included.

A cycle makes the import order matter (a half-initialised module), hides which module is the
lower one, and defeats the layer contract in ``pyproject.toml`` (``lint-imports``), which only
checks imports between layers. grimp (the graph behind import-linter) builds the import graph;
a cycle is a strongly connected component of more than one module.
"""

from __future__ import annotations

from pathlib import Path

import grimp
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("opendso", cache_dir=None)


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Return each set of modules that import one another in a circle, sorted, largest first."""
    modules = sorted(graph.modules)
    index = {name: i for i, name in enumerate(modules)}
    edges = [(index[a], index[b]) for a in modules for b in graph.find_modules_directly_imported_by(a)]
    rows, cols = np.array(edges, dtype=np.int64).reshape(-1, 2).T
    adjacency = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(modules), len(modules)))
    _, labels = connected_components(adjacency, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for name, label in zip(modules, labels, strict=True):
        groups.setdefault(int(label), []).append(name)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g))


def _describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    members = set(cycle)
    lines = [" <-> ".join(cycle)]
    for importer in cycle:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
            for detail in graph.get_import_details(importer=importer, imported=imported):
                lines.append(f"    {importer}:{detail['line_number']}: {detail['line_contents']}")
    return "\n".join(lines)


def test_no_import_cycles_among_opendso_modules(graph: grimp.ImportGraph) -> None:
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(_describe(graph, c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle_of_three_and_ignores_a_chain() -> None:
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.e"):
        graph.add_module(name)
    for importer, imported in [("pkg.a", "pkg.b"), ("pkg.b", "pkg.c"), ("pkg.c", "pkg.a"), ("pkg.d", "pkg.e")]:
        graph.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")
    graph.add_import(importer="pkg.c", imported="pkg.d", line_number=2, line_contents="import pkg.d")
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert "pkg.c:1: import pkg.a" in _describe(graph, ["pkg.a", "pkg.b", "pkg.c"])


def test_the_cycle_finder_sees_a_type_checking_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cycle errors.py <-> grid/validation.py went through an ``if TYPE_CHECKING:`` import."""
    root = tmp_path / "cyclepkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    low = "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from cyclepkg.high import Thing\n"
    (root / "low.py").write_text(low)
    (root / "high.py").write_text("from cyclepkg.low import TYPE_CHECKING\nThing = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles(grimp.build_graph("cyclepkg", cache_dir=None)) == [["cyclepkg.high", "cyclepkg.low"]]
