"""Network topology: connected components, energisation, feeders, radiality, paths and NOPs.

:func:`analyse_topology` reads a :class:`~opendso.grid.model.Grid` once and returns a frozen
:class:`Topology` whose arrays are aligned with the grid's node array (and, per component
type, with the grid's input arrays). All graph work is done by :mod:`scipy.sparse.csgraph`
on edge arrays; nothing loops over nodes in Python.

Definitions
-----------
- A two-terminal branch connects its nodes when both ends are closed (status 1) and no open
  switch acts on either end; a link that stands for a bus-bus switch connects when that
  switch is closed. A three-winding transformer is a star: its internal point connects to
  each winding whose status is 1.
- A node is *energised* when its connected component holds a source with status 1. An
  element is energised when it is switched in and touches an energised node through a closed
  end; :func:`de_energised_ids` lists switched-in elements that have lost supply.
- A *substation* is a group of busbar nodes joined by links (bus-bus switches, open or
  closed: they belong to the substation whatever their state), fed by the secondary side of a
  transformer or by a source. Its ``kind`` is ``"secondary"`` below 1 kV (MV/LV),
  ``"primary"`` otherwise, ``"source"`` when no transformer feeds it.
- A *feeder* starts at a line-like branch (line, cable, asym_line, generic_branch that is not
  a transformer) leaving a substation busbar and holds every node reached from there through
  closed lines and links without crossing a busbar or a transformer: nodes behind a
  transformer belong to the downstream substation's feeders, and that substation records the
  feeder supplying it (``Substations.parent_feeder``). Roots that reach the same nodes form one
  feeder. A feeder's id is the id of its root branch (the smallest id among its roots, those
  closed at both ends first), so it is a stable element id; its name is
  ``"<busbar> / <root branch name>"``. A section cut off from its busbar keeps the feeder of a
  switched-off root it touches (the feeder is then not energised); nodes that touch no root at
  all (a dead section beyond an open line, the HV side above a primary substation) have feeder
  -1, as have the busbars.
- Cycles are counted as ``branches - nodes + components``: per connected component on the
  closed graph, and per feeder with all busbars it touches taken as one node (two closed roots
  make a loop through the upstream grid). Radial means zero cycles; parallel branches count.
- A *normally-open point* is an open switch (or an open branch end with no switch on it) whose
  two sides are both energised, or whose two sides lie in different feeders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse import csgraph

from opendso.grid.model import APPLIANCE_COMPONENTS, BRANCH_COMPONENTS, SIDE_FROM, SIDE_LINK, SIDE_TO, Grid

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]

#: Busbar voltage below which a substation counts as secondary (MV/LV).
LV_LIMIT_V = 1000.0

#: Switch side for a three-winding transformer winding (the switch's node names the winding).
SIDE_WINDING = 3

_THREE_WINDING = "three_winding_transformer"
_LINE_LIKE = ("line", "asym_line", "generic_branch")
# edge kinds
_LINE = 0
_LINK = 1
_TRAFO = 2


@dataclass(frozen=True)
class Substations:
    """Substations as columns: one row per substation, ``id`` the smallest node id of its busbars."""

    id: IntArray
    name: ObjectArray
    kind: ObjectArray
    u_rated: npt.NDArray[np.float64]
    parent_feeder: IntArray
    parent_substation: IntArray

    @property
    def size(self) -> int:
        """Number of substations."""
        return int(self.id.size)


@dataclass(frozen=True)
class Feeders:
    """Feeders as columns: one row per feeder, ``id`` the id of its root branch."""

    id: IntArray
    name: ObjectArray
    substation: IntArray
    root_component: ObjectArray
    n_roots: IntArray
    n_nodes: IntArray
    cycles: IntArray
    energised: BoolArray
    parent_feeder: IntArray

    @property
    def size(self) -> int:
        """Number of feeders."""
        return int(self.id.size)

    @property
    def radial(self) -> BoolArray:
        """True for feeders without a cycle."""
        return np.asarray(self.cycles == 0)


@dataclass(frozen=True)
class NormallyOpenPoints:
    """Normally-open points: open switches, and open branch ends no switch accounts for."""

    switch_id: IntArray
    switch_name: ObjectArray
    switch_both_energised: BoolArray
    switch_feeders: npt.NDArray[np.int64]
    branch_component: ObjectArray
    branch_id: IntArray
    branch_side: IntArray
    branch_both_energised: BoolArray
    branch_feeders: npt.NDArray[np.int64]

    @property
    def size(self) -> int:
        """Number of normally-open points (switches and branch ends)."""
        return int(self.switch_id.size + self.branch_id.size)


@dataclass(frozen=True)
class SourcePath:
    """The path from a source to a node: ``nodes`` has one more entry than ``branches``."""

    nodes: IntArray
    branches: IntArray


@dataclass(frozen=True)
class Topology:
    """The topology of a grid under its present switch states; node arrays follow the grid's node array."""

    node_id: IntArray
    component: IntArray
    component_size: IntArray
    component_has_source: BoolArray
    component_cycles: IntArray
    node_energised: BoolArray
    element_id: Mapping[str, IntArray]
    element_connected: Mapping[str, BoolArray]
    element_energised: Mapping[str, BoolArray]
    node_substation: IntArray
    substations: Substations
    node_feeder: IntArray
    branch_feeder: Mapping[str, IntArray]
    feeders: Feeders
    normally_open: NormallyOpenPoints
    pred_node: IntArray
    pred_branch: IntArray

    @property
    def n_components(self) -> int:
        """Number of connected components."""
        return int(self.component_size.size)

    @property
    def component_radial(self) -> BoolArray:
        """True for components without a cycle."""
        return np.asarray(self.component_cycles == 0)

    @property
    def radial(self) -> bool:
        """True when every connected component is radial."""
        return bool(np.all(self.component_cycles == 0))

    @property
    def islands_without_source(self) -> IntArray:
        """Component labels of islands that hold no in-service source."""
        return np.flatnonzero(~self.component_has_source).astype(np.int64)


