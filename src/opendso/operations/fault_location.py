"""Fault location: ranked candidate sections from a protection trip and fault-passage indicators.

:func:`locate_fault` takes the grid with its switch states *before* the trip (the tripped
switch is taken as closed whatever the grid says, so the states read after the trip do too),
the name of the breaker or recloser that tripped, and the fault-passage indicators the field
reports (element name, or point name ``<element>/fpi``, -> picked up), as
:func:`~opendso.telemetry.simulator.indicators.with_fault_indicators` places them: one per switch
and per branch sensor (power or current sensor at a branch end). It returns every section
downstream of the tripped switch as a :class:`Candidate`, most likely first.

How it decides
--------------
- The supply tree is the one of :func:`~opendso.grid.topology.analyse_topology` (each node's
  predecessor towards the source). An indicator sits at one end of one branch of that tree and
  is directional: it picks up for a fault *downstream* of where it sits only (a fault fed back
  by DER downstream does not count). At the upstream end of a branch it sees the branch itself
  and everything below its far node; at the downstream end only what lies below that node.
- A *section* is a set of nodes and branch bodies that the same indicators see: between the
  last indicators that saw fault current and the first ones that did not. The tripped switch's
  downstream part is cut into such sections by the indicators given (indicators not in the
  mapping are unknown and cut nothing); a branch with indicators at both ends is a section of
  its own (the line between them).
- Each section predicts which indicators pick up. The observed states are scored against every
  prediction with two error rates (an indicator that fails to pick up, ``miss_probability``, is
  more common than one that picks up without fault current, ``false_pickup_probability``), and
  the likelihoods are normalised over the sections (the posterior, uniform prior). A section's
  ``confidence`` is that posterior multiplied by ``mismatch_penalty`` for every indicator that
  disagrees with it, so contradictory indicators (one picked up below one that did not) lower
  the confidence of every answer, the best one's too, and an answer still comes. A consistent
  set of indicators gives exactly one section without a mismatch.
- With ``fault_current_a``, the IEC 60909 initial short-circuit currents Ik'' (minimum and
  maximum case, :func:`~opendso.calc.shortcircuit.run_short_circuit`) at the section's nodes
  give the range a fault there can produce. The relative distance of the measured current from
  that range (zero inside it) ranks the nodes within each section and multiplies the section's
  likelihood by ``exp(-(d / current_tolerance)^2 / 2)`` before normalising; nodes inside their
  range are ordered by the distance of the measured current from a bolted fault at nominal
  voltage there (the maximum case's Ik'' divided by its voltage factor c).

Bad input raises :class:`~opendso.errors.UnknownSwitchError` (the tripped switch) or
:class:`~opendso.errors.InputError` (naming every indicator that is neither a switch nor a
branch sensor of the grid, or a trip that supplies nothing); nothing else is refused.
Indicators elsewhere than below the tripped switch say nothing about this fault and are left out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.sparse import csgraph

from opendso.calc.shortcircuit import Case, FaultType, run_short_circuit
from opendso.errors import InputError, UnknownSwitchError
from opendso.grid.model import BRANCH_COMPONENTS, SIDE_FROM, SIDE_LINK, SIDE_TO, Grid
from opendso.grid.topology import Topology, analyse_topology

__all__ = ["Candidate", "locate_fault"]

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Sensor tables whose branch sensors carry fault-passage indicators (as the field simulator places them).
_INDICATOR_SENSORS = ("sym_power_sensor", "sym_current_sensor", "asym_power_sensor", "asym_current_sensor")
#: Measured terminal types of a branch sensor: from end, to end (power-grid-model).
_TERMINAL_FROM = 0
_TERMINAL_TO = 1
_FPI_SUFFIX = "/fpi"


@dataclass(frozen=True)
class Candidate:
    """One candidate faulted section: its nodes (best current match first), branches and confidence in [0, 1].

    ``mismatches`` names the indicators whose state disagrees with a fault in this section.
    ``current_error`` is the relative distance of the measured fault current from the IEC 60909
    range at the best-matching node (None without a measured current); ``ik_range_a`` gives
    that range (min case, max case) per node, aligned with ``nodes``.
    """

    nodes: tuple[str, ...]
    branches: tuple[str, ...]
    confidence: float
    mismatches: tuple[str, ...]
    current_error: float | None = None
    ik_range_a: tuple[tuple[float, float], ...] | None = None

    @property
    def elements(self) -> tuple[str, ...]:
        """Branch and node names of the section, branches first."""
        return self.branches + self.nodes


@dataclass(frozen=True)
class _Tree:
    """The supply tree in preorder: a node's subtree is the rows ``pos[r] <= pos < pos[r] + size[r]``."""

    pos: IntArray
    size: IntArray
    parent: IntArray
    branch: IntArray  # branch id joining each node row to its parent (-1 at roots)

    def within(self, rows: IntArray, roots: IntArray) -> BoolArray:
        """Return, for each of ``rows``, whether it lies in the subtree of any of ``roots``."""
        out = np.zeros(rows.size, dtype=bool)
        p = self.pos[rows]
        for r in roots.tolist():
            out |= (p >= self.pos[r]) & (p < self.pos[r] + self.size[r])
        return out


