"""Single-line diagram geometry (opendso.grid.diagram) on the demo grid, SimBench MV and LV grids and synthetic feeders.

Every view of every grid is checked for what an operator relies on: no two nodes on one spot,
every branch drawn with horizontal and vertical segments only, tree branches that never cross,
each feeder inside its own band of columns, bands that never overlap, switches on their
branch, and a search index that finds every named element in a view that draws it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from opendso.grid.diagram import SWITCH_SYMBOLS, GridDiagram, build_diagram
from opendso.grid.model import APPLIANCE_COMPONENTS, SWITCH_DTYPE, Grid, empty_component

GRIDS = ("demo", "simbench:1-MV-rural--0-sw", "simbench:1-LV-rural1--0-sw")


@pytest.fixture(scope="module", params=GRIDS)
def drawn(request: pytest.FixtureRequest, grid_of: Callable[[str], Grid]) -> tuple[Grid, GridDiagram]:
    grid = grid_of(request.param)
    return grid, build_diagram(grid)


def _views(diagram: GridDiagram) -> Iterator[dict[str, Any]]:
    cat = diagram.catalogue()
    for s in cat["substations"]:
        yield diagram.view(substation=s["id"])
    for f in cat["feeders"]:
        yield diagram.view(feeder=f["id"])


def _segments(points: list[list[float]]) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    return [((p[0], p[1]), (q[0], q[1])) for p, q in itertools.pairwise(points)]


def _on_polyline(x: float, y: float, points: list[list[float]]) -> bool:
    for (ax, ay), (bx, by) in _segments(points):
        if min(ax, bx) - 1e-9 <= x <= max(ax, bx) + 1e-9 and min(ay, by) - 1e-9 <= y <= max(ay, by) + 1e-9:
            return True
    return False


def _cross(s: tuple[tuple[float, float], ...], t: tuple[tuple[float, float], ...]) -> bool:
    """Whether a horizontal and a vertical segment cross at a point inside both (not at an end)."""
    (ax, ay), (bx, by) = s
    (cx, cy), (dx, dy) = t
    if ay == by and cx == dx:  # s horizontal, t vertical
        return min(ax, bx) < cx < max(ax, bx) and min(cy, dy) < ay < max(cy, dy)
    if ax == bx and cy == dy:
        return _cross(t, s)
    return False


def test_no_two_nodes_share_a_spot(drawn: tuple[Grid, GridDiagram]) -> None:
    _, diagram = drawn
    for view in _views(diagram):
        spots = [(n["x"], n["y"]) for n in view["nodes"]]
        assert len(spots) == len(set(spots)), view["view"]
        pts = np.array(spots).reshape(-1, 2)
        if len(pts) > 1:
            # nodes sit on whole columns and rows: at least one unit apart
            d = np.abs(pts[:, None, :] - pts[None, :, :]).max(axis=2)
            np.fill_diagonal(d, np.inf)
            assert d.min() >= 1.0 - 1e-9, view["view"]
        for n in view["nodes"]:
            assert n["y"] != 0.0, "nodes never sit on the busbar row"


def test_every_branch_is_drawn_orthogonally_and_tree_branches_never_cross(drawn: tuple[Grid, GridDiagram]) -> None:
    _, diagram = drawn
    for view in _views(diagram):
        tree: list[tuple[tuple[float, float], tuple[float, float]]] = []
        for b in view["branches"]:
            assert len(b["points"]) >= 2
            for (ax, ay), (bx, by) in _segments(b["points"]):
                assert ax == bx or ay == by, (view["view"], b["name"], b["points"])
            if b["role"] in ("tree", "terminal", "bay"):
                tree += _segments(b["points"])
        for i, s in enumerate(tree):
            for t in tree[i + 1 :]:
                assert not _cross(s, t), (view["view"], s, t)


def test_each_feeder_stays_inside_its_band(drawn: tuple[Grid, GridDiagram]) -> None:
    _, diagram = drawn
    for view in _views(diagram):
        bands = {b["feeder"]: b for b in view["bands"]}
        spans = sorted((b["x0"], b["x1"]) for b in view["bands"])
        for (_, x1), (x0, _) in itertools.pairwise(spans):
            assert x1 < x0, f"bands overlap in {view['view']}"
        for n in view["nodes"]:
            if n["band"] >= 0:
                band = bands[n["band"]]
                assert band["x0"] <= n["x"] <= band["x1"], (view["view"], n["name"])
        for bar in view["bars"]:
            assert bar["x0"] < bar["x1"]


def test_switches_sit_on_their_branch_with_their_symbol(drawn: tuple[Grid, GridDiagram]) -> None:
    grid, diagram = drawn
    kinds = dict(zip(grid.switches["id"].tolist(), grid.switch_kinds.tolist(), strict=True))
    normal = dict(zip(grid.switches["id"].tolist(), grid.switches["closed"].tolist(), strict=True))
    seen: set[int] = set()
    for view in _views(diagram):
        branches: dict[int, list[list[list[float]]]] = {}
        for b in view["branches"]:
            branches.setdefault(b["id"], []).append(b["points"])
        for s in view["switches"]:
            seen.add(s["id"])
            assert any(_on_polyline(s["x"], s["y"], pl) for pl in branches[s["branch"]]), s
            assert s["symbol"] == SWITCH_SYMBOLS.get(str(kinds[s["id"]]).upper(), "switch")
            assert s["normally_open"] == (normal[s["id"]] == 0)
            assert s["closed"] == bool(normal[s["id"]])
    assert seen == set(grid.switches["id"].tolist()), "every switch is drawn somewhere"


def test_the_search_index_finds_every_named_element_in_a_view_that_draws_it(drawn: tuple[Grid, GridDiagram]) -> None:
    grid, diagram = drawn
    cat = diagram.catalogue()
    plain = ("node", "switch", *APPLIANCE_COMPONENTS)
    index = {(row[1] if row[1] in plain else "branch", row[2]): row for row in cat["index"]}
    names = {row[0] for row in cat["index"]}
    expected = set(map(str, grid.names_of("node"))) | set(map(str, grid.switch_names))
    for component, _ in grid.iter_branches():
        expected |= set(map(str, grid.names_of(component)))
    for component in APPLIANCE_COMPONENTS:
        if grid.count(component):
            expected |= set(map(str, grid.names_of(component)))
    assert expected <= names, sorted(expected - names)[:10]
    cache: dict[str, dict[str, Any]] = {}
    for (kind, element_id), (_name, _k, _id, at, view_name) in index.items():
        view_kind, view_id = view_name.split(":")
        if view_name not in cache:
            cache[view_name] = diagram.view(**{view_kind: int(view_id)})
        view = cache[view_name]
        drawn_nodes = {n["id"] for n in view["nodes"]} | {b["id"] for b in view["bars"]}
        if kind == "switch":
            assert element_id in {s["id"] for s in view["switches"]}, (kind, element_id, view_name)
        elif kind == "branch":
            assert element_id in {b["id"] for b in view["branches"]}, (kind, element_id, view_name)
        else:
            assert at in drawn_nodes, (kind, element_id, view_name)


def test_live_switch_states_change_the_drawing_but_not_the_layout(grid_of: Callable[[str], Grid]) -> None:
    grid = grid_of("demo")
    diagram = build_diagram(grid)
    sub = diagram.catalogue()["substations"][0]["id"]
    before = diagram.view(substation=sub)
    flipped = 1 - grid.switches["closed"]
    after = diagram.view(substation=sub, closed=flipped)
    assert [(n["x"], n["y"]) for n in before["nodes"]] == [(n["x"], n["y"]) for n in after["nodes"]]
    assert all(a["closed"] != b["closed"] for a, b in zip(before["switches"], after["switches"], strict=True))
    assert [a["normally_open"] for a in after["switches"]] == [b["normally_open"] for b in before["switches"]]


def test_a_grid_without_switches_is_drawn() -> None:
    grid = _synthetic(12)
    bare = Grid(name="bare", input=grid.input, names=grid.names)
    diagram = build_diagram(bare)
    view = diagram.view(substation=diagram.catalogue()["substations"][0]["id"])
    assert view["switches"] == []
    assert len([n for n in view["nodes"] if not n["terminal"]]) == 11


def test_unknown_views_and_bad_states_are_refused(grid_of: Callable[[str], Grid]) -> None:
    diagram = build_diagram(grid_of("demo"))
    with pytest.raises(KeyError, match="no substation"):
        diagram.view(substation=2**31 - 1)
    with pytest.raises(KeyError, match="no feeder"):
        diagram.view(feeder=-12345)
    with pytest.raises(ValueError, match="substation or a feeder"):
        diagram.view()
    sub = diagram.catalogue()["substations"][0]["id"]
    with pytest.raises(ValueError, match="give a substation or a feeder"):
        diagram.view(substation=sub, feeder=sub)
    with pytest.raises(ValueError, match="switch states"):
        diagram.view(substation=sub, closed=[1, 0])


# -- synthetic feeders -------------------------------------------------------------------------------------
def _synthetic(n: int, *, seed: int = 3, trunk_share: float = 0.1) -> Grid:
    """A source busbar with two feeders of random laterals (n nodes in all), a tie between them and a loop."""
    rng = np.random.default_rng(seed)
    node = empty_component("node", n)
    node["id"] = np.arange(n)
    node["u_rated"] = 10e3
    half = n // 2
    parent = np.full(n, -1, dtype=np.int64)
    for start, stop in ((1, half), (half, n)):
        size = stop - start
        trunk = max(1, int(size * trunk_share))
        parent[start] = 0
        parent[start + 1 : start + trunk] = np.arange(start, start + trunk - 1)
        rest = np.arange(start + trunk, stop)
        parent[rest] = start + rng.integers(0, rest - start)
    extra = [(half - 1, n - 1), (5, 9)]  # a tie between the feeders, a loop inside the first
    m = n - 1 + len(extra)
    line = empty_component("line", m)
    line["id"] = np.arange(n, n + m)
    line["from_node"] = np.concatenate([parent[1:], [a for a, _ in extra]])
    line["to_node"] = np.concatenate([np.arange(1, n), [b for _, b in extra]])
    line["from_status"] = 1
    line["to_status"] = 1
    source = empty_component("source", 1)
    source["id"] = n + m
    source["node"] = 0
    source["status"] = 1
    source["u_ref"] = 1.0
    switches = np.zeros(3, dtype=SWITCH_DTYPE)
    switches["id"] = [n + m + 1, n + m + 2, n + m + 3]
    switches["node"] = [0, 0, half - 1]
    switches["element"] = [n, n + half - 1, n + m - 2]
    switches["side"] = [0, 0, 0]
    switches["closed"] = [1, 1, 0]
    grid = Grid(
        name=f"synthetic-{n}",
        input={"node": node, "line": line, "source": source},
        names={"node": np.array([f"n{i}" for i in range(n)], dtype=object)},
        switches=switches,
        switch_names=np.array(["CB1", "CB2", "NOP"], dtype=object),
        switch_kinds=np.array(["CB", "CB", "LBS"], dtype=object),
    )
    closed = grid.switches["closed"]
    return grid.with_switch_states(closed)


def test_a_synthetic_grid_with_a_tie_and_a_loop() -> None:
    grid = _synthetic(60)
    diagram = build_diagram(grid)
    cat = diagram.catalogue()
    assert len(cat["feeders"]) == 2
    sub = diagram.view(substation=cat["substations"][0]["id"])
    assert len(sub["bands"]) == 2
    roles = [b["role"] for b in sub["branches"]]
    assert roles.count("loop") == 1
    assert roles.count("terminal") == 2  # the tie ends in a terminal in each feeder
    terminals = [n for n in sub["nodes"] if n["terminal"]]
    assert {n["target"]["id"] for n in terminals} == {f["id"] for f in cat["feeders"]}
    nop = next(s for s in sub["switches"] if s["name"] == "NOP")
    assert nop["normally_open"]
    assert not nop["closed"]
    assert nop["symbol"] == "load_break"
    breakers = [s for s in sub["switches"] if s["symbol"] == "breaker"]
    assert len(breakers) == 2
    assert all(0 < s["y"] < 1 for s in breakers), "feeder breakers sit below the bar"


def test_a_ten_thousand_node_grid_is_laid_out_in_under_a_second() -> None:
    grid = _synthetic(10_000)
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        diagram = build_diagram(grid)
        best = min(best, time.perf_counter() - t0)
    assert best < 1.0, f"{best:.2f} s"
    view = diagram.view(substation=diagram.catalogue()["substations"][0]["id"])
    assert len([n for n in view["nodes"] if not n["terminal"]]) == 9_999
    spots = {(n["x"], n["y"]) for n in view["nodes"]}
    assert len(spots) == len(view["nodes"])
    # laterals packed against each other's contours: far narrower than one column per leaf
    leaves = 10_000 - len({int(p) for p in grid.component("line")["from_node"]})
    width = view["bounds"][2] - view["bounds"][0]
    assert width < leaves
