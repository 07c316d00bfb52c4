"""Single-line diagrams per substation and per feeder, laid out from the topology.

:func:`build_diagram` reads a :class:`~opendso.grid.model.Grid` once (under its normal switch
states: the layout must not move when a switch operates) and returns a :class:`GridDiagram`,
whose :meth:`~GridDiagram.view` gives the geometry of one substation or one feeder as plain
JSON-safe data, and whose :meth:`~GridDiagram.catalogue` lists the views and a search index of
every named element.

The drawing is orthogonal, in grid units (one column, one row; ``y`` grows downwards):

- a substation's busbar sections are horizontal bars on row 0; transformers and sources that
  feed them sit above (rows -1 and -2), its feeders hang below, side by side, each in a band
  of columns of its own (the bands never overlap);
- a feeder is a tree (a spanning tree of its nodes, breadth first from the busbar): the main
  line goes straight down (each node's tallest subtree continues below it), laterals branch to
  the right, along the parent's row and then down. Subtrees are packed against each other's
  contours as in Reingold and Tilford's tidy tree ("Tidier Drawings of Trees", IEEE Trans.
  Software Eng. 7(2), 1981), with each node's contour on its own row reaching to its last
  child, so a lateral's horizontal run never crosses another subtree: no two nodes share a
  spot and no two tree branches cross;
- what lies beyond the view (a tie to another feeder, a transformer to a downstream substation,
  a second supply from another substation) ends in a *terminal*: a leaf of the tree that names
  the view to go to;
- branches that close a loop inside the feeder are drawn as three-segment orthogonal paths;
- switches sit on their branch end, a quarter column from their node (at the middle of a
  bus-bus link), with their drawing symbol from the switch kind of the source (``CB``
  breaker, ``LBS``/``LS`` load-break switch, ``DS`` disconnector, anything else a switch) and
  ``normally_open`` for the switches open in the normal state.

The layout is one pass over the nodes (numpy contour arrays per node), so a 10,000-node grid
takes well under a second; a view is built per request from the cached layout.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse import csgraph

from opendso.grid.model import APPLIANCE_COMPONENTS, BRANCH_COMPONENTS, SIDE_LINK, Grid
from opendso.grid.topology import Topology, analyse_topology

__all__ = ["SWITCH_SYMBOLS", "GridDiagram", "build_diagram"]

#: Drawing symbol of a switch from its kind in the source (pandapower's switch ``type``); others: ``switch``.
SWITCH_SYMBOLS: Mapping[str, str] = {"CB": "breaker", "LBS": "load_break", "LS": "load_break", "DS": "disconnector"}

#: Distance of a switch from its node along its branch, in columns.
SWITCH_OFFSET = 0.25

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_THREE_WINDING = "three_winding_transformer"


@dataclass(frozen=True)
class _Edge:
    """One drawn branch: a two-terminal branch, or one winding pair of a three-winding transformer."""

    component: str
    id: int
    name: str
    kind: str
    a: int  # node row
    b: int  # node row
    trafo: bool


@dataclass
class _Item:
    """One spot of a feeder tree: a grid node (``node`` >= 0) or a terminal standing for what lies beyond."""

    feeder: int
    parent: int  # item index, -1 for a feeder's top (the busbar)
    edge: int  # edge drawn from the parent, -1 for none
    node: int  # node row (the outside node for a terminal)
    terminal: bool
    target: tuple[str, int] | None  # ("substation"|"feeder", id) a terminal leads to
    x: float = 0.0
    y: float = 0.0
    weight: int = 1  # nodes in the subtree: names of heavy nodes show first


@dataclass
class _Bay:
    """What hangs below a substation's bar: a feeder band, or a terminal to elsewhere."""

    section: int  # bus node row it hangs from
    feeder: int  # feeder index (-1: a terminal bay)
    edge: int  # terminal bay: the edge drawn
    node: int  # terminal bay: the outside node row
    target: tuple[str, int] | None
    width: float