@dataclass(frozen=True)
class _Position:
    """What an indicator or the tripped switch sees downstream: subtrees of ``roots``, branch ``body`` (-1: none)."""

    roots: IntArray
    body: int


def locate_fault(
    grid: Grid,
    *,
    tripped: str,
    indicators: Mapping[str, bool],
    fault_current_a: float | None = None,
    fault_type: FaultType | str = FaultType.THREE_PHASE,
    miss_probability: float = 0.05,
    false_pickup_probability: float = 0.01,
    current_tolerance: float = 0.1,
    mismatch_penalty: float = 0.5,
) -> list[Candidate]:
    """Return the sections below switch ``tripped`` as candidates for the fault, most likely first.

    ``grid`` holds the switch states before the trip; ``indicators`` maps fault-passage indicator
    element names (switches, branch sensors; ``<element>/fpi`` point names too) to picked up or
    not; ``fault_current_a`` is the measured fault current (A), when there is one.
    """
    if not 0 < miss_probability < 1 or not 0 < false_pickup_probability < 1:
        raise InputError("miss_probability and false_pickup_probability must lie strictly between 0 and 1")
    if not 0 < mismatch_penalty <= 1 or not current_tolerance > 0:
        raise InputError("mismatch_penalty must lie in (0, 1] and current_tolerance be positive")
    if fault_current_a is not None and not (math.isfinite(fault_current_a) and fault_current_a > 0):
        raise InputError(f"fault_current_a must be a positive current in A, not {fault_current_a}")
    switch_rows = np.flatnonzero(grid.switch_names == tripped)
    if not switch_rows.size:
        raise UnknownSwitchError(tripped)
    trip_row = int(switch_rows[0])
    if not grid.switches["closed"][trip_row]:
        closed = grid.switches["closed"].copy()
        closed[trip_row] = 1
        grid = grid.with_switch_states(closed)

    positions = _indicator_positions(grid, indicators)
    topology = analyse_topology(grid)
    tree = _supply_tree(topology)
    branch_child = _branch_children(tree)
    region = _position(grid, branch_child, tree, *_switch_end(grid, trip_row))
    if region is None:
        raise InputError(f"switch {tripped!r} supplies nothing downstream under the switch states given")

    # -- the elements below the tripped switch: nodes, and tree branch bodies ---------------------
    n = int(topology.node_id.size)
    all_rows = np.arange(n, dtype=np.int64)
    node_rows = all_rows[tree.within(all_rows, region.roots)]
    child_rows = node_rows[tree.branch[node_rows] >= 0]
    body_child = child_rows[tree.within(tree.parent[child_rows], region.roots)]
    if region.body >= 0:
        body_child = np.union1d(body_child, branch_child[region.body]).astype(np.int64)
    body_parent = tree.parent[body_child]

    # -- what each element predicts for each indicator that lies below the trip -------------------
    names: list[str] = []
    columns: list[BoolArray] = []
    observed: list[bool] = []
    for name, (end, picked) in positions.items():
        position = _position(grid, branch_child, tree, *end)
        if position is None or not tree.within(position.roots, region.roots).all():
            continue
        body_of = tree.branch[body_child] == position.body if position.body >= 0 else np.zeros(body_child.size, bool)
        columns.append(
            np.concatenate([tree.within(node_rows, position.roots), tree.within(body_parent, position.roots) | body_of])
        )
        names.append(name)
        observed.append(picked)
    n_elements = node_rows.size + body_child.size
    expected = np.stack(columns, axis=1) if columns else np.zeros((n_elements, 0), dtype=bool)
    seen = np.asarray(observed, dtype=bool)
    signatures, section = np.unique(expected, axis=0, return_inverse=True)
    section = np.asarray(section).reshape(-1)
    miss = signatures & ~seen
    false = ~signatures & seen
    log_l = (
        miss.sum(axis=1) * math.log(miss_probability)
        + (signatures & seen).sum(axis=1) * math.log1p(-miss_probability)
        + false.sum(axis=1) * math.log(false_pickup_probability)
        + (~signatures & ~seen).sum(axis=1) * math.log1p(-false_pickup_probability)
    ).astype(np.float64)

    # -- the measured fault current against IEC 60909 ranges ---------------------------------------
    node_names = grid.names_of("node")
    distance: npt.NDArray[np.float64] | None = None
    ik_lo = ik_hi = middle = np.zeros(0)
    if fault_current_a is not None:
        ik_lo, ik_hi, ik_nominal = _ik_ranges(grid, node_rows, fault_type)
        distance = np.maximum(0.0, np.maximum(ik_lo - fault_current_a, fault_current_a - ik_hi)) / fault_current_a
        middle = np.abs(np.log(fault_current_a / np.maximum(ik_nominal, 1e-9)))
        node_section = section[: node_rows.size]
        best = np.full(signatures.shape[0], np.inf)
        np.minimum.at(best, node_section, distance)
        # a section without nodes (a line between two indicators) takes the range of its ends
        at = np.searchsorted(node_rows, np.concatenate([body_parent, body_child]))
        ends_in = at < node_rows.size
        ends_in[ends_in] = node_rows[at[ends_in]] == np.concatenate([body_parent, body_child])[ends_in]
        body_d = np.where(ends_in, distance[np.minimum(at, node_rows.size - 1)], np.inf).reshape(2, -1)
        np.minimum.at(best, section[node_rows.size :], body_d.min(axis=0) if body_child.size else np.zeros(0))
        best = np.where(np.isfinite(best), best, 1.0)
        log_l = log_l - 0.5 * (best / current_tolerance) ** 2
    else:
        best = None

    weights = np.exp(log_l - log_l.max())
    confidence = weights / weights.sum() * mismatch_penalty ** (miss | false).sum(axis=1)
    branch_names = _branch_names(grid)
    candidates: list[Candidate] = []
    for s in range(signatures.shape[0]):
        members = np.flatnonzero(section[: node_rows.size] == s)
        if distance is not None:
            members = members[np.lexsort((node_rows[members], middle[members], distance[members]))]
        bodies = tree.branch[body_child[section[node_rows.size :] == s]]
        candidates.append(
            Candidate(
                nodes=tuple(str(node_names[r]) for r in node_rows[members]),
                branches=tuple(branch_names[int(b)] for b in bodies),
                confidence=float(confidence[s]),
                mismatches=tuple(names[k] for k in np.flatnonzero(miss[s] | false[s])),
                current_error=None if best is None else float(best[s]),
                ik_range_a=None
                if distance is None
                else tuple((float(ik_lo[m]), float(ik_hi[m])) for m in members.tolist()),
            )
        )
    # most likely first; among equals, the section with more indicators picked up above it (further down)
    order = sorted(range(len(candidates)), key=lambda s: (-candidates[s].confidence, -int(signatures[s].sum()), s))
    ranked = [candidates[s] for s in order]
    log.info(
        "event=fault_located tripped=%s sections=%d indicators=%d best_confidence=%.3f",
        tripped,
        len(ranked),
        len(names),
        ranked[0].confidence,
    )
    return ranked