# -- public functions ---------------------------------------------------------------------------------


def analyse_topology(grid: Grid) -> Topology:
    """Return the topology of ``grid`` under its present switch and status values."""
    nodes = grid.component("node")
    node_id = nodes["id"].astype(np.int64)
    n = int(node_id.size)
    u_rated = nodes["u_rated"].astype(np.float64)
    edges = _Edges.build(grid, n, u_rated)
    n_total = n + edges.n_star

    # -- components and energisation --------------------------------------------------------------
    closed = edges.closed
    graph = _graph(n_total, edges.u[closed], edges.v[closed])
    _, raw_labels = csgraph.connected_components(graph, directed=False)
    uniq, dense = np.unique(raw_labels[:n], return_inverse=True)
    component = dense.astype(np.int64)
    n_comp = int(uniq.size)
    # star points whose windings are all open form their own raw components: give them -1
    lookup = np.full(int(raw_labels.max(initial=-1)) + 1, -1, dtype=np.int64)
    lookup[uniq] = np.arange(n_comp)
    label_all = lookup[raw_labels]
    component_size = np.bincount(component, minlength=n_comp).astype(np.int64)
    star_counts = np.bincount(label_all[n:][label_all[n:] >= 0], minlength=n_comp)
    edge_counts = np.bincount(label_all[edges.u[closed]], minlength=n_comp)
    component_cycles = (edge_counts - component_size - star_counts + 1).astype(np.int64)

    source = grid.component("source")
    source_pos = grid.node_positions(source["node"]) if source.size else np.zeros(0, dtype=np.int64)
    source_on = source["status"] == 1
    component_has_source = np.zeros(n_comp, dtype=bool)
    component_has_source[component[source_pos[source_on]]] = True
    node_energised = component_has_source[component]

    element_id, element_connected, element_energised = _element_states(grid, edges, node_energised)

    # -- substations and feeders ------------------------------------------------------------------
    node_substation, fed_by_trafo = _substations(grid, edges, n, source_pos)
    node_feeder, feeders, branch_feeder = _feeders(grid, edges, n, node_substation, node_energised)
    substations = _substation_table(
        grid,
        edges,
        node_substation=node_substation,
        fed_by_trafo=fed_by_trafo,
        node_feeder=node_feeder,
        feeders=feeders,
        u_rated=u_rated,
    )
    feeders = _with_parent_feeders(feeders, substations)

    # -- paths from the sources ---------------------------------------------------------------------
    pred_node, pred_branch = _source_tree(edges, n, source_pos[source_on])

    nops = _normally_open(grid, edges, node_energised, node_feeder)
    return Topology(
        node_id=node_id,
        component=component,
        component_size=component_size,
        component_has_source=component_has_source,
        component_cycles=component_cycles,
        node_energised=node_energised,
        element_id=element_id,
        element_connected=element_connected,
        element_energised=element_energised,
        node_substation=node_substation,
        substations=substations,
        node_feeder=node_feeder,
        branch_feeder=branch_feeder,
        feeders=feeders,
        normally_open=nops,
        pred_node=pred_node,
        pred_branch=pred_branch,
    )