class GridDiagram:
    """The single-line diagrams of one grid: per-substation and per-feeder geometry and a search index.

    Build with :func:`build_diagram`. :meth:`view` takes the live switch states (``closed``,
    aligned with the grid's switch table) so the drawing follows the field while the layout,
    made from the normal states, stays put.
    """

    def __init__(self, grid: Grid, topology: Topology) -> None:
        self.name = grid.name
        self._grid = grid
        self._topo = topology
        node = grid.component("node")
        self._node_id = node["id"].astype(np.int64)
        self._node_name = [str(x) for x in grid.names_of("node")]
        self._u_kv = (node["u_rated"].astype(float) / 1e3).tolist()
        n = self._node_id.size
        self._n = n
        self._bus_sub = topology.node_substation
        self._is_bus = self._bus_sub >= 0
        feeders = topology.feeders
        self._feeder_ids = feeders.id.tolist()
        self._feeder_names = [str(x) for x in feeders.name]
        self._feeder_sub = feeders.substation.tolist()
        self._feeder_row = {int(f): k for k, f in enumerate(self._feeder_ids)}
        subs = topology.substations
        self._sub_ids = subs.id.tolist()
        self._sub_row = {int(s): k for k, s in enumerate(self._sub_ids)}
        self._sub_names = [str(x) for x in subs.name]
        self._sub_kind = [str(x) for x in subs.kind]
        self._edges = _edges(grid)
        self._normal_closed = grid.switches["closed"].astype(bool)
        self._layout()
        self._switch_edges()

    # -- layout ----------------------------------------------------------------------------------------
    def _layout(self) -> None:
        n = self._n
        edges = self._edges
        ea = np.array([e.a for e in edges], dtype=np.int64)
        eb = np.array([e.b for e in edges], dtype=np.int64)
        trafo = np.array([e.trafo for e in edges], dtype=bool)
        is_bus = self._is_bus
        n_feeders = len(self._feeder_ids)
        member = self._topo.node_feeder.copy()
        member = np.where(is_bus, -1, member)
        known = np.isin(member, np.asarray(self._feeder_ids, dtype=np.int64))
        member = np.where(known, np.asarray([self._feeder_row.get(int(m), -1) for m in member], dtype=np.int64), -1)
        # nodes the normal state leaves without a feeder (a dead section beyond an open point) join
        # the feeder they touch through any line, whatever its switches
        inner = ~trafo & ~is_bus[ea] & ~is_bus[eb] if ea.size else np.zeros(0, dtype=bool)
        ia, ib = ea[inner], eb[inner]
        while True:
            spread = (member[ia] >= 0) & (member[ib] < 0)
            back = (member[ib] >= 0) & (member[ia] < 0)
            if not spread.any() and not back.any():
                break
            member[ib[spread]] = member[ia[spread]]
            member[ia[back]] = member[ib[back]]
        loose = (member < 0) & ~is_bus
        self._unassigned = n_feeders if loose.any() else -1
        if loose.any():
            member[loose] = n_feeders
            self._feeder_ids.append(-1)
            self._feeder_names.append("Not on a feeder")
            self._feeder_sub.append(-1)
            self._feeder_row[-1] = n_feeders
            n_feeders += 1
        self._member = member
        # spanning forest: virtual tops n .. n + F - 1, each feeder's roots hang from its top
        root_edge = ~trafo & (is_bus[ea] != is_bus[eb])
        bus_end = np.where(is_bus[ea], ea, eb)
        far_end = np.where(is_bus[ea], eb, ea)
        own_sub = np.asarray([*self._feeder_sub, -2], dtype=np.int64)
        far_member = member[far_end]
        home = root_edge & (self._bus_sub[bus_end] == own_sub[np.where(far_member >= 0, far_member, -1)])
        home &= far_member >= 0
        same = inner & (member[ea] == member[eb]) & (member[ea] >= 0)
        g_u = [ea[same], n + far_member[home]]
        g_v = [eb[same], far_end[home]]
        # components without a home root get attached to their feeder's top at their smallest node
        graph = _graph(n, ea[same], eb[same])
        _, comp = csgraph.connected_components(graph, directed=False)
        has_root = np.zeros(int(comp.max(initial=-1)) + 1, dtype=bool)
        has_root[comp[far_end[home]]] = True
        needs = (member >= 0) & ~has_root[comp] & ~is_bus
        extra_nodes = np.zeros(0, dtype=np.int64)
        if needs.any():
            rows = np.flatnonzero(needs)
            _, first = np.unique(comp[rows], return_index=True)
            extra_nodes = rows[first]
            g_u.append(n + member[extra_nodes])
            g_v.append(extra_nodes)
        super_root = n + n_feeders
        tops = np.arange(n, n + n_feeders, dtype=np.int64)
        g_u.append(np.full(n_feeders, super_root, dtype=np.int64))
        g_v.append(tops)
        u = np.concatenate(g_u)
        v = np.concatenate(g_v)
        full = _graph(super_root + 1, u, v)
        order, pred = csgraph.breadth_first_order(full, super_root, directed=False, return_predecessors=True)
        # which edge each tree step used
        pair_edge: dict[tuple[int, int], int] = {}
        for k in np.flatnonzero(same).tolist():
            a, b = int(ea[k]), int(eb[k])
            pair_edge.setdefault((min(a, b), max(a, b)), k)
        for k in np.flatnonzero(home).tolist():
            pair_edge.setdefault((int(n + far_member[k]), int(far_end[k])), k)
        items: list[_Item] = [
            _Item(feeder=f, parent=-1, edge=-1, node=-1, terminal=False, target=None) for f in range(n_feeders)
        ]
        item_of_node = np.full(n, -1, dtype=np.int64)
        tree_edge = np.zeros(len(edges), dtype=bool)
        for row in order.tolist():
            if row >= n:
                continue  # tops (items 0..F-1) and the super root
            p = int(pred[row])
            parent_item = p - n if p >= n else int(item_of_node[p])
            key = (p, row) if p >= n else (min(p, row), max(p, row))
            k = pair_edge.get(key, -1)
            if k >= 0:
                tree_edge[k] = True
            item_of_node[row] = len(items)
            items.append(
                _Item(feeder=int(member[row]), parent=parent_item, edge=k, node=row, terminal=False, target=None)
            )
        # what the tree leaves out: loops inside a feeder, terminals to elsewhere, bays of substations
        self._loops: dict[int, list[int]] = {}
        self._couplers: dict[int, list[int]] = {}
        self._incoming: dict[int, list[int]] = {}
        bays: dict[int, list[_Bay]] = {}
        for k, e in enumerate(edges):
            if tree_edge[k]:
                continue
            a, b = e.a, e.b
            if e.trafo:
                prim, sec = (a, b) if self._u_kv[a] >= self._u_kv[b] else (b, a)
                if is_bus[sec]:
                    self._incoming.setdefault(int(self._bus_sub[sec]), []).append(k)
                    target: tuple[str, int] = ("substation", int(self._bus_sub[sec]))
                    if is_bus[prim]:
                        bays.setdefault(int(self._bus_sub[prim]), []).append(_Bay(prim, -1, k, sec, target, 1.0))
                    elif member[prim] >= 0:
                        items.append(_Item(int(member[prim]), int(item_of_node[prim]), k, sec, True, target))
                    continue
            if is_bus[a] and is_bus[b]:
                sa, sb = int(self._bus_sub[a]), int(self._bus_sub[b])
                if sa == sb:
                    self._couplers.setdefault(sa, []).append(k)
                else:
                    bays.setdefault(sa, []).append(_Bay(a, -1, k, b, ("substation", sb), 1.0))
                    bays.setdefault(sb, []).append(_Bay(b, -1, k, a, ("substation", sa), 1.0))
                continue
            if is_bus[a] or is_bus[b]:
                bus, far = (a, b) if is_bus[a] else (b, a)
                f = int(member[far])
                sub = int(self._bus_sub[bus])
                if f < 0:
                    continue
                if self._feeder_sub[f] == sub and home[k]:
                    self._loops.setdefault(f, []).append(k)
                else:
                    bays.setdefault(sub, []).append(_Bay(bus, -1, k, far, self._view_of_feeder(f), 1.0))
                    items.append(_Item(f, int(item_of_node[far]), k, bus, True, ("substation", sub)))
                continue
            fa, fb = int(member[a]), int(member[b])
            if fa < 0 or fb < 0:
                continue
            if fa == fb:
                self._loops.setdefault(fa, []).append(k)
                continue
            items.append(_Item(fa, int(item_of_node[a]), k, b, True, self._view_of_feeder(fb)))
            items.append(_Item(fb, int(item_of_node[b]), k, a, True, self._view_of_feeder(fa)))
        self._items = items
        self._item_of_node = item_of_node
        self._tidy(items)
        # feeder bays hang from the bus section of their first home root
        for f in range(n_feeders):
            sub = self._feeder_sub[f]
            if sub < 0 or sub not in self._sub_row:
                continue
            kids = list(self._children[f])
            section = -1
            for i in kids:
                k = items[i].edge
                if k >= 0:
                    ed = edges[k]
                    section = ed.a if is_bus[ed.a] else ed.b
                    break
            if section < 0:
                buses = np.flatnonzero(self._bus_sub == sub)
                section = int(buses[0]) if buses.size else -1
            bays.setdefault(sub, []).append(_Bay(section, f, -1, -1, None, self._width[f]))
        self._bays = bays

    def _view_of_feeder(self, f: int) -> tuple[str, int]:
        return ("feeder", int(self._feeder_ids[f]))

    def _tidy(self, items: list[_Item]) -> None:
        """Place every item relative to its feeder's top: main child below, laterals packed to the right."""
        m = len(items)
        children: list[list[int]] = [[] for _ in range(m)]
        for i, it in enumerate(items):
            if it.parent >= 0:
                children[it.parent].append(i)
        self._children = children
        # children after parents: items are appended parent first except terminals; sort by depth
        depth = np.zeros(m, dtype=np.int64)
        order: list[int] = []
        stack = [i for i, it in enumerate(items) if it.parent < 0]
        while stack:
            i = stack.pop()
            order.append(i)
            for c in children[i]:
                depth[c] = depth[i] + 1
                stack.append(c)
        height = np.zeros(m, dtype=np.int64)
        weight = np.ones(m, dtype=np.int64)
        left: list[IntArray] = [np.zeros(1, dtype=np.int64)] * m
        right: list[IntArray] = [np.zeros(1, dtype=np.int64)] * m
        offset = np.zeros(m, dtype=np.int64)
        zero = np.zeros(1, dtype=np.int64)
        for i in reversed(order):
            kids = children[i]
            if not kids:
                continue
            # the tallest subtree goes on straight down; terminals come last
            kids.sort(key=lambda c: (items[c].terminal, -int(height[c]), items[c].node))
            height[i] = 1 + max(int(height[c]) for c in kids)
            weight[i] = 1 + sum(int(weight[c]) for c in kids)
            main = kids[0]
            acc_l = left[main]
            acc_r = right[main]
            last = 0
            for c in kids[1:]:
                lc, rc = left[c], right[c]
                common = min(acc_r.size, lc.size)
                o = max(int(np.max(acc_r[:common] - lc[:common])) + 1, last + 1)
                offset[c] = o
                last = o
                if rc.size > acc_r.size:
                    acc_r = np.concatenate([np.maximum(acc_r, rc[: acc_r.size] + o), rc[acc_r.size :] + o])
                    acc_l = np.concatenate([acc_l, lc[acc_l.size :] + o])
                else:
                    acc_r = acc_r.copy()
                    acc_r[: rc.size] = np.maximum(acc_r[: rc.size], rc + o)
            left[i] = np.concatenate([zero, acc_l])
            right[i] = np.concatenate([np.array([last], dtype=np.int64), acc_r])
            for c in kids:
                left[c] = right[c] = zero  # free the children's contours
        for i in order:
            it = items[i]
            if it.parent >= 0:
                p = items[it.parent]
                it.x = p.x + float(offset[i])
                it.y = p.y + 1.0
            it.weight = int(weight[i])
        n_tops = sum(1 for it in items if it.parent < 0)
        self._width = [float(np.max(right[f])) + 1.0 if children[f] else 1.0 for f in range(n_tops)]

    def _switch_edges(self) -> None:
        """Map every switch to the drawn edge it acts on (-1: none drawn)."""
        grid = self._grid
        by_id: dict[int, list[int]] = {}
        for k, e in enumerate(self._edges):
            by_id.setdefault(e.id, []).append(k)
        sw = grid.switches
        self._switch_edge = np.full(sw.size, -1, dtype=np.int64)
        self._switch_node = np.full(sw.size, -1, dtype=np.int64)
        node_rows = _rows(self._node_id, sw["node"].astype(np.int64))
        for s, (element, node_row) in enumerate(zip(sw["element"].tolist(), node_rows.tolist(), strict=True)):
            cands = by_id.get(int(element), [])
            ends = [k for k in cands if node_row in (self._edges[k].a, self._edges[k].b)]
            pick = ends[0] if ends else cands[0] if cands else -1
            self._switch_edge[s] = pick
            self._switch_node[s] = node_row
        kinds = grid.switch_kinds if grid.switch_kinds.size == sw.size else np.full(sw.size, "", dtype=object)
        self._switch_kind = [str(k) if k is not None else "" for k in kinds]
        self._switch_symbol = [SWITCH_SYMBOLS.get(k.strip().upper(), "switch") for k in self._switch_kind]
        self._switch_name = [str(x) for x in grid.switch_names]
        self._edge_switches: dict[int, list[int]] = {}
        for s, k in enumerate(self._switch_edge.tolist()):
            if k >= 0:
                self._edge_switches.setdefault(k, []).append(s)

    # -- public --------------------------------------------------------------------------------------
    def catalogue(self) -> dict[str, Any]:
        """The views (substations and feeders) and a search index of every named element.

        ``index`` rows are ``[name, kind, id, at, view]``: ``at`` the id of the element to centre on
        (the node of a load), ``view`` ``"substation:<id>"`` or ``"feeder:<id>"``.
        """
        subs = []
        for s, sid in enumerate(self._sub_ids):
            feeders = [self._feeder_ids[b.feeder] for b in self._bays.get(int(sid), []) if b.feeder >= 0]
            subs.append({"id": int(sid), "name": self._sub_names[s], "kind": self._sub_kind[s], "feeders": feeders})
        feeders_out = [
            {"id": int(fid), "name": self._feeder_names[f], "substation": int(self._feeder_sub[f])}
            for f, fid in enumerate(self._feeder_ids)
        ]
        return {"name": self.name, "substations": subs, "feeders": feeders_out, "index": self._index()}

    def _node_view(self, row: int) -> str:
        if self._is_bus[row]:
            return f"substation:{int(self._bus_sub[row])}"
        f = int(self._member[row])
        return f"feeder:{self._feeder_ids[f]}" if f >= 0 else ""

    def _index(self) -> list[list[Any]]:
        rows: list[list[Any]] = []
        views = [self._node_view(r) for r in range(self._n)]
        for r in range(self._n):
            if views[r]:
                rows.append([self._node_name[r], "node", int(self._node_id[r]), int(self._node_id[r]), views[r]])
        edge_view: list[str] = []
        seen: set[int] = set()
        for e in self._edges:
            # a transformer shows above the bar it feeds; a line in the feeder of its non-busbar end
            end = (e.a if self._u_kv[e.a] < self._u_kv[e.b] else e.b) if e.trafo else e.b if self._is_bus[e.a] else e.a
            view = views[end]
            edge_view.append(view)
            if view and e.id not in seen:
                seen.add(e.id)
                rows.append([e.name, e.kind, e.id, int(self._node_id[end]), view])
        switch_ids = self._grid.switches["id"].tolist()
        for s, k in enumerate(self._switch_edge.tolist()):
            view = edge_view[k] if k >= 0 else ""
            if view:
                rows.append([self._switch_name[s], "switch", int(switch_ids[s]), int(switch_ids[s]), view])
        for component in APPLIANCE_COMPONENTS:
            array = self._grid.component(component)
            if not array.size:
                continue
            node_rows = _rows(self._node_id, array["node"].astype(np.int64)).tolist()
            for name, i, r in zip(self._grid.names_of(component), array["id"].tolist(), node_rows, strict=True):
                if views[r]:
                    rows.append([str(name), component, int(i), int(self._node_id[r]), views[r]])
        return rows

    def view(
        self, *, substation: int | None = None, feeder: int | None = None, closed: npt.ArrayLike | None = None
    ) -> dict[str, Any]:
        """The geometry of one substation (its bars, what feeds it, its feeders) or of one feeder.

        ``closed`` gives the present switch states (the grid's switch order); without it, the
        normal states. Raises :class:`KeyError` for an unknown substation or feeder id and
        :class:`ValueError` when neither or both are given.
        """
        if (substation is None) == (feeder is None):
            raise ValueError("give a substation or a feeder")
        states = self._normal_closed if closed is None else np.asarray(closed, dtype=bool)
        if states.shape != self._normal_closed.shape:
            raise ValueError(f"{self.name}: {states.size} switch states for {self._normal_closed.size} switches")
        if substation is not None:
            if int(substation) not in self._sub_row:
                raise KeyError(f"no substation {substation}")
            sid = int(substation)
            bays = self._bays.get(sid, [])
            title = {"kind": "substation", "id": sid, "name": self._sub_names[self._sub_row[sid]]}
            incoming = self._incoming.get(sid, [])
            couplers = self._couplers.get(sid, [])
            sections = [int(r) for r in np.flatnonzero(self._bus_sub == sid)]
        else:
            assert feeder is not None
            f = self._feeder_row.get(int(feeder))
            if f is None:
                raise KeyError(f"no feeder {feeder}")
            sid = self._feeder_sub[f]
            bays = [b for b in self._bays.get(sid, []) if b.feeder == f]
            if not bays:
                bays = [_Bay(-1, f, -1, -1, None, self._width[f])]
            title = {"kind": "feeder", "id": int(feeder), "name": self._feeder_names[f]}
            incoming, couplers = [], []
            sections = sorted({b.section for b in bays if b.section >= 0})
        return _ViewBuilder(self, states).build(title, sections, bays, incoming, couplers)


