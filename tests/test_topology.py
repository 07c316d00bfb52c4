"""Topology: components, energisation, feeders, radiality, paths and normally-open points.

Small grids are built so that the right answer follows from the construction; SimBench grids
are cross-checked against pandapower's own topology (``pandapower.topology``), which reads
the same switch and in-service data independently of our importer's graph.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import numpy as np
import pandapower as pp
import pandapower.topology as ppt
import pytest

from opendso.grid import from_pandapower
from opendso.grid.model import Grid, empty_component
from opendso.grid.sources import load_simbench_net
from opendso.grid.topology import (
    Topology,
    analyse_topology,
    de_energised_ids,
    feeder_branch_ids,
    feeder_node_ids,
    feeder_of_substation,
    island_node_ids,
    path_from_source,
)

# -- helpers ----------------------------------------------------------------------------------------------


def _id(grid: Grid, component: str, name: str) -> int:
    """Return our id of the element named ``name`` in its source."""
    names = grid.names_of(component)
    hit = np.flatnonzero(names == name)
    assert hit.size == 1, f"{component} {name!r} not found once"
    return int(grid.component(component)["id"][hit[0]])


def _node_ids(grid: Grid, *names: str) -> set[int]:
    return {_id(grid, "node", n) for n in names}


def _energised_names(grid: Grid, topo: Topology) -> set[str]:
    return set(grid.names_of("node")[topo.node_energised])


def _mv_net() -> Any:
    """HV source, HV/MV transformer, MV busbar and an MV ring B-1-2-3-B, open at line 2-3."""
    net = pp.create_empty_network()
    hv = pp.create_bus(net, 110.0, name="HV")
    b = pp.create_bus(net, 20.0, name="B")
    n1, n2, n3 = (pp.create_bus(net, 20.0, name=f"N{k}") for k in (1, 2, 3))
    pp.create_ext_grid(net, hv, name="grid")
    pp.create_transformer(net, hv, b, "25 MVA 110/20 kV", name="T1")
    std = "NA2XS2Y 1x95 RM/25 12/20 kV"
    pp.create_line(net, b, n1, 1.0, std, name="L-B1")
    pp.create_line(net, n1, n2, 1.0, std, name="L-12")
    l23 = pp.create_line(net, n2, n3, 1.0, std, name="L-23")
    pp.create_line(net, n3, b, 1.0, std, name="L-3B")
    pp.create_switch(net, n2, l23, "l", closed=False, name="NOP-23")
    for bus in (n1, n2, n3):
        pp.create_load(net, bus, 0.1, name=f"load N{bus - 1}")
    return net


# -- connected components, energisation, radiality, NOPs ----------------------------------------------


def test_ring_with_one_open_switch_is_radial_with_one_nop() -> None:
    grid = from_pandapower(_mv_net(), name="ring")
    topo = analyse_topology(grid)
    assert topo.n_components == 1
    assert topo.radial
    assert topo.node_energised.all()
    assert list(topo.normally_open.switch_name) == ["NOP-23"]
    assert topo.normally_open.switch_both_energised.tolist() == [True]
    # two feeders, one each side of the open point, named after their first line
    assert topo.feeders.size == 2
    assert sorted(topo.feeders.name) == ["B / L-3B", "B / L-B1"]
    assert sorted(topo.feeders.id) == sorted([_id(grid, "line", "L-B1"), _id(grid, "line", "L-3B")])
    assert set(topo.normally_open.switch_feeders[0]) == set(topo.feeders.id)
    assert topo.feeders.radial.all()
    f1 = _id(grid, "line", "L-B1")
    assert set(feeder_node_ids(topo, f1)) == _node_ids(grid, "N1", "N2")
    assert set(feeder_branch_ids(topo, f1)["line"]) == {f1, _id(grid, "line", "L-12")}
    # the open switch sits at N2's end of L-23, so the line is live from N3, on the other feeder
    f3 = _id(grid, "line", "L-3B")
    assert set(feeder_branch_ids(topo, f3)["line"]) == {f3, _id(grid, "line", "L-23")}
    assert not topo.islands_without_source.size


def test_closing_the_ring_makes_one_meshed_feeder_and_no_nop() -> None:
    grid = from_pandapower(_mv_net(), name="ring")
    closed = grid.with_switch_states(np.ones(grid.switches.size))
    topo = analyse_topology(closed)
    assert topo.component_cycles.tolist() == [1]
    assert not topo.radial
    assert topo.normally_open.size == 0
    assert topo.feeders.size == 1
    assert topo.feeders.cycles.tolist() == [1]
    assert topo.feeders.n_roots.tolist() == [2]
    # the feeder keeps the smallest root id, so its id is stable
    assert topo.feeders.id[0] == min(_id(grid, "line", "L-B1"), _id(grid, "line", "L-3B"))


def test_opening_a_line_de_energises_the_downstream_part() -> None:
    net = _mv_net()
    net.switch.loc[0, "closed"] = True  # close the ring's NOP ...
    net.line.loc[net.line.name == "L-3B", "in_service"] = False  # ... and take out the line that fed N3
    net.line.loc[net.line.name == "L-12", "in_service"] = False  # now N2 and N3 hang off nothing
    grid = from_pandapower(net, name="cut")
    topo = analyse_topology(grid)
    assert _energised_names(grid, topo) == {"HV", "B", "N1"}
    dead = set(de_energised_ids(topo, "sym_load"))
    assert {_id(grid, "sym_load", "load N2"), _id(grid, "sym_load", "load N3")} <= dead
    assert _id(grid, "sym_load", "load N1") not in dead
    # L-23 is switched in but dead; lines that are out of service are not listed by default
    assert set(de_energised_ids(topo, "line")) == {_id(grid, "line", "L-23")}
    assert {_id(grid, "line", "L-12"), _id(grid, "line", "L-3B")} <= set(
        de_energised_ids(topo, "line", switched_in_only=False)
    )
    (island,) = topo.islands_without_source
    assert set(island_node_ids(topo, int(island))) == _node_ids(grid, "N2", "N3")
    assert path_from_source(topo, _id(grid, "node", "N3")) is None
    # the dead section still belongs to the feeder whose (switched-off) root line touches it
    f3 = _id(grid, "line", "L-3B")
    assert (topo.node_feeder[topo.component == island] == f3).all()
    assert not topo.feeders.energised[topo.feeders.id == f3].any()
    assert topo.normally_open.size == 0


def test_open_switch_to_a_dead_feeder_is_a_nop_that_can_restore_it() -> None:
    net = _mv_net()
    net.line.loc[net.line.name == "L-3B", "in_service"] = False  # N3 is fed by nothing but the NOP
    grid = from_pandapower(net, name="dead-end")
    topo = analyse_topology(grid)
    assert _energised_names(grid, topo) == {"HV", "B", "N1", "N2"}
    assert list(de_energised_ids(topo, "sym_load")) == [_id(grid, "sym_load", "load N3")]
    nop = topo.normally_open
    assert list(nop.switch_name) == ["NOP-23"]
    assert nop.switch_both_energised.tolist() == [False]
    assert nop.switch_feeders.tolist() == [[_id(grid, "line", "L-B1"), _id(grid, "line", "L-3B")]]


def test_an_open_branch_end_without_switch_is_a_nop() -> None:
    grid = from_pandapower(_mv_net(), name="ring")
    grid = grid.with_switch_states(np.ones(grid.switches.size))
    line = grid.input["line"].copy()
    line["to_status"][grid.names_of("line") == "L-23"] = 0
    topo = analyse_topology(grid.with_input(line=line))
    nop = topo.normally_open
    assert nop.switch_id.size == 0
    assert nop.branch_id.tolist() == [_id(grid, "line", "L-23")]
    assert nop.branch_side.tolist() == [1]
    assert nop.branch_both_energised.tolist() == [True]
    assert topo.radial


def test_switch_states_are_honoured_even_when_branch_statuses_were_not_updated() -> None:
    grid = from_pandapower(_mv_net(), name="ring")
    closed = grid.with_switch_states(np.ones(grid.switches.size))
    # a grid whose switch table says open but whose line statuses still say closed
    stale = dataclasses.replace(closed, switches=grid.switches)
    assert (stale.input["line"]["from_status"] == 1).all()
    assert analyse_topology(stale).radial
    assert analyse_topology(stale).normally_open.size == 1


# -- substations, feeders and paths across voltage levels ------------------------------------------------


def _mvlv_net() -> Any:
    """HV source; HV/MV substation with two busbar sections; an MV feeder to an MV/LV substation."""
    net = pp.create_empty_network()
    hv = pp.create_bus(net, 110.0, name="HV")
    b1 = pp.create_bus(net, 20.0, name="MV bus 1")
    b2 = pp.create_bus(net, 20.0, name="MV bus 2")
    m1, m2 = (pp.create_bus(net, 20.0, name=f"M{k}") for k in (1, 2))
    spare = pp.create_bus(net, 20.0, name="M-spare")
    lv = pp.create_bus(net, 0.4, name="LV bus")
    a1, a2, c1 = (pp.create_bus(net, 0.4, name=n) for n in ("A1", "A2", "C1"))
    pp.create_ext_grid(net, hv, name="grid")
    pp.create_transformer(net, hv, b1, "25 MVA 110/20 kV", name="T-HV")
    pp.create_switch(net, b1, b2, "b", closed=False, name="coupler")
    mv = "NA2XS2Y 1x95 RM/25 12/20 kV"
    pp.create_line(net, b1, m1, 1.0, mv, name="MV-1")
    pp.create_line(net, m1, m2, 1.0, mv, name="MV-2")
    pp.create_line(net, b2, spare, 1.0, mv, name="MV-spare")
    pp.create_transformer(net, m2, lv, "0.4 MVA 20/0.4 kV", name="T-LV")
    lvt = "NAYY 4x150 SE"
    pp.create_line(net, lv, a1, 0.1, lvt, name="LV-A1")
    pp.create_line(net, a1, a2, 0.1, lvt, name="LV-A2")
    pp.create_line(net, lv, c1, 0.1, lvt, name="LV-C1")
    pp.create_load(net, a2, 0.01, name="house A2")
    pp.create_load(net, spare, 0.1, name="load spare")
    return net


def test_feeders_follow_substations_across_transformers() -> None:
    grid = from_pandapower(_mvlv_net(), name="mvlv")
    topo = analyse_topology(grid)
    subs = topo.substations
    by_name = dict(zip(subs.name, range(subs.size), strict=True))
    assert set(by_name) == {"HV", "MV bus 1", "LV bus"}
    assert subs.kind[by_name["MV bus 1"]] == "primary"
    assert subs.kind[by_name["LV bus"]] == "secondary"
    assert subs.kind[by_name["HV"]] == "source"
    # both busbar sections belong to the primary substation, whatever the coupler's state
    primary = subs.id[by_name["MV bus 1"]]
    for name in ("MV bus 1", "MV bus 2"):
        assert topo.node_substation[grid.node_positions([_id(grid, "node", name)])[0]] == primary

    mv_feeder = _id(grid, "line", "MV-1")
    spare_feeder = _id(grid, "line", "MV-spare")
    assert set(feeder_node_ids(topo, mv_feeder)) == _node_ids(grid, "M1", "M2")
    assert set(feeder_node_ids(topo, _id(grid, "line", "LV-A1"))) == _node_ids(grid, "A1", "A2")
    assert set(feeder_node_ids(topo, _id(grid, "line", "LV-C1"))) == _node_ids(grid, "C1")
    # the MV/LV substation knows the MV feeder that supplies it, and the transformer sits on it
    lv_sub = subs.id[by_name["LV bus"]]
    assert feeder_of_substation(topo, int(lv_sub)) == mv_feeder
    assert subs.parent_substation[by_name["LV bus"]] == primary
    assert feeder_branch_ids(topo, mv_feeder)["transformer"].tolist() == [_id(grid, "transformer", "T-LV")]
    lv_feeders = topo.feeders.substation == lv_sub
    assert (topo.feeders.parent_feeder[lv_feeders] == mv_feeder).all()

    # the open coupler leaves section 2 and its feeder dead; it joins no feeders, so it is no NOP
    assert _energised_names(grid, topo) == {"HV", "MV bus 1", "M1", "M2", "LV bus", "A1", "A2", "C1"}
    row = np.flatnonzero(topo.feeders.id == spare_feeder)[0]
    assert not topo.feeders.energised[row]
    assert topo.feeders.name[row] == "MV bus 1 / MV-spare"
    assert de_energised_ids(topo, "sym_load").tolist() == [_id(grid, "sym_load", "load spare")]
    assert topo.normally_open.size == 0

    # closing the coupler energises it, and then the coupler is no longer open
    topo2 = analyse_topology(grid.with_switch_states(np.ones(grid.switches.size)))
    assert topo2.node_energised.all()
    assert topo2.radial


def test_path_from_source_crosses_transformers() -> None:
    grid = from_pandapower(_mvlv_net(), name="mvlv")
    topo = analyse_topology(grid)
    path = path_from_source(topo, _id(grid, "node", "A2"))
    assert path is not None
    names = grid.names_of("node")[grid.node_positions(path.nodes)]
    assert list(names) == ["HV", "MV bus 1", "M1", "M2", "LV bus", "A1", "A2"]
    expected = [
        _id(grid, "transformer", "T-HV"),
        _id(grid, "line", "MV-1"),
        _id(grid, "line", "MV-2"),
        _id(grid, "transformer", "T-LV"),
        _id(grid, "line", "LV-A1"),
        _id(grid, "line", "LV-A2"),
    ]
    assert path.branches.tolist() == expected
    source_path = path_from_source(topo, _id(grid, "node", "HV"))
    assert source_path is not None
    assert source_path.nodes.tolist() == [_id(grid, "node", "HV")]
    assert source_path.branches.size == 0
    with pytest.raises(KeyError):
        path_from_source(topo, 10**6)


def test_shortest_path_in_a_meshed_grid() -> None:
    grid = from_pandapower(_mv_net(), name="ring")
    topo = analyse_topology(grid.with_switch_states(np.ones(grid.switches.size)))
    path = path_from_source(topo, _id(grid, "node", "N3"))
    assert path is not None
    names = grid.names_of("node")[grid.node_positions(path.nodes)]
    assert list(names) == ["HV", "B", "N3"]  # via L-3B, not round the ring


def test_three_winding_transformer_is_a_star_not_a_loop() -> None:
    net = pp.create_empty_network()
    hv = pp.create_bus(net, 110.0, name="HV")
    mv = pp.create_bus(net, 20.0, name="MV")
    lv = pp.create_bus(net, 10.0, name="LV")
    far = pp.create_bus(net, 10.0, name="LV far")
    pp.create_ext_grid(net, hv)
    t3 = pp.create_transformer3w(net, hv, mv, lv, "63/25/38 MVA 110/20/10 kV", name="T3")
    pp.create_line(net, lv, far, 1.0, "NA2XS2Y 1x95 RM/25 12/20 kV", name="L-far")
    pp.create_load(net, far, 1.0, name="far load")
    grid = from_pandapower(net, name="t3")
    topo = analyse_topology(grid)
    assert topo.radial
    assert topo.node_energised.all()
    assert {str(k) for k in topo.substations.name} == {"HV", "MV", "LV"}
    path = path_from_source(topo, _id(grid, "node", "LV far"))
    assert path is not None
    assert list(grid.names_of("node")[grid.node_positions(path.nodes)]) == ["HV", "LV", "LV far"]
    assert path.branches.tolist() == [_id(grid, "three_winding_transformer", "T3"), _id(grid, "line", "L-far")]
    # opening the LV winding de-energises the LV side only
    pp.create_switch(net, lv, t3, "t3", closed=False, name="LV CB")
    topo_open = analyse_topology(from_pandapower(net, name="t3-open"))
    assert set(grid.names_of("node")[~topo_open.node_energised]) == {"LV", "LV far"}
    assert topo_open.element_energised["three_winding_transformer"].tolist() == [True]


def test_a_grid_without_source_is_all_islands() -> None:
    net = _mv_net()
    net.ext_grid["in_service"] = False
    grid = from_pandapower(net, name="no source")
    topo = analyse_topology(grid)
    assert not topo.node_energised.any()
    assert topo.islands_without_source.tolist() == [0]
    assert len(de_energised_ids(topo, "sym_load")) == 3
    assert topo.feeders.size == 2
    assert not topo.feeders.energised.any()


# -- a large radial grid: speed ---------------------------------------------------------------------------


def _radial_grid(n_mv: int, n_sub: int, n_lv: int, seed: int = 1) -> Grid:
    """A 110 kV source, one primary substation, an MV tree and ``n_sub`` LV trees of ``n_lv`` nodes."""
    rng = np.random.default_rng(seed)
    n = 2 + n_mv + n_sub * (1 + n_lv)
    node = empty_component("node", n)
    node["id"] = np.arange(n)
    node["u_rated"] = 400.0
    node["u_rated"][0] = 110e3
    node["u_rated"][1 : 2 + n_mv] = 20e3

    def tree(first: int, count: int, root: int) -> tuple[np.ndarray, np.ndarray]:
        child = np.arange(first, first + count)
        back = rng.integers(1, 4, size=count)  # long, branching chains
        parent = np.where(child - back >= first, child - back, root)
        return parent, child

    parents, children = [], []
    p, c = tree(2, n_mv, 1)
    parents.append(p)
    children.append(c)
    lv_bus = 2 + n_mv + np.arange(n_sub) * (1 + n_lv)
    for bus in lv_bus:
        p, c = tree(int(bus) + 1, n_lv, int(bus))
        parents.append(p)
        children.append(c)
    line = empty_component("line", sum(x.size for x in parents))
    line["id"] = n + np.arange(line.size)
    line["from_node"] = np.concatenate(parents)
    line["to_node"] = np.concatenate(children)
    line["from_status"] = 1
    line["to_status"] = 1
    trafo = empty_component("transformer", 1 + n_sub)
    trafo["id"] = n + line.size + np.arange(trafo.size)
    trafo["from_node"] = np.concatenate([[0], rng.integers(2, 2 + n_mv, size=n_sub)])
    trafo["to_node"] = np.concatenate([[1], lv_bus])
    trafo["from_status"] = 1
    trafo["to_status"] = 1
    source = empty_component("source", 1)
    source["id"] = trafo["id"][-1] + 1
    source["node"] = 0
    source["status"] = 1
    load = empty_component("sym_load", n - 2)
    load["id"] = source["id"][0] + 1 + np.arange(load.size)
    load["node"] = np.arange(2, n)
    load["status"] = 1
    return Grid(
        name="synthetic",
        input={"node": node, "line": line, "transformer": trafo, "source": source, "sym_load": load},
        names={},
    )


def test_a_100k_node_radial_grid_is_analysed_fast() -> None:
    grid = _radial_grid(n_mv=10_000, n_sub=900, n_lv=99)
    assert grid.count("node") > 100_000
    analyse_topology(grid)  # warm-up
    start = time.perf_counter()
    topo = analyse_topology(grid)
    elapsed = time.perf_counter() - start
    assert topo.radial
    assert topo.node_energised.all()
    assert topo.n_components == 1
    busbar = topo.node_substation >= 0
    assert (topo.node_feeder[~busbar & (grid.input["node"]["u_rated"] < 60e3)] >= 0).all()
    assert (topo.substations.parent_feeder[topo.substations.kind == "secondary"] >= 0).all()
    # generous bound for a loaded CI machine; about 0.2 s on the development machine
    assert elapsed < 3.0, f"analyse_topology took {elapsed:.2f} s"


# -- SimBench, cross-checked against pandapower.topology -----------------------------------------------


@pytest.fixture(scope="module", params=["1-MV-rural--0-sw", "1-MVLV-rural-all-0-sw"])
def simbench_case(request: pytest.FixtureRequest) -> tuple[Any, Grid, Topology]:
    net = load_simbench_net(request.param)
    grid = from_pandapower(net, name=request.param)
    return net, grid, analyse_topology(grid)


def _pandapower_components(net: Any) -> list[frozenset[int]]:
    graph = ppt.create_nxgraph(net)  # honours switches and in_service, as we do
    return sorted((frozenset(int(b) for b in c) for c in ppt.connected_components(graph)), key=min)


def _our_components(grid: Grid, topo: Topology) -> list[frozenset[int]]:
    index = grid.extra["node"]["source_index"]
    groups = [frozenset(int(b) for b in index[topo.component == k]) for k in range(topo.n_components)]
    return sorted(groups, key=min)


def test_simbench_components_match_pandapower(simbench_case: tuple[Any, Grid, Topology]) -> None:
    net, grid, topo = simbench_case
    assert _our_components(grid, topo) == _pandapower_components(net)
    # cycles per component: branches - nodes + components on pandapower's own multigraph
    graph = ppt.create_nxgraph(net)
    expected = graph.number_of_edges() - graph.number_of_nodes() + len(list(ppt.connected_components(graph)))
    assert int(topo.component_cycles.sum()) == expected


def test_simbench_energisation_matches_pandapower(simbench_case: tuple[Any, Grid, Topology]) -> None:
    net, grid, topo = simbench_case
    index = grid.extra["node"]["source_index"]
    assert set(index[~topo.node_energised]) == set(ppt.unsupplied_buses(net))


def test_simbench_feeders_are_radial_with_nops_at_the_open_switches(
    simbench_case: tuple[Any, Grid, Topology],
) -> None:
    net, _, topo = simbench_case
    assert topo.feeders.radial.all()
    open_switches = set(net.switch.name[~net.switch.closed.astype(bool)])
    assert set(topo.normally_open.switch_name) == open_switches
    # SimBench's only loop under its switch states is the pair of parallel HV/MV transformers
    assert topo.component_cycles.tolist() == [1]
    assert (net.trafo.hv_bus.isin(net.bus.index[net.bus.vn_kv > 60])).sum() == 2


def test_simbench_feeders_cover_every_energised_mv_and_lv_node_once(
    simbench_case: tuple[Any, Grid, Topology],
) -> None:
    _, grid, topo = simbench_case
    u_rated = grid.input["node"]["u_rated"]
    off_busbar = (topo.node_substation < 0) & topo.node_energised & (u_rated < 60e3)
    assert (topo.node_feeder[off_busbar] >= 0).all()
    assert (topo.node_feeder[topo.node_substation >= 0] == -1).all()
    counts = np.bincount(np.searchsorted(topo.feeders.id, topo.node_feeder[topo.node_feeder >= 0]))
    assert counts.sum() == int((topo.node_feeder >= 0).sum())
    assert (topo.feeders.n_nodes == counts).all()
    # every SimBench feeder label ("..._FeederN" in the bus subnet) lies within one of our feeders
    subnet = grid.extra["node"]["subnet"].astype(str)
    labels = np.array([s.rsplit("_", 1)[-1] if "Feeder" in s else "" for s in subnet], dtype=object)
    mv = (u_rated > 1e3) & (labels != "")
    for label in np.unique(labels[mv]):
        assert np.unique(topo.node_feeder[mv & (labels == label)]).size == 1, label
    # every secondary substation knows the MV feeder that supplies it
    secondary = topo.substations.kind == "secondary"
    parents = topo.substations.parent_feeder[secondary]
    assert (parents >= 0).all()
    primary = topo.substations.id[topo.substations.kind == "primary"]
    assert np.isin(topo.feeders.substation[np.searchsorted(topo.feeders.id, parents)], primary).all()


def test_simbench_opening_a_feeder_breaker_matches_pandapower(simbench_case: tuple[Any, Grid, Topology]) -> None:
    net, grid, _ = simbench_case
    # open the circuit breaker of the first MV feeder leaving the primary busbar
    cb = net.switch[(net.switch.et == "l") & (net.switch.type == "CB") & net.switch.closed.astype(bool)]
    mv_buses = net.bus.index[(net.bus.vn_kv > 1) & (net.bus.vn_kv < 60)]
    row = int(cb.index[cb.bus.isin(mv_buses)][0])
    net = copy.deepcopy(net)
    net.switch.loc[row, "closed"] = False
    closed = grid.switches["closed"].copy()
    closed[row] = 0  # our switch table keeps pandapower's row order
    topo = analyse_topology(grid.with_switch_states(closed))
    index = grid.extra["node"]["source_index"]
    dead = set(index[~topo.node_energised])
    assert dead == set(ppt.unsupplied_buses(net))
    assert dead  # the breaker feeds something
    assert _our_components(grid, topo) == _pandapower_components(net)