def de_energised_ids(topology: Topology, component: str, *, switched_in_only: bool = True) -> IntArray:
    """Return the ids of elements of ``component`` that have no supply.

    With ``switched_in_only`` (the default) only elements that are switched in (status 1, or a
    closed end for a branch) and still lost supply are listed: the ones an outage interrupts.
    """
    if component not in topology.element_id:
        return np.zeros(0, dtype=np.int64)
    dead = ~topology.element_energised[component]
    if switched_in_only:
        dead &= topology.element_connected[component]
    return topology.element_id[component][dead]


def island_node_ids(topology: Topology, label: int) -> IntArray:
    """Return the node ids of connected component ``label``."""
    if not 0 <= label < topology.n_components:
        raise KeyError(f"no connected component {label}")
    in_island: npt.NDArray[np.bool_] = topology.component == label
    return topology.node_id[in_island]


def feeder_node_ids(topology: Topology, feeder_id: int) -> IntArray:
    """Return the node ids of a feeder (busbars excluded)."""
    _feeder_row(topology, feeder_id)
    in_feeder: npt.NDArray[np.bool_] = topology.node_feeder == feeder_id
    return topology.node_id[in_feeder]


def feeder_branch_ids(topology: Topology, feeder_id: int) -> dict[str, IntArray]:
    """Return the ids of the branches of a feeder, per component type (transformers it supplies included)."""
    _feeder_row(topology, feeder_id)
    out: dict[str, IntArray] = {}
    for component, feeder in topology.branch_feeder.items():
        hit = feeder == feeder_id
        if hit.any():
            out[component] = topology.element_id[component][hit]
    return out


def path_from_source(topology: Topology, node_id: int) -> SourcePath | None:
    """Return the path from a source to ``node_id`` (fewest hops), or None if the node is not energised.

    ``nodes`` starts at the source's node and ends at ``node_id``; ``branches[k]`` joins
    ``nodes[k]`` and ``nodes[k + 1]`` (a three-winding transformer appears once).
    """
    rows = np.flatnonzero(topology.node_id == node_id)
    if not rows.size:
        raise KeyError(f"node id not in the grid: {node_id}")
    row = int(rows[0])
    if not topology.node_energised[row]:
        return None
    path_rows = [row]
    path_branches: list[int] = []
    pred = topology.pred_node
    # the loop runs once per hop of one path, not once per node of the grid
    while pred[row] >= 0:
        path_branches.append(int(topology.pred_branch[row]))
        row = int(pred[row])
        path_rows.append(row)
    return SourcePath(
        nodes=topology.node_id[np.array(path_rows[::-1], dtype=np.int64)],
        branches=np.array(path_branches[::-1], dtype=np.int64),
    )


def feeder_of_substation(topology: Topology, substation_id: int) -> int:
    """Return the id of the feeder that supplies a substation (-1 if none does)."""
    hit = np.flatnonzero(topology.substations.id == substation_id)
    if not hit.size:
        raise KeyError(f"no substation {substation_id}")
    return int(topology.substations.parent_feeder[hit[0]])


# -- internals ------------------------------------------------------------------------------------------


def _graph(n: int, u: IntArray, v: IntArray) -> sp.csr_array:
    data = np.ones(u.size, dtype=np.int8)
    return sp.csr_array((data, (u, v)), shape=(n, n))