class _ViewBuilder:
    """Absolute coordinates of one view: bars, nodes, terminals, branches, switches."""

    def __init__(self, diagram: GridDiagram, closed: npt.NDArray[np.bool_]) -> None:
        self.d = diagram
        self.closed = closed
        self.nodes: list[dict[str, Any]] = []
        self.bars: list[dict[str, Any]] = []
        self.branches: list[dict[str, Any]] = []
        self.bands: list[dict[str, Any]] = []
        self.sources: list[dict[str, Any]] = []
        self.at: dict[int, tuple[float, float]] = {}  # node row -> position of the nodes drawn as such
        self.bar_x: dict[int, tuple[float, float]] = {}
        self.drawn: list[tuple[int, list[list[float]], int]] = []  # (edge, polyline, node row at its start)

    def build(
        self,
        title: dict[str, Any],
        sections: list[int],
        bays: list[_Bay],
        incoming: list[int],
        couplers: list[int],
    ) -> dict[str, Any]:
        d = self.d
        by_section: dict[int, list[_Bay]] = {s: [] for s in sections}
        for bay in bays:
            by_section.setdefault(bay.section, []).append(bay)
        inc_by_section: dict[int, list[int]] = {}
        for k in incoming:
            e = d._edges[k]
            sec = e.b if d._u_kv[e.a] >= d._u_kv[e.b] else e.a  # the lower-voltage end, as the layout took it
            inc_by_section.setdefault(sec, []).append(k)
        src_by_section: dict[int, list[int]] = {}
        source = d._grid.component("source")
        if source.size and title["kind"] == "substation":
            src_rows = _rows(d._node_id, source["node"].astype(np.int64)).tolist()
            for s, r in enumerate(src_rows):
                if r in by_section:
                    src_by_section.setdefault(r, []).append(s)
        x = 0.0  # the next free column
        for section, section_bays in by_section.items():
            start = x
            for bay in sorted(section_bays, key=lambda b: (b.feeder < 0, b.feeder, b.edge)):
                self._bay(bay, x)
                x += bay.width + 1.0
            above = len(inc_by_section.get(section, [])) + len(src_by_section.get(section, []))
            x = max(x, start + max(above, 1) + 1.0)
            if section < 0:
                continue
            bar = {
                "id": int(d._node_id[section]),
                "name": d._node_name[section],
                "x0": start - 0.4,
                "x1": x - 2.0 + 0.4,
                "y": 0.0,
                "u_rated_kv": d._u_kv[section],
            }
            self.bars.append(bar)
            self.bar_x[section] = (bar["x0"], bar["x1"])
            col = start
            for k in inc_by_section.get(section, []):
                self._incoming(k, section, col)
                col += 1.0
            for s in src_by_section.get(section, []):
                self.sources.append(
                    {
                        "id": int(source["id"][s]),
                        "name": str(d._grid.names_of("source")[s]),
                        "x": col,
                        "y": -1.0,
                        "points": [[col, -1.0], [col, 0.0]],
                    }
                )
                col += 1.0
        self._couplers(couplers)
        switches = self._switches()
        xs = [p[0] for _, pl, _ in self.drawn for p in pl] + [b["x0"] for b in self.bars] + [b["x1"] for b in self.bars]
        ys = [p[1] for _, pl, _ in self.drawn for p in pl] + [0.0] + [n["y"] for n in self.nodes]
        xs += [n["x"] for n in self.nodes]
        bounds = [min(xs, default=0.0) - 1, min(ys) - 1, max(xs, default=0.0) + 1, max(ys) + 1]
        return {
            "grid": d.name,
            "view": title,
            "bars": self.bars,
            "bands": self.bands,
            "nodes": self.nodes,
            "branches": self.branches,
            "switches": switches,
            "sources": self.sources,
            "bounds": bounds,
        }

    def _node(
        self, row: int, x: float, y: float, *, weight: int, target: tuple[str, int] | None = None, band: int = -1
    ) -> None:
        d = self.d
        entry: dict[str, Any] = {
            "band": band,
            "id": int(d._node_id[row]),
            "name": d._node_name[row],
            "x": x,
            "y": y,
            "u_rated_kv": d._u_kv[row],
            "weight": weight,
            "terminal": target is not None,
        }
        if target is not None:
            entry["target"] = {"kind": target[0], "id": target[1]}
        self.nodes.append(entry)

    def _branch(self, k: int, points: list[list[float]], *, first: int, role: str) -> None:
        e = self.d._edges[k]
        self.branches.append(
            {
                "id": e.id,
                "name": e.name,
                "kind": e.kind,
                "component": e.component,
                "from_node": int(self.d._node_id[e.a]),
                "to_node": int(self.d._node_id[e.b]),
                "role": role,
                "points": points,
            }
        )
        self.drawn.append((k, points, first))

    def _bay(self, bay: _Bay, x0: float) -> None:
        d = self.d
        bar_y = 0.0
        if bay.feeder < 0:
            # a terminal straight below the bar
            self._node(bay.node, x0, 1.0, weight=1, target=bay.target)
            self._branch(bay.edge, [[x0, bar_y], [x0, 1.0]], first=bay.section, role="bay")
            return
        f = bay.feeder
        self.bands.append(
            {"feeder": int(d._feeder_ids[f]), "name": d._feeder_names[f], "x0": x0 - 0.5, "x1": x0 + bay.width - 0.5}
        )
        stack = list(d._children[f])
        items = d._items
        while stack:
            i = stack.pop()
            it = items[i]
            x, y = x0 + it.x, it.y
            band = int(d._feeder_ids[f])
            if it.terminal:
                self._node(it.node, x, y, weight=1, target=it.target, band=band)
            else:
                self._node(it.node, x, y, weight=it.weight, band=band)
                self.at[it.node] = (x, y)
            if it.edge >= 0:
                p = items[it.parent]
                e = d._edges[it.edge]
                if p.parent >= 0:
                    px, py, first = x0 + p.x, p.y, p.node
                else:  # from the bar straight down
                    px, py, first = x, bar_y, (e.a if d._is_bus[e.a] else e.b)
                pts = [[px, py], [x, y]] if px == x else [[px, py], [x, py], [x, y]]
                self._branch(it.edge, pts, first=first, role="terminal" if it.terminal else "tree")
            stack.extend(d._children[i])
        for k in d._loops.get(f, []):
            e = d._edges[k]
            pa = self.at.get(e.a, (x0, bar_y) if d._is_bus[e.a] else None)
            pb = self.at.get(e.b, (x0, bar_y) if d._is_bus[e.b] else None)
            if pa is None or pb is None:
                continue
            if d._is_bus[e.a]:
                pa = (pb[0] + 0.5, bar_y)
            if d._is_bus[e.b]:
                pb = (pa[0] + 0.5, bar_y)
            mid = max(pa[0], pb[0]) + 0.5
            self._branch(k, [[pa[0], pa[1]], [mid, pa[1]], [mid, pb[1]], [pb[0], pb[1]]], first=e.a, role="loop")

    def _incoming(self, k: int, section: int, col: float) -> None:
        d = self.d
        e = d._edges[k]
        prim = e.a if e.b == section else e.b
        target: tuple[str, int] | None = None
        if d._is_bus[prim]:
            target = ("substation", int(d._bus_sub[prim]))
        elif d._member[prim] >= 0:
            target = d._view_of_feeder(int(d._member[prim]))
        self._node(prim, col, -2.0, weight=1, target=target or ("substation", int(d._bus_sub[section])))
        self._branch(k, [[col, -2.0], [col, 0.0]], first=prim, role="incoming")

    def _couplers(self, couplers: list[int]) -> None:
        d = self.d
        for k in couplers:
            e = d._edges[k]
            if e.a not in self.bar_x or e.b not in self.bar_x:
                continue
            left, right = sorted((e.a, e.b), key=lambda r: self.bar_x[r][0])
            x_a, x_b = self.bar_x[left][1], self.bar_x[right][0]
            if x_b > x_a:
                self._branch(k, [[x_a, 0.0], [x_b, 0.0]], first=left, role="coupler")
            else:  # sections not side by side: round above the bars
                self._branch(k, [[x_a, 0.0], [x_a, -0.5], [x_b, -0.5], [x_b, 0.0]], first=left, role="coupler")

    def _switches(self) -> list[dict[str, Any]]:
        d = self.d
        out: list[dict[str, Any]] = []
        sw = d._grid.switches
        for k, points, first in self.drawn:
            for s in d._edge_switches.get(k, []):
                node_row = int(d._switch_node[s])
                if int(sw["side"][s]) == SIDE_LINK:
                    px, py = _along(points, 0.5 * _length(points))
                else:
                    dist = min(SWITCH_OFFSET, 0.45 * _length(points))
                    px, py = _along(points if node_row == first else points[::-1], dist)
                out.append(
                    {
                        "id": int(sw["id"][s]),
                        "name": d._switch_name[s],
                        "kind": d._switch_kind[s],
                        "symbol": d._switch_symbol[s],
                        "closed": bool(self.closed[s]),
                        "normally_open": not bool(d._normal_closed[s]),
                        "branch": int(d._edges[k].id),
                        "node": int(d._node_id[node_row]) if node_row >= 0 else -1,
                        "x": px,
                        "y": py,
                    }
                )
        return out