# -- helpers ----------------------------------------------------------------------------------------


def _indicator_positions(grid: Grid, indicators: Mapping[str, bool]) -> dict[str, tuple[tuple[int, int, int], bool]]:
    """Return, per indicator name, its (branch id, side, end node id) and state; unknown names raise one error."""
    switch_row = {str(name): row for row, name in enumerate(grid.switch_names.tolist())}
    sensor_at: dict[str, tuple[int, int, int]] = {}
    for component in _INDICATOR_SENSORS:
        sensors = grid.sensors.get(component)
        if sensors is None or not sensors.size:
            continue
        for name, obj, terminal in zip(
            grid.names_of(component).tolist(),
            sensors["measured_object"].tolist(),
            sensors["measured_terminal_type"].tolist(),
            strict=True,
        ):
            if terminal in (_TERMINAL_FROM, _TERMINAL_TO):
                sensor_at.setdefault(str(name), (int(obj), SIDE_FROM if terminal == _TERMINAL_FROM else SIDE_TO, -1))
    found: dict[str, tuple[tuple[int, int, int], bool]] = {}
    unknown: list[str] = []
    for given, picked in indicators.items():
        name = given.removesuffix(_FPI_SUFFIX)
        if name in switch_row:
            found[given] = (_switch_end(grid, switch_row[name]), bool(picked))
        elif name in sensor_at:
            found[given] = (sensor_at[name], bool(picked))
        else:
            unknown.append(given)
    if unknown:
        raise InputError(
            f"{len(unknown)} fault-passage indicator(s) name no switch or branch sensor of grid "
            f"{grid.name!r}: {', '.join(sorted(unknown))}"
        )
    return found


def _switch_end(grid: Grid, row: int) -> tuple[int, int, int]:
    """Return (branch id, side, node id) of switch row ``row``."""
    switch = grid.switches[row]
    return int(switch["element"]), int(switch["side"]), int(switch["node"])