@dataclass(frozen=True)
class _Edges:
    """Every branch as edges between node rows; three-winding transformers as stars on extra rows."""

    component: ObjectArray  # component name per edge
    row: IntArray  # row in that component's input array
    branch_id: IntArray
    u: IntArray
    v: IntArray
    u_status: BoolArray
    v_status: BoolArray
    kind: npt.NDArray[np.int8]
    primary_is_u: BoolArray  # for transformer edges: the u end is the higher-voltage side
    n_star: int
    n_two_terminal: int
    spans: Mapping[str, tuple[int, int]]  # edge rows of each component type

    @property
    def closed(self) -> BoolArray:
        return np.asarray(self.u_status & self.v_status)

    @classmethod
    def build(cls, grid: Grid, n: int, u_rated: npt.NDArray[np.float64]) -> _Edges:
        components: list[ObjectArray] = []
        rows: list[IntArray] = []
        ids: list[IntArray] = []
        us: list[IntArray] = []
        vs: list[IntArray] = []
        u_ok: list[BoolArray] = []
        v_ok: list[BoolArray] = []
        kinds: list[npt.NDArray[np.int8]] = []
        switches = grid.switches
        open_sw = switches[switches["closed"] == 0] if switches.size else switches
        for component in BRANCH_COMPONENTS:
            array = grid.input.get(component)
            if array is None or not array.size:
                continue
            bid = array["id"].astype(np.int64)
            from_pos = grid.node_positions(array["from_node"])
            to_pos = grid.node_positions(array["to_node"])
            from_ok = array["from_status"] == 1
            to_ok = array["to_status"] == 1
            # switches are applied again so that a grid built without apply_switches is right too
            for side, targets in ((SIDE_FROM, (from_ok,)), (SIDE_TO, (to_ok,)), (SIDE_LINK, (from_ok, to_ok))):
                hit = _rows_of(bid, open_sw["element"][open_sw["side"] == side])
                for target in targets:
                    target[hit[hit >= 0]] = False
            kind = {"transformer": _TRAFO, "link": _LINK}.get(component, _LINE)
            kind_col = np.full(bid.size, kind, dtype=np.int8)
            if component == "generic_branch":
                # a generic branch between different voltage levels is a transformer
                ratio = u_rated[from_pos] / u_rated[to_pos]
                kind_col[~np.isclose(ratio, 1.0, rtol=0.1)] = _TRAFO
            components.append(np.full(bid.size, component, dtype=object))
            rows.append(np.arange(bid.size, dtype=np.int64))
            ids.append(bid)
            us.append(from_pos)
            vs.append(to_pos)
            u_ok.append(from_ok)
            v_ok.append(to_ok)
            kinds.append(kind_col)
        n_two = sum(r.size for r in rows)
        spans: dict[str, tuple[int, int]] = {}
        start = 0
        for comp, r in zip(components, rows, strict=True):
            spans[str(comp[0])] = (start, start + r.size)
            start += r.size
        t3 = grid.input.get(_THREE_WINDING)
        n_star = int(t3.size) if t3 is not None else 0
        if t3 is not None and n_star:
            bid = t3["id"].astype(np.int64)
            star = n + np.arange(n_star, dtype=np.int64)
            sw_rows = _rows_of(bid, open_sw["element"])
            on_t3 = (sw_rows >= 0) & (open_sw["side"] == SIDE_WINDING)
            for k in (1, 2, 3):
                ok = t3[f"status_{k}"] == 1
                at_k = on_t3.copy()
                at_k[on_t3] = t3[f"node_{k}"][sw_rows[on_t3]] == open_sw["node"][on_t3]
                ok[sw_rows[at_k]] = False
                components.append(np.full(n_star, _THREE_WINDING, dtype=object))
                rows.append(np.arange(n_star, dtype=np.int64))
                ids.append(bid)
                us.append(grid.node_positions(t3[f"node_{k}"]))
                vs.append(star)
                u_ok.append(ok)
                v_ok.append(np.ones(n_star, dtype=bool))
                kinds.append(np.full(n_star, _TRAFO, dtype=np.int8))
            spans[_THREE_WINDING] = (n_two, n_two + 3 * n_star)
        if not rows:
            empty_i = np.zeros(0, dtype=np.int64)
            empty_b = np.zeros(0, dtype=bool)
            return cls(
                np.zeros(0, dtype=object),
                empty_i,
                empty_i,
                empty_i,
                empty_i,
                empty_b,
                empty_b,
                np.zeros(0, dtype=np.int8),
                empty_b,
                n_star,
                0,
                {},
            )
        u = np.concatenate(us).astype(np.int64)
        v = np.concatenate(vs).astype(np.int64)
        primary_is_u = np.ones(u.size, dtype=bool)
        two = np.arange(u.size) < n_two
        primary_is_u[two] = u_rated[u[two]] >= u_rated[v[two]]
        if n_star:
            # a winding is primary when it has the highest rated voltage of its transformer
            u3 = u_rated[u[~two]].reshape(3, n_star)
            first = np.argmax(u3, axis=0)  # ties go to winding 1, then 2
            primary_is_u[~two] = (np.arange(3)[:, None] == first[None, :]).ravel()
        return cls(
            component=np.concatenate(components),
            row=np.concatenate(rows),
            branch_id=np.concatenate(ids),
            u=u,
            v=v,
            u_status=np.concatenate(u_ok).astype(bool),
            v_status=np.concatenate(v_ok).astype(bool),
            kind=np.concatenate(kinds),
            primary_is_u=primary_is_u,
            n_star=n_star,
            n_two_terminal=n_two,
            spans=spans,
        )