def build_diagram(grid: Grid, topology: Topology | None = None) -> GridDiagram:
    """Return the single-line diagrams of ``grid``, laid out under its present (normal) switch states."""
    return GridDiagram(grid, topology if topology is not None else analyse_topology(grid))


# -- helpers ---------------------------------------------------------------------------------------------
def _graph(n: int, u: IntArray, v: IntArray) -> sp.csr_array:
    return sp.csr_array((np.ones(u.size, dtype=np.int8), (u, v)), shape=(n, n))


def _rows(node_id: IntArray, ids: IntArray) -> IntArray:
    order = np.argsort(node_id, kind="stable")
    pos = np.clip(np.searchsorted(node_id, ids, sorter=order), 0, max(node_id.size - 1, 0))
    return order[pos].astype(np.int64)


def _edges(grid: Grid) -> list[_Edge]:
    node_id = grid.component("node")["id"].astype(np.int64)
    out: list[_Edge] = []
    for component in BRANCH_COMPONENTS:
        array = grid.component(component)
        if not array.size:
            continue
        kinds = grid.column(component, "kind", component)
        a = _rows(node_id, array["from_node"].astype(np.int64)).tolist()
        b = _rows(node_id, array["to_node"].astype(np.int64)).tolist()
        for i, nm, kind, ra, rb in zip(array["id"].tolist(), grid.names_of(component), kinds, a, b, strict=True):
            out.append(_Edge(component, int(i), str(nm), str(kind or component), ra, rb, component == "transformer"))
    array = grid.component(_THREE_WINDING)
    if array.size:
        ends = [_rows(node_id, array[f"node_{k}"].astype(np.int64)).tolist() for k in (1, 2, 3)]
        for r, (i, nm) in enumerate(zip(array["id"].tolist(), grid.names_of(_THREE_WINDING), strict=True)):
            for other in (ends[1][r], ends[2][r]):
                out.append(_Edge(_THREE_WINDING, int(i), str(nm), _THREE_WINDING, ends[0][r], other, True))
    return out


def _length(points: list[list[float]]) -> float:
    return float(sum(abs(q[0] - p[0]) + abs(q[1] - p[1]) for p, q in itertools.pairwise(points)))


def _along(points: list[list[float]], dist: float) -> tuple[float, float]:
    """The point ``dist`` along an orthogonal polyline from its first point."""
    left = dist
    for p, q in itertools.pairwise(points):
        seg = abs(q[0] - p[0]) + abs(q[1] - p[1])
        if seg >= left and seg > 0:
            t = left / seg
            return p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])
        left -= seg
    return points[-1][0], points[-1][1]