def _supply_tree(topology: Topology) -> _Tree:
    """Return the supply tree of ``topology`` (predecessors towards the source) in preorder."""
    parent = topology.pred_node.astype(np.int64)
    n = int(parent.size)
    hub = n
    has_parent = parent >= 0
    rows = np.arange(n, dtype=np.int64)
    roots = rows[~has_parent & topology.node_energised]
    graph = sparse.csr_array(
        (
            np.ones(int(has_parent.sum()) + roots.size, dtype=np.int8),
            (np.concatenate([parent[has_parent], np.full(roots.size, hub)]), np.concatenate([rows[has_parent], roots])),
        ),
        shape=(n + 1, n + 1),
    )
    order = csgraph.depth_first_order(graph, hub, directed=True, return_predecessors=False)
    order = np.asarray(order, dtype=np.int64)[1:]  # without the hub
    pos = np.full(n, n, dtype=np.int64)  # nodes off the tree sit after every subtree
    pos[order] = np.arange(order.size)
    size = np.zeros(n, dtype=np.int64)
    size[order] = 1
    for r in order[::-1].tolist():  # one pass over the tree, leaves first
        p = parent[r]
        if p >= 0:
            size[p] += size[r]
    return _Tree(pos=pos, size=size, parent=parent, branch=topology.pred_branch.astype(np.int64))


def _branch_children(tree: _Tree) -> dict[int, IntArray]:
    """Return, per tree branch id, the node rows it feeds (one, or more for a three-winding transformer)."""
    rows = np.flatnonzero(tree.branch >= 0)
    out: dict[int, list[int]] = {}
    for r, b in zip(rows.tolist(), tree.branch[rows].tolist(), strict=True):
        out.setdefault(int(b), []).append(int(r))
    return {b: np.asarray(v, dtype=np.int64) for b, v in out.items()}


def _position(
    grid: Grid, branch_child: Mapping[int, IntArray], tree: _Tree, branch: int, side: int, node: int
) -> _Position | None:
    """Return what an indicator at one end of ``branch`` sees downstream; None when the branch carries no supply."""
    children = branch_child.get(branch)
    if children is None:
        return None
    if side == SIDE_LINK:
        return _Position(children, branch)
    end = node if node >= 0 else _branch_end_node(grid, branch, side)
    end_row = int(grid.node_positions([end])[0]) if end >= 0 else -1
    if end_row in children.tolist():  # at the downstream end: only what lies below the node
        return _Position(np.array([end_row], dtype=np.int64), -1)
    return _Position(children, branch)


def _branch_end_node(grid: Grid, branch: int, side: int) -> int:
    """Return the node id at the from (``SIDE_FROM``) or to end of a two-terminal branch; -1 if not found."""
    key = "from_node" if side == SIDE_FROM else "to_node" if side == SIDE_TO else None
    if key is None:
        return -1
    for _, array in grid.iter_branches():
        hit = np.flatnonzero(array["id"] == branch)
        if hit.size:
            return int(array[key][hit[0]])
    return -1


def _branch_names(grid: Grid) -> dict[int, str]:
    """Return the source name of every branch (three-winding transformers included) by id."""
    out: dict[int, str] = {}
    for component in (*BRANCH_COMPONENTS, "three_winding_transformer"):
        array = grid.input.get(component)
        if array is None or not array.size:
            continue
        out.update(zip(array["id"].tolist(), (str(n) for n in grid.names_of(component).tolist()), strict=True))
    return out


def _ik_ranges(
    grid: Grid, node_rows: IntArray, fault_type: FaultType | str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return Ik'' (A) at ``node_rows`` (IEC 60909): the minimum, the maximum case, and the maximum without c."""
    names = [str(n) for n in grid.names_of("node")[node_rows].tolist()]
    low = run_short_circuit(grid, fault_type=fault_type, case=Case.MIN, nodes=names)
    high = run_short_circuit(grid, fault_type=fault_type, case=Case.MAX, nodes=names)
    lo = _aligned(low.node_rows, low.ik_a, node_rows)
    hi = _aligned(high.node_rows, high.ik_a, node_rows)
    nominal = hi / _aligned(high.node_rows, high.c_factor, node_rows)
    return np.minimum(lo, hi), np.maximum(lo, hi), nominal


def _aligned(result_rows: IntArray, values: npt.NDArray[np.float64], rows: IntArray) -> npt.NDArray[np.float64]:
    """Return ``values`` (given at ``result_rows``) at ``rows``."""
    order = np.argsort(result_rows)
    return np.asarray(values[order][np.searchsorted(result_rows[order], rows)], dtype=np.float64)