def _rows_of(ids: IntArray, wanted: npt.ArrayLike) -> IntArray:
    """Return the row of each wanted id in ``ids`` (-1 where absent)."""
    wanted = np.asarray(wanted, dtype=np.int64)
    if not ids.size or not wanted.size:
        return np.full(wanted.size, -1, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    pos = np.clip(np.searchsorted(ids, wanted, sorter=order), 0, ids.size - 1)
    rows = order[pos]
    return np.where(ids[rows] == wanted, rows, -1).astype(np.int64)


def _element_states(
    grid: Grid, edges: _Edges, node_energised: BoolArray
) -> tuple[dict[str, IntArray], dict[str, BoolArray], dict[str, BoolArray]]:
    """Return ids, switched-in and energised flags of every branch and appliance, per component type."""
    ids: dict[str, IntArray] = {}
    connected: dict[str, BoolArray] = {}
    energised: dict[str, BoolArray] = {}
    for component in APPLIANCE_COMPONENTS:
        array = grid.input.get(component)
        if array is None or not array.size:
            continue
        on = array["status"] == 1
        ids[component] = array["id"].astype(np.int64)
        connected[component] = on
        energised[component] = on & node_energised[grid.node_positions(array["node"])]
    live_u = edges.u_status & node_energised[edges.u]
    two = slice(0, edges.n_two_terminal)
    for component in (*BRANCH_COMPONENTS, _THREE_WINDING):
        if component not in edges.spans:
            continue
        sel = np.arange(*edges.spans[component])
        if component == _THREE_WINDING:
            n3 = edges.n_star
            ids[component] = edges.branch_id[sel[:n3]]
            connected[component] = np.any(edges.u_status[sel].reshape(3, n3), axis=0)
            energised[component] = np.any(live_u[sel].reshape(3, n3), axis=0)
            continue
        v_live = edges.v_status[two][sel] & node_energised[edges.v[sel]]
        ids[component] = edges.branch_id[sel]
        connected[component] = edges.u_status[sel] | edges.v_status[sel]
        energised[component] = live_u[sel] | v_live
    return ids, connected, energised


def _substations(grid: Grid, edges: _Edges, n: int, source_pos: IntArray) -> tuple[IntArray, BoolArray]:
    """Return the substation id of every node (-1 off busbars) and whether each node is fed by a transformer."""
    node_id = grid.component("node")["id"].astype(np.int64)
    links = edges.kind == _LINK
    graph = _graph(n, edges.u[links], edges.v[links])
    _, link_label = csgraph.connected_components(graph, directed=False)
    secondary = _secondary_nodes(edges)
    seeds = np.concatenate([secondary, source_pos]).astype(np.int64)
    is_sub_label = np.zeros(int(link_label.max(initial=-1)) + 1, dtype=bool)
    is_sub_label[link_label[seeds]] = True
    on_bus = is_sub_label[link_label]
    # the substation id is the smallest node id among its busbars
    sub_id_of_label = np.full(is_sub_label.size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(sub_id_of_label, link_label[on_bus], node_id[on_bus])
    node_substation = np.where(on_bus, sub_id_of_label[link_label], -1).astype(np.int64)
    has_trafo_label = np.zeros(is_sub_label.size, dtype=bool)
    has_trafo_label[link_label[secondary]] = True
    return node_substation, has_trafo_label[link_label] & on_bus


def _secondary_nodes(edges: _Edges) -> IntArray:
    """Return the node row of every transformer secondary side (two-winding, then three-winding)."""
    two = np.arange(edges.u.size) < edges.n_two_terminal
    trafo_two = two & (edges.kind == _TRAFO)
    sec_two = np.where(edges.primary_is_u, edges.v, edges.u)[trafo_two]
    sec_three = edges.u[~two & ~edges.primary_is_u]
    return np.concatenate([sec_two, sec_three]).astype(np.int64)


def _first_per_group(group: IntArray, *keys: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    """Return (group values, index of the first row of each group) after sorting by group then keys."""
    order = np.lexsort((*reversed([np.asarray(k) for k in keys]), group))
    values, first = np.unique(group[order], return_index=True)
    return values.astype(np.int64), order[first].astype(np.int64)


def _feeders(
    grid: Grid,
    edges: _Edges,
    n: int,
    node_substation: IntArray,
    node_energised: BoolArray,
) -> tuple[IntArray, Feeders, dict[str, IntArray]]:
    """Return the feeder id of every node, the feeder table and the feeder id of every branch."""
    is_bus = node_substation >= 0
    two = np.arange(edges.u.size) < edges.n_two_terminal
    u = edges.u
    v = np.where(two, edges.v, 0)  # star rows are no feeder nodes; keep indexes in range
    closed = edges.closed
    not_trafo = two & (edges.kind != _TRAFO)
    internal = not_trafo & closed & ~is_bus[u] & ~is_bus[v]
    graph = _graph(n, u[internal], v[internal])
    _, label = csgraph.connected_components(graph, directed=False)
    label = label.astype(np.int64)

    root = two & (edges.kind == _LINE) & (is_bus[u] != is_bus[v])
    root_rows = np.flatnonzero(root)
    far = np.where(is_bus[u], v, u)[root_rows]
    bus = np.where(is_bus[u], u, v)[root_rows]
    root_label = label[far]
    root_feeding = closed[root_rows]
    labels, first = _first_per_group(root_label, ~root_feeding, edges.branch_id[root_rows])
    rep = root_rows[first]
    feeder_of_label = np.full(n, -1, dtype=np.int64)
    feeder_of_label[labels] = edges.branch_id[rep]
    node_feeder = np.where(is_bus, -1, feeder_of_label[label]).astype(np.int64)

    # per-feeder counts, indexed by label
    in_feeder = node_feeder >= 0
    n_nodes = np.bincount(label[in_feeder], minlength=n)
    n_internal = np.bincount(label[u[internal]], minlength=n)
    n_closed_roots = np.bincount(root_label[root_feeding], minlength=n)
    n_roots = np.bincount(root_label, minlength=n)
    energised = np.bincount(label[in_feeder], weights=node_energised[in_feeder], minlength=n) > 0
    cycles = np.where(n_closed_roots > 0, n_internal + n_closed_roots - n_nodes, n_internal - n_nodes + 1).astype(
        np.int64
    )

    sub = node_substation[bus[first]]
    bus_name = _names_at(grid, "node", grid.node_positions(sub))
    root_names = _branch_names(grid, edges, rep)
    names = np.array([f"{b} / {r}" for b, r in zip(bus_name, root_names, strict=True)], dtype=object)
    order = np.argsort(edges.branch_id[rep], kind="stable")
    feeders = Feeders(
        id=edges.branch_id[rep][order],
        name=names[order],
        substation=sub[order],
        root_component=edges.component[rep][order],
        n_roots=n_roots[labels][order].astype(np.int64),
        n_nodes=n_nodes[labels][order].astype(np.int64),
        cycles=cycles[labels][order],
        energised=energised[labels][order],
        parent_feeder=np.full(labels.size, -1, dtype=np.int64),
    )

    # feeder of every branch
    fu = node_feeder[u]
    fv = np.where(two, node_feeder[v], -1)
    via_u = np.where(edges.u_status, fu, -1)
    via_v = np.where(edges.v_status & two, fv, -1)
    bf = np.where(via_u >= 0, via_u, via_v)
    bf = np.where(bf >= 0, bf, np.where(fu >= 0, fu, fv))
    # a transformer belongs to the feeder that supplies it (its primary side)
    trafo_two = two & (edges.kind == _TRAFO)
    bf[trafo_two] = np.where(edges.primary_is_u, fu, fv)[trafo_two]
    branch_feeder: dict[str, IntArray] = {}
    for component in BRANCH_COMPONENTS:
        if component in edges.spans:
            start, stop = edges.spans[component]
            branch_feeder[component] = bf[start:stop].astype(np.int64)
    if edges.n_star:
        star = ~two
        wf = np.where(edges.primary_is_u[star], fu[star], -1).reshape(3, edges.n_star)
        branch_feeder[_THREE_WINDING] = wf.max(axis=0).astype(np.int64)
    return node_feeder, feeders, branch_feeder


def _branch_names(grid: Grid, edges: _Edges, rows: IntArray) -> ObjectArray:
    """Return the source names of the branches on the given edge rows."""
    out = np.empty(rows.size, dtype=object)
    for component, (start, stop) in edges.spans.items():
        sel = (rows >= start) & (rows < stop)
        if sel.any():
            out[sel] = _names_at(grid, component, edges.row[rows[sel]])
    return out


def _substation_table(
    grid: Grid,
    edges: _Edges,
    *,
    node_substation: IntArray,
    fed_by_trafo: BoolArray,
    node_feeder: IntArray,
    feeders: Feeders,
    u_rated: npt.NDArray[np.float64],
) -> Substations:
    """Return the substation table with the feeder (and substation) supplying each one."""
    sub_ids = np.unique(node_substation[node_substation >= 0])
    rows = grid.node_positions(sub_ids) if sub_ids.size else np.zeros(0, dtype=np.int64)
    u_bus = u_rated[rows]
    has_trafo = np.zeros(sub_ids.size, dtype=bool)
    on_trafo_bus = np.flatnonzero(fed_by_trafo)
    has_trafo[np.searchsorted(sub_ids, node_substation[on_trafo_bus])] = True
    kind = np.where(has_trafo, np.where(u_bus < LV_LIMIT_V, "secondary", "primary"), "source").astype(object)

    # transformer ends: (primary node, secondary node, closed) for every winding pair
    two = np.arange(edges.u.size) < edges.n_two_terminal
    trafo_two = np.flatnonzero(two & (edges.kind == _TRAFO))
    prim = np.where(edges.primary_is_u, edges.u, edges.v)[trafo_two]
    sec = np.where(edges.primary_is_u, edges.v, edges.u)[trafo_two]
    ok = edges.closed[trafo_two]
    if edges.n_star:
        n3 = edges.n_star
        wu = edges.u[~two].reshape(3, n3)
        wok = edges.u_status[~two].reshape(3, n3)
        wprim = edges.primary_is_u[~two].reshape(3, n3)
        p_row = np.argmax(wprim, axis=0)
        cols = np.arange(n3)
        p_node = wu[p_row, cols]
        p_ok = wok[p_row, cols]
        secondary = ~wprim
        prim = np.concatenate([prim, np.broadcast_to(p_node, (3, n3))[secondary]])
        sec = np.concatenate([sec, wu[secondary]])
        ok = np.concatenate([ok, (wok & p_ok[None, :])[secondary]])
    sub_of_sec = node_substation[sec]
    parent_sub = node_substation[prim]
    parent_feeder = node_feeder[prim]
    feeder_sub = np.full(parent_feeder.size, -1, dtype=np.int64)
    known = parent_feeder >= 0
    feeder_sub[known] = feeders.substation[np.searchsorted(feeders.id, parent_feeder[known])]
    parent_sub = np.where(parent_sub >= 0, parent_sub, feeder_sub)
    usable = (sub_of_sec >= 0) & (parent_sub != sub_of_sec) & ((parent_feeder >= 0) | (parent_sub >= 0))
    idx = np.flatnonzero(usable)
    subs, first = _first_per_group(sub_of_sec[idx], ~ok[idx], parent_feeder[idx] < 0)
    pick = idx[first]
    out_feeder = np.full(sub_ids.size, -1, dtype=np.int64)
    out_sub = np.full(sub_ids.size, -1, dtype=np.int64)
    at = np.searchsorted(sub_ids, subs)
    out_feeder[at] = parent_feeder[pick]
    out_sub[at] = parent_sub[pick]
    return Substations(
        id=sub_ids.astype(np.int64),
        name=_names_at(grid, "node", rows),
        kind=kind,
        u_rated=u_bus,
        parent_feeder=out_feeder,
        parent_substation=out_sub,
    )


def _with_parent_feeders(feeders: Feeders, substations: Substations) -> Feeders:
    """Return the feeders with the feeder that supplies their substation."""
    at = np.searchsorted(substations.id, feeders.substation)
    parent = substations.parent_feeder[at] if substations.size else np.full(feeders.size, -1, dtype=np.int64)
    return replace(feeders, parent_feeder=parent.astype(np.int64))


def _source_tree(edges: _Edges, n: int, source_rows: IntArray) -> tuple[IntArray, IntArray]:
    """Return, for every node, its predecessor row and the branch id towards the nearest source (-1 at roots)."""
    n_total = n + edges.n_star
    closed = np.flatnonzero(edges.closed)
    cu = edges.u[closed]
    cv = edges.v[closed]
    hub = n_total  # one extra vertex joined to every live source node: a multi-source search
    sources = np.unique(source_rows)
    graph = _graph(
        n_total + 1,
        np.concatenate([cu, np.full(sources.size, hub, dtype=np.int64)]),
        np.concatenate([cv, sources]),
    )
    pred_node = np.full(n, -1, dtype=np.int64)
    pred_branch = np.full(n, -1, dtype=np.int64)
    if not sources.size:
        return pred_node, pred_branch
    _, pred = csgraph.breadth_first_order(graph, hub, directed=False, return_predecessors=True)
    pred = pred.astype(np.int64)
    p = pred[:n]
    reached = (p >= 0) & (p != hub)
    # the branch joining each node to its predecessor, found by its (low, high) end pair
    width = n_total + 1
    keys = np.minimum(cu, cv) * width + np.maximum(cu, cv)
    order = np.argsort(keys, kind="stable")
    rows = np.flatnonzero(reached)
    q = p[rows]
    want = np.minimum(q, rows) * width + np.maximum(q, rows)
    hit = order[np.searchsorted(keys, want, sorter=order)]
    pred_branch[rows] = edges.branch_id[closed[hit]]
    # through a three-winding star point, the predecessor is the node before the star point
    pred_node[rows] = np.where(q >= n, pred[np.minimum(q, n_total)], q)
    return pred_node, pred_branch


def _normally_open(grid: Grid, edges: _Edges, node_energised: BoolArray, node_feeder: IntArray) -> NormallyOpenPoints:
    """Return the open switches and open branch ends that are normally-open points."""
    n2 = edges.n_two_terminal
    # one dummy branch at row n2 (dead, no feeder) keeps lookups of unknown elements in range
    u = np.append(edges.u[:n2], 0)
    v = np.append(edges.v[:n2], 0)
    us = np.append(edges.u_status[:n2], False)
    vs = np.append(edges.v_status[:n2], False)
    en_u = np.append(node_energised[u[:n2]], False)
    en_v = np.append(node_energised[v[:n2]], False)
    f_u = np.append(node_feeder[u[:n2]], -1)
    f_v = np.append(node_feeder[v[:n2]], -1)

    # -- open switches ----------------------------------------------------------------------------
    switches = grid.switches
    open_rows = np.flatnonzero(switches["closed"] == 0)
    sw = switches[open_rows]
    side = sw["side"].astype(np.int64)
    e = _rows_of(edges.branch_id[:n2], sw["element"])
    known = (e >= 0) & (side <= SIDE_LINK)
    ek = np.where(known, e, n2)
    # side A is the switch's node end, side B what lies beyond the switch
    is_from = side == SIDE_FROM
    is_to = side == SIDE_TO
    a_en = np.where(is_to, en_v[ek], en_u[ek])
    a_f = np.where(is_to, f_v[ek], f_u[ek])
    b_en = np.select([is_from, is_to], [vs[ek] & en_v[ek], us[ek] & en_u[ek]], en_v[ek])
    b_f = np.select([is_from, is_to], [np.where(vs[ek], f_v[ek], -1), np.where(us[ek], f_u[ek], -1)], f_v[ek])
    # an open switch on a three-winding transformer: the winding's node against the live windings
    on_t3 = side == SIDE_WINDING
    if on_t3.any() and edges.n_star:
        n3 = edges.n_star
        t3_ids = edges.branch_id[n2 : n2 + n3]
        t_rows = _rows_of(t3_ids, sw["element"][on_t3])
        wu = edges.u[n2:].reshape(3, n3)
        live = (edges.u_status[n2:] & node_energised[edges.u[n2:]]).reshape(3, n3)
        node_rows = grid.node_positions(sw["node"][on_t3])
        good = t_rows >= 0
        tr = np.where(good, t_rows, 0)
        other_live = (live[:, tr] & (wu[:, tr] != node_rows[None, :])).any(axis=0)
        a_en[on_t3] = node_energised[node_rows] & good
        b_en[on_t3] = other_live & good
        known[on_t3] = good
    both = known & a_en & b_en
    joins = known & (a_f >= 0) & (b_f >= 0) & (a_f != b_f)
    nop = both | joins
    switch_feeders = np.stack([a_f, b_f], axis=1)[nop].astype(np.int64).reshape(-1, 2)

    # -- open branch ends without a switch ----------------------------------------------------------
    u, v, us, vs, en_u, en_v, f_u, f_v = (x[:n2] for x in (u, v, us, vs, en_u, en_v, f_u, f_v))
    one_open = us != vs
    covered_keys = sw["element"].astype(np.int64) * 4 + side
    end_side = np.where(us, SIDE_TO, SIDE_FROM)
    bid = edges.branch_id[:n2]
    covered = np.isin(bid * 4 + end_side, covered_keys) | np.isin(bid * 4 + SIDE_LINK, covered_keys)
    cand = np.flatnonzero(one_open & ~covered)
    b_both = en_u[cand] & en_v[cand]
    b_join = (f_u[cand] >= 0) & (f_v[cand] >= 0) & (f_u[cand] != f_v[cand])
    keep = b_both | b_join
    cand = cand[keep]
    return NormallyOpenPoints(
        switch_id=sw["id"][nop].astype(np.int64),
        switch_name=_switch_names(grid)[open_rows[nop]],
        switch_both_energised=both[nop],
        switch_feeders=switch_feeders,
        branch_component=edges.component[cand],
        branch_id=bid[cand],
        branch_side=end_side[cand].astype(np.int64),
        branch_both_energised=b_both[keep],
        branch_feeders=np.stack([f_u[cand], f_v[cand]], axis=1).astype(np.int64).reshape(-1, 2),
    )


def _names_at(grid: Grid, component: str, rows: IntArray) -> ObjectArray:
    """Return the source names of some rows of a component (their ids where the grid has no names)."""
    names = grid.names.get(component)
    if names is not None and names.size == grid.count(component):
        return np.asarray(names[rows], dtype=object)
    return grid.component(component)["id"][rows].astype(str).astype(object)


def _switch_names(grid: Grid) -> ObjectArray:
    names = grid.switch_names
    if names.size == grid.switches.size:
        return names
    return grid.switches["id"].astype(str).astype(object)


def _feeder_row(topology: Topology, feeder_id: int) -> int:
    hit = np.flatnonzero(topology.feeders.id == feeder_id)
    if not hit.size:
        raise KeyError(f"no feeder {feeder_id}")
    return int(hit[0])
