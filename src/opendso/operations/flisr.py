"""FLISR planning: locate a fault, isolate its section, restore upstream and through normally-open points.

:func:`plan_flisr` is pure (no I/O, no clock but its own run time): it takes the grid as its
source gives it (switch states before the trip), the breaker or recloser that tripped and the
fault-passage indicators, and returns a :class:`FlisrPlan` whose :meth:`FlisrPlan.to_json` is
the object of ``opendso flisr --json``. :func:`simulate_fault_and_plan` first simulates a fault
at a node as the field simulator does (the feeder breaker trips; the indicators on the path
from the source to the fault pick up, :func:`~opendso.telemetry.simulator.indicators.indicators_on_fault_path`).

How it plans
------------
1. **Locate** with :func:`~opendso.operations.fault_location.locate_fault`; the plan works on the
   best candidate (every candidate is reported). The *interrupted region* is what the trip
   de-energised.
2. **Isolate**: the region is cut into *zones* by its closed remote-controlled switches; the
   zones holding the faulted section's nodes are the faulted zone, and every closed remote
   switch on its boundary is opened (the nearest switches on both sides of the fault).
3. **Restore upstream**: the tripped breaker recloses, unless it is itself the upstream
   boundary of the faulted zone. The tripped breaker counts as remote-controlled (protection
   and SCADA operate it).
4. **Restore downstream**: each de-energised healthy part left is a tree of zones; open remote
   switches joining it to an energised node are its ties, open remote switches between two of
   its zones (or between two such parts) may close too. A configuration opens some
   sectionalising switches inside the part, closes some of those inner switches, and closes at
   most one tie per resulting piece, making no loop; pieces without a tie stay off.
   Configurations are ranked by restored load (sum of the loads' ``p_specified``), then
   customers, then fewer switching operations, and checked in that order by batch power flow
   (power-grid-model) of the final state; the first without a *new* violation is the plan. The
   number of switches changed inside a part is at most its number of ties and inner switches
   (so every tie can be used and one more cut can shed a tail); :func:`exhaustive_flisr`
   searches every combination to show that this suffices.
5. **Restoration power flows** keep every generator of the interrupted region out of service
   (DER disconnects on loss of supply and reconnects only minutes later: IEEE 1547-2018's return
   to service after a trip, EN 50549-1's reconnection conditions), so the ties carry gross load; the loads
   of the interrupted region are multiplied by the cold-load-pickup factor.

A *violation* is a node voltage outside ``[u_min, u_max]`` p.u. at an energised node, or a
branch loading above ``loading_max`` (line current over its rated current, transformer power
over its rating). A violation is *new* when the element did not violate the same limit in the
pre-fault power flow of the source's base case. Only remote-controlled switches are operated:
the ``remote_controlled`` switch column of the model (``grid.extra["switch"]``) says which, and
every switch is when the source does not say; disconnectors never are (:func:`remote_controlled`).
Switches on feeders the trip did not interrupt are never opened (ties there are only closed).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from power_grid_model import CalculationMethod, ComponentType, PowerGridModel
from power_grid_model.errors import PowerGridError
from scipy import sparse
from scipy.sparse import csgraph

from opendso.errors import InputError, UnknownSwitchError
from opendso.grid.customers import customer_counts
from opendso.grid.model import BRANCH_COMPONENTS, SIDE_FROM, SIDE_LINK, SIDE_TO, Grid
from opendso.grid.topology import analyse_topology, path_from_source
from opendso.operations.fault_location import Candidate, locate_fault
from opendso.operations.switching.model import DeviceClass, GateConfig
from opendso.telemetry.simulator.indicators import BRANCH_TERMINALS, indicators_on_fault_path

__all__ = [
    "ExhaustiveResult",
    "FlisrLimits",
    "FlisrPlan",
    "Violation",
    "exhaustive_flisr",
    "fault_indicators",
    "feeder_breaker",
    "plan_flisr",
    "remote_controlled",
    "simulate_fault_and_plan",
]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

#: Power-flow scenarios evaluated per batch call while searching for the first feasible plan.
_BATCH = 16
#: Candidate configurations generated per de-energised part at most (the search is cut there).
_MAX_CANDIDATES = 5_000


@dataclass(frozen=True)
class FlisrLimits:
    """Voltage band (p.u.) and loading limit (fraction of the rating) a restoration must respect."""

    u_min: float = 0.9
    u_max: float = 1.1
    loading_max: float = 1.0

    def __post_init__(self) -> None:
        if not (0 < self.u_min < self.u_max and self.loading_max > 0 and math.isfinite(self.u_max)):
            raise InputError(
                f"limits: need 0 < u_min < u_max and loading_max > 0, got u_min={self.u_min}, "
                f"u_max={self.u_max}, loading_max={self.loading_max}"
            )


@dataclass(frozen=True)
class Violation:
    """One limit violated in a power flow: the element's name, the kind, its value and the limit."""

    element: str
    kind: str  # "undervoltage" | "overvoltage" | "overload"
    value: float
    limit: float

    def to_json(self) -> dict[str, Any]:
        """Return the violation as a JSON object."""
        return {"element": self.element, "kind": self.kind, "value": self.value, "limit": self.limit}


@dataclass(frozen=True)
class FlisrPlan:
    """A FLISR plan: where the fault is, what to open, what to close, and whom it brings back.

    ``isolate`` lists the switches to open, ``restore`` the (switch, "close"|"open") steps in order
    after them. Loads are in W; ``restored_nodes`` are the nodes outside the faulted section that
    the plan energises again.
    """

    grid: str
    fault: str | None
    tripped: str
    located: tuple[Candidate, ...]
    faulted_nodes: tuple[str, ...]
    isolate: tuple[str, ...]
    restore: tuple[tuple[str, str], ...]
    interrupted_nodes: tuple[str, ...]
    restored_nodes: tuple[str, ...]
    customers_interrupted: int
    customers_restored: int
    load_interrupted_w: float
    load_restored_w: float
    violations: tuple[Violation, ...]
    plan_ms: float
    converged: bool = True

    @property
    def customers_off(self) -> int:
        """Customers the plan leaves without supply."""
        return self.customers_interrupted - self.customers_restored

    def to_json(self) -> dict[str, Any]:
        """Return the object of ``opendso flisr --json`` (the README's contract)."""
        return {
            "grid": self.grid,
            "fault": self.fault,
            "located": [{"elements": list(c.elements), "confidence": c.confidence} for c in self.located],
            "isolate": list(self.isolate),
            "restore": [{"switch": s, "action": a} for s, a in self.restore],
            "customers": {
                "interrupted": self.customers_interrupted,
                "restored": self.customers_restored,
                "off": self.customers_off,
            },
            "violations": [v.to_json() for v in self.violations],
            "plan_ms": self.plan_ms,
        }


@dataclass(frozen=True)
class ExhaustiveResult:
    """The best restoration any combination of the relevant remote switches reaches within the limits."""

    load_restored_w: float
    customers_restored: int
    closed: BoolArray  # switch states of the best combination (aligned with grid.switches)
    combinations: int
    elapsed_s: float


# -- the grid as a graph ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Net:
    """Nodes (rows) and edges (branches; a three-winding transformer as two edges) with their switches."""

    n: int
    u: IntArray
    v: IntArray
    ok: BoolArray  # the edge would conduct with all its switches closed
    comp: tuple[str, ...]  # component per edge
    row: IntArray  # row in its component's array
    sw_edge: IntArray  # edge per switch (-1: none the planner can use)
    edge_switches: tuple[tuple[int, ...], ...]  # switch rows per edge
    source_rows: IntArray
    node_load_w: FloatArray
    node_customers: IntArray
    node_gen: BoolArray

    def edge_closed(self, sw_closed: npt.ArrayLike) -> BoolArray:
        """Return which edges conduct under the given switch states."""
        closed = np.asarray(sw_closed, dtype=bool)
        blocked = np.zeros(self.u.size, dtype=bool)
        hit = (self.sw_edge >= 0) & ~closed
        blocked[self.sw_edge[hit]] = True
        return self.ok & ~blocked

    def labels(self, edges: BoolArray, nodes: BoolArray | None = None) -> IntArray:
        """Return connected-component labels of the nodes under the given conducting edges."""
        sel = edges
        if nodes is not None:
            sel = sel & nodes[self.u] & nodes[self.v]
        graph = sparse.coo_matrix((np.ones(int(sel.sum())), (self.u[sel], self.v[sel])), shape=(self.n, self.n))
        _, lab = csgraph.connected_components(graph, directed=False)
        return np.asarray(lab, dtype=np.int64)

    def energised(self, edges: BoolArray) -> BoolArray:
        """Return which nodes are connected to an in-service source."""
        lab = self.labels(edges)
        live = np.zeros(int(lab.max(initial=-1)) + 1, dtype=bool)
        live[lab[self.source_rows]] = True
        return live[lab]

    def cycles(self, edges: BoolArray) -> int:
        """Return the cyclomatic number (independent loops) of the conducting graph."""
        lab = self.labels(edges)
        return int(edges.sum()) - self.n + int(np.unique(lab).size)


def _build_net(grid: Grid, customers: IntArray) -> _Net:
    node_ids = grid.component("node")["id"]
    n = int(node_ids.size)
    all_closed = grid.with_switch_states(np.ones(grid.switches.size, dtype=np.int8)) if grid.switches.size else grid
    us: list[IntArray] = []
    vs: list[IntArray] = []
    oks: list[BoolArray] = []
    comps: list[str] = []
    rows: list[IntArray] = []
    edge_of_id: dict[int, int] = {}
    offset = 0
    for component in BRANCH_COMPONENTS:
        arr = all_closed.input.get(component)
        if arr is None or not arr.size:
            continue
        us.append(grid.node_positions(arr["from_node"]))
        vs.append(grid.node_positions(arr["to_node"]))
        oks.append((arr["from_status"] == 1) & (arr["to_status"] == 1))
        comps += [component] * arr.size
        rows.append(np.arange(arr.size, dtype=np.int64))
        edge_of_id.update(zip(arr["id"].tolist(), range(offset, offset + arr.size), strict=True))
        offset += arr.size
    t3 = grid.input.get("three_winding_transformer")
    if t3 is not None and t3.size:
        for k, other in ((2, "node_2"), (3, "node_3")):
            us.append(grid.node_positions(t3["node_1"]))
            vs.append(grid.node_positions(t3[other]))
            oks.append((t3["status_1"] == 1) & (t3[f"status_{k}"] == 1))
            comps += ["three_winding_transformer"] * t3.size
            rows.append(np.arange(t3.size, dtype=np.int64))
    sw = grid.switches
    sw_edge = np.array([edge_of_id.get(int(e), -1) for e in sw["element"]], dtype=np.int64)
    sw_edge[sw["side"] == 3] = -1
    source = grid.component("source")
    src_rows = grid.node_positions(source["node"][source["status"] == 1]) if source.size else np.zeros(0, np.int64)
    loads = grid.component("sym_load")
    load_w = np.zeros(n)
    node_cust = np.zeros(n, dtype=np.int64)
    if loads.size:
        lrows = grid.node_positions(loads["node"])
        on = loads["status"] == 1
        np.add.at(load_w, lrows[on], np.nan_to_num(loads["p_specified"][on].astype(np.float64)))
        np.add.at(node_cust, lrows, customers)
    gens = grid.component("sym_gen")
    node_gen = np.zeros(n, dtype=bool)
    if gens.size:
        node_gen[grid.node_positions(gens["node"])] = True
    per_edge: list[list[int]] = [[] for _ in range(offset + (2 * t3.size if t3 is not None else 0))]
    for s, e in enumerate(sw_edge.tolist()):
        if e >= 0:
            per_edge[e].append(s)
    return _Net(
        edge_switches=tuple(tuple(x) for x in per_edge),
        n=n,
        u=np.concatenate(us) if us else np.zeros(0, np.int64),
        v=np.concatenate(vs) if vs else np.zeros(0, np.int64),
        ok=np.concatenate(oks) if oks else np.zeros(0, bool),
        comp=tuple(comps),
        row=np.concatenate(rows) if rows else np.zeros(0, np.int64),
        sw_edge=sw_edge,
        source_rows=src_rows,
        node_load_w=load_w,
        node_customers=node_cust,
        node_gen=node_gen,
    )


def remote_controlled(grid: Grid, config: GateConfig | None = None) -> BoolArray:
    """Return which switches FLISR may operate: remote-controlled, and able to make and break load current.

    Remote control comes from the model's ``remote_controlled`` column (every switch when the
    source does not say); disconnectors (by switch kind, as the safety gate classes them with
    ``config``) are left out, since the gate never lets one make or break load current.
    """
    column = grid.extra.get("switch", {}).get("remote_controlled")
    remote = np.ones(grid.switches.size, dtype=bool) if column is None else np.asarray(column, dtype=bool).copy()
    if grid.switch_kinds.size == grid.switches.size:
        gate = config or GateConfig()
        remote &= np.array(
            [gate.device_class(k) is not DeviceClass.DISCONNECTOR for k in grid.switch_kinds], dtype=bool
        )
    return remote


def _switch_row(grid: Grid, name: str) -> int:
    rows = np.flatnonzero(grid.switch_names == name)
    if not rows.size:
        raise UnknownSwitchError(name)
    return int(rows[0])


def _customers(grid: Grid, customers: npt.ArrayLike | None) -> IntArray:
    """Return the customers per sym_load: given ones checked, else :func:`customer_counts`."""
    if customers is None:
        return customer_counts(grid)
    counts = np.asarray(customers)
    if counts.shape != (grid.count("sym_load"),) or (
        counts.size and (counts.min() < 0 or counts.dtype.kind not in "iu")
    ):
        raise InputError(f"customers: need one non-negative whole number per load ({grid.count('sym_load')} loads)")
    return counts.astype(np.int64)


def _node_row(grid: Grid, name: str) -> int:
    rows = np.flatnonzero(grid.names_of("node") == name)
    if not rows.size:
        raise InputError(f"node {name!r} is not in the grid {grid.name!r}")
    return int(rows[0])


# -- fault simulation ---------------------------------------------------------------------------------


def feeder_breaker(grid: Grid, fault_node: str) -> str:
    """Return the name of the switch that trips for a fault at ``fault_node``: the most upstream on its feeder.

    Raises :class:`~opendso.errors.InputError` naming the node when it is unknown, not energised,
    outside any feeder, or when no switch lies between its feeder's busbar and it.
    """
    row = _node_row(grid, fault_node)
    topology = analyse_topology(grid)
    feeder = int(topology.node_feeder[row])
    if feeder < 0:
        raise InputError(f"node {fault_node!r} lies outside any feeder (a busbar or an unfed section)")
    path = path_from_source(topology, int(topology.node_id[row]))
    if path is None:
        raise InputError(f"node {fault_node!r} is not energised: no fault current can flow to it")
    branch_feeder: dict[int, int] = {}
    for component, ids in topology.element_id.items():
        feeders = topology.branch_feeder.get(component)
        if feeders is not None:
            branch_feeder.update(zip(ids.tolist(), feeders.tolist(), strict=True))
    sw = grid.switches
    closed = sw["closed"] == 1
    for k, branch in enumerate(path.branches.tolist()):
        if branch_feeder.get(branch, -1) != feeder:
            continue
        on = np.flatnonzero((sw["element"] == branch) & closed)
        if on.size:
            upstream = int(path.nodes[k])
            at_upstream = on[sw["node"][on] == upstream]
            return str(grid.switch_names[at_upstream[0] if at_upstream.size else on[0]])
    raise InputError(f"no switch lies between the feeder busbar and node {fault_node!r}: nothing can trip")


def fault_indicators(grid: Grid, fault_node: str) -> dict[str, bool]:
    """Return every fault-passage indicator (switch and branch sensor names) and whether it picks up."""
    path = indicators_on_fault_path(grid, fault_node)
    if path is None:
        raise InputError(f"node {fault_node!r} is not energised: no fault current can flow to it")
    out = {str(name): bool(hit) for name, hit in zip(grid.switch_names, path.switches, strict=True)}
    for component in ("sym_power_sensor", "sym_current_sensor"):
        sensors = grid.sensors.get(component)
        if sensors is None or not sensors.size:
            continue
        on_branch = np.isin(sensors["measured_terminal_type"], BRANCH_TERMINALS)
        for name, sid in zip(grid.names_of(component)[on_branch], sensors["id"][on_branch], strict=True):
            out[str(name)] = int(sid) in path.sensors
    return out


def simulate_fault_and_plan(
    grid: Grid,
    fault_node: str,
    *,
    limits: FlisrLimits | None = None,
    remote: npt.ArrayLike | None = None,
    customers: npt.ArrayLike | None = None,
    cold_load_pickup: float = 1.0,
) -> FlisrPlan:
    """Simulate a fault at ``fault_node`` (breaker trip, indicators as the field simulator sets them) and plan.

    ``plan_ms`` covers the planning (location, isolation, restoration), not the simulation.
    """
    tripped = feeder_breaker(grid, fault_node)
    indicators = fault_indicators(grid, fault_node)
    plan = plan_flisr(
        grid,
        tripped=tripped,
        indicators=indicators,
        limits=limits,
        remote=remote,
        customers=customers,
        cold_load_pickup=cold_load_pickup,
    )
    return replace(plan, fault=fault_node)


# -- power flow of candidate configurations -----------------------------------------------------------


@dataclass
class _Evaluator:
    """Batch power flows of switch configurations of one grid, DER of the region off, loads scaled."""

    grid: Grid
    net: _Net
    limits: FlisrLimits
    region: BoolArray
    cold_load_pickup: float
    baseline: set[tuple[str, str]] = field(default_factory=set)
    base_input: dict[str, np.ndarray] = field(default_factory=dict)
    base_closed: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    calls: int = 0

    def prepare(self, base_closed: BoolArray, prefault: set[tuple[str, str]]) -> None:
        """Build the base input: switch states ``base_closed``, region DER off, region loads scaled."""
        self.baseline = prefault
        self.base_closed = base_closed.copy()
        g = self.grid.with_switch_states(base_closed.astype(np.int8))
        data = {c: a.copy() for c, a in g.pgm_input().items()}
        gens = data.get("sym_gen")
        if gens is not None and gens.size:
            rows = self.grid.node_positions(gens["node"])
            gens["status"] = np.where(self.region[rows], 0, gens["status"])
        loads = data.get("sym_load")
        if loads is not None and loads.size and self.cold_load_pickup != 1.0:
            rows = self.grid.node_positions(loads["node"])
            factor = np.where(self.region[rows], self.cold_load_pickup, 1.0)
            loads["p_specified"] = loads["p_specified"] * factor
            loads["q_specified"] = loads["q_specified"] * factor
        self.base_input = data

    def evaluate(self, configs: Sequence[BoolArray]) -> list[tuple[bool, list[Violation]]]:
        """Return (converged, new violations) per switch configuration."""
        if not configs:
            return []
        self.calls += 1
        changed = np.zeros(self.grid.switches.size, dtype=bool)
        for c in configs:
            changed |= c != self.base_closed
        touched_edges = np.unique(self.net.sw_edge[changed & (self.net.sw_edge >= 0)])
        update: dict[str, dict[str, np.ndarray]] = {}
        per_comp: dict[str, list[int]] = {}
        for e in touched_edges.tolist():
            per_comp.setdefault(self.net.comp[e], []).append(e)
        side = self.grid.switches["side"]
        for comp, edge_list in per_comp.items():
            edges = np.asarray(edge_list, dtype=np.int64)
            ids = self.base_input[comp]["id"][self.net.row[edges]]
            from_s = np.empty((len(configs), edges.size), dtype=np.int8)
            to_s = np.empty((len(configs), edges.size), dtype=np.int8)
            for k, c in enumerate(configs):
                from_ok = self.net.ok[edges].copy()
                to_ok = from_ok.copy()
                for j, e in enumerate(edge_list):
                    for s in self.net.edge_switches[e]:
                        if not c[s]:
                            if side[s] in (SIDE_FROM, SIDE_LINK):
                                from_ok[j] = False
                            if side[s] in (SIDE_TO, SIDE_LINK):
                                to_ok[j] = False
                from_s[k], to_s[k] = from_ok, to_ok
            update[comp] = {
                "id": np.broadcast_to(ids, (len(configs), ids.size)).copy(),
                "from_status": from_s,
                "to_status": to_s,
            }
        model = PowerGridModel(self.base_input, system_frequency=self.grid.frequency_hz)
        outputs = [ComponentType.node, *[c for c in ("line", "transformer") if c in self.base_input]]
        results: list[tuple[bool, list[Violation]]] = []
        try:
            if update:
                out = model.calculate_power_flow(
                    update_data=update,
                    calculation_method=CalculationMethod.newton_raphson,
                    output_component_types=outputs,
                    threading=0,
                )
            else:
                single = model.calculate_power_flow(
                    calculation_method=CalculationMethod.newton_raphson, output_component_types=outputs
                )
                out = {k: np.broadcast_to(v, (len(configs), *v.shape)) for k, v in single.items()}
        except PowerGridError:
            # some scenario did not converge: evaluate one by one to keep the others
            if len(configs) == 1:
                return [(False, [])]
            return [r for c in configs for r in self.evaluate([c])]
        for k in range(len(configs)):
            results.append((True, self._violations({c: out[c][k] for c in out}, new_only=True)))
        return results

    def _violations(self, out: Mapping[str, np.ndarray], *, new_only: bool) -> list[Violation]:
        found: list[Violation] = []
        node = out["node"]
        names = self.grid.names_of("node")
        live = node["energized"] == 1
        u = node["u_pu"]
        for kind, mask, limit in (
            ("undervoltage", live & (u < self.limits.u_min), self.limits.u_min),
            ("overvoltage", live & (u > self.limits.u_max), self.limits.u_max),
        ):
            for r in np.flatnonzero(mask).tolist():
                name = str(names[r])
                if not (new_only and (name, kind) in self.baseline):
                    found.append(Violation(name, kind, float(u[r]), limit))
        for comp in ("line", "transformer"):
            if comp not in out:
                continue
            loading = np.nan_to_num(out[comp]["loading"])
            bnames = self.grid.names_of(comp)
            for r in np.flatnonzero(loading > self.limits.loading_max).tolist():
                name = str(bnames[r])
                if not (new_only and (name, "overload") in self.baseline):
                    found.append(Violation(name, "overload", float(loading[r]), self.limits.loading_max))
        return found

    def prefault(self) -> set[tuple[str, str]]:
        """Return the (element, kind) violations of the source's base case."""
        model = PowerGridModel(self.grid.pgm_input(), system_frequency=self.grid.frequency_hz)
        outputs = [ComponentType.node, *[c for c in ("line", "transformer") if c in self.grid.input]]
        try:
            out = model.calculate_power_flow(
                calculation_method=CalculationMethod.newton_raphson, output_component_types=outputs
            )
        except PowerGridError:
            return set()
        return {(v.element, v.kind) for v in self._violations(out, new_only=False)}


# -- the planner ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """A de-energised healthy part: its zones, the switchable links between zones, and its ties.

    A link is a branch between two zones of the part: closed by default with a remote switch
    that may open (a sectionalising switch), or open with remote switches that may close (a tie
    inside the part). A tie is a branch joining a zone to an energised node, closed by closing
    its open switches.
    """

    zones: tuple[int, ...]
    zone_load: dict[int, float]
    zone_customers: dict[int, int]
    links: tuple[tuple[tuple[int, ...], int, int, bool], ...]  # (switch rows, zone a, zone b, closed now)
    ties: tuple[tuple[tuple[int, ...], int], ...]  # (switch rows, zone)


@dataclass(frozen=True)
class _Option:
    """One configuration of one part: switches to open and to close, what it restores."""

    opened: tuple[int, ...]
    closed: tuple[int, ...]
    load_w: float
    customers: int
    zones: frozenset[int]


def _max_changes(part: _Part) -> int:
    """Most switching changes inside a part worth trying: one per tie and inner switch."""
    n_internal = sum(1 for link in part.links if not link[3])
    return min(len(part.links), len(part.ties) + n_internal)


def _part_options(part: _Part, max_changes: int) -> list[_Option]:
    """Enumerate the radial configurations of one part with at most ``max_changes`` links changed.

    At most one tie per piece, no loop; the enumeration stops after ``_MAX_CANDIDATES`` sets of
    changed links (a part of very many zones: the plan is then feasible, its optimality unproven).
    """
    options: dict[tuple[frozenset[int], tuple[int, ...]], _Option] = {}
    zone_index = {z: k for k, z in enumerate(part.zones)}
    ties_of: dict[int, list[int]] = {}
    for k, (_, zone) in enumerate(part.ties):
        ties_of.setdefault(zone, []).append(k)
    generated = 0
    for n_changes in range(min(max_changes, _max_changes(part)) + 1):
        for changed in itertools.combinations(range(len(part.links)), n_changes):
            generated += 1
            if generated > _MAX_CANDIDATES:
                break
            flip = set(changed)
            parent = list(range(len(part.zones)))

            def find(x: int, parent: list[int] = parent) -> int:
                while parent[x] != x:
                    parent[x] = parent[parent[x]]
                    x = parent[x]
                return x

            loop = False
            for k, (_, a, b, closed_now) in enumerate(part.links):
                if closed_now == (k in flip):
                    continue  # this link is open in the configuration
                ra, rb = find(zone_index[a]), find(zone_index[b])
                if ra == rb:
                    loop = True
                    break
                parent[ra] = rb
            if loop:
                continue
            pieces: dict[int, list[int]] = {}
            for z in part.zones:
                pieces.setdefault(find(zone_index[z]), []).append(z)
            piece_zones = list(pieces.values())
            choices = [[-1, *(t for z in zones for t in ties_of.get(z, []))] for zones in piece_zones]
            opened = tuple(r for k in changed if part.links[k][3] for r in part.links[k][0])
            closed_links = tuple(r for k in changed if not part.links[k][3] for r in part.links[k][0])
            for choice in itertools.product(*choices):
                zones_on = frozenset(z for zs, t in zip(piece_zones, choice, strict=True) if t >= 0 for z in zs)
                ties_on = tuple(sorted(r for t in choice if t >= 0 for r in part.ties[t][0]))
                key = (zones_on, ties_on)
                prev = options.get(key)
                if prev is not None and len(prev.opened) + len(prev.closed) <= len(opened) + len(closed_links) + len(
                    ties_on
                ):
                    continue
                options[key] = _Option(
                    opened=opened,
                    closed=closed_links + ties_on,
                    load_w=float(sum(part.zone_load[z] for z in zones_on)),
                    customers=int(sum(part.zone_customers[z] for z in zones_on)),
                    zones=zones_on,
                )
    # an effect (zones restored through which ties) is kept with the fewest switching operations
    return sorted(options.values(), key=lambda o: (-o.load_w, -o.customers, len(o.opened) + len(o.closed)))


def plan_flisr(
    grid: Grid,
    *,
    tripped: str,
    indicators: Mapping[str, bool],
    limits: FlisrLimits | None = None,
    remote: npt.ArrayLike | None = None,
    customers: npt.ArrayLike | None = None,
    cold_load_pickup: float = 1.0,
    located: Sequence[Candidate] | None = None,
) -> FlisrPlan:
    """Return the FLISR plan for a trip of switch ``tripped`` with the given fault-passage indicators.

    ``grid`` holds the switch states before the trip; ``remote`` masks the remote-controlled
    switches (default :func:`remote_controlled`); ``customers`` gives each sym_load's customers
    (default :func:`~opendso.grid.customers.customer_counts`); ``located`` skips the location
    step with candidates found elsewhere (best first). See the module docstring for the method.
    """
    started = time.perf_counter()
    limits = limits or FlisrLimits()
    if not (math.isfinite(cold_load_pickup) and cold_load_pickup >= 1.0):
        raise InputError(f"cold_load_pickup must be a factor >= 1, not {cold_load_pickup}")
    trip_row = _switch_row(grid, tripped)
    pre_closed = grid.switches["closed"].astype(bool).copy()
    pre_closed[trip_row] = True
    pre_grid = grid if grid.switches["closed"][trip_row] else grid.with_switch_states(pre_closed.astype(np.int8))
    counts = _customers(grid, customers)
    remote_mask = remote_controlled(grid) if remote is None else np.asarray(remote, dtype=bool).copy()
    if remote_mask.shape != (grid.switches.size,):
        raise InputError(f"remote: {remote_mask.size} flags for {grid.switches.size} switches")
    remote_mask[trip_row] = True
    net = _build_net(grid, counts)

    candidates = (
        list(located) if located is not None else locate_fault(pre_grid, tripped=tripped, indicators=indicators)
    )
    if not candidates:
        raise InputError(f"no candidate section below switch {tripped!r}")
    best = candidates[0]

    # -- the interrupted region ---------------------------------------------------------------------
    e_pre = net.edge_closed(pre_closed)
    live_pre = net.energised(e_pre)
    trip_closed = pre_closed.copy()
    trip_closed[trip_row] = False
    e_trip = net.edge_closed(trip_closed)
    region = live_pre & ~net.energised(e_trip)

    node_names = grid.names_of("node")
    name_row = {str(n): k for k, n in enumerate(node_names)}
    faulted = np.zeros(net.n, dtype=bool)
    for name in best.nodes:
        if name in name_row:
            faulted[name_row[name]] = True
    if not faulted.any():
        for b in best.branches:
            comp_row = _branch_endpoints(grid, net, b)
            for r in comp_row:
                faulted[r] = True
    faulted &= region

    # -- zones: the region cut at closed remote switches --------------------------------------------
    sw_closed_remote = remote_mask & pre_closed & (net.sw_edge >= 0)
    cuttable = np.zeros(net.u.size, dtype=bool)
    cuttable[net.sw_edge[sw_closed_remote]] = True
    zone = net.labels(e_pre & ~cuttable, region)
    fault_zone = np.isin(zone, np.unique(zone[faulted])) & region

    # -- isolate: every closed remote switch on the faulted zone's boundary ---------------------------
    isolate_rows: list[int] = []
    boundary = e_pre & cuttable & (fault_zone[net.u] != fault_zone[net.v]) & (fault_zone[net.u] | fault_zone[net.v])
    breaker_isolates = False
    for e in np.flatnonzero(boundary).tolist():
        rows = np.flatnonzero((net.sw_edge == e) & sw_closed_remote)
        if trip_row in rows.tolist():
            breaker_isolates = True
            continue
        isolate_rows.append(_pick_switch(grid, rows, fault_zone))
    closed = pre_closed.copy()
    closed[isolate_rows] = False
    if breaker_isolates:
        closed[trip_row] = False
    e_now = net.edge_closed(closed)
    live_now = net.energised(e_now)
    restore: list[tuple[str, str]] = []
    if not breaker_isolates:
        restore.append((str(grid.switch_names[trip_row]), "close"))

    # -- downstream parts, the links inside them and their ties -----------------------------------
    dead = region & ~fault_zone & ~live_now
    open_remote = remote_mask & ~pre_closed & (net.sw_edge >= 0)
    # branches that close by closing remote switches that were open before the fault
    closable: list[tuple[int, tuple[int, ...]]] = []
    for e in np.unique(net.sw_edge[open_remote]).tolist():
        open_rows = tuple(int(r) for r in net.edge_switches[e] if not closed[r])
        if net.ok[e] and open_rows and all(open_remote[r] for r in open_rows):
            closable.append((e, open_rows))
    internal = [
        (e, rows) for e, rows in closable if dead[net.u[e]] and dead[net.v[e]] and zone[net.u[e]] != zone[net.v[e]]
    ]
    joined = e_now.copy()
    joined[[e for e, _ in internal]] = True
    part_label = net.labels(joined, dead)
    parts: list[_Part] = []
    for label in np.unique(part_label[dead]).tolist():
        in_part = dead & (part_label == label)
        zones_here = np.unique(zone[in_part])
        zl = {int(z): float(net.node_load_w[in_part & (zone == z)].sum()) for z in zones_here}
        zc = {int(z): int(net.node_customers[in_part & (zone == z)].sum()) for z in zones_here}
        links: list[tuple[tuple[int, ...], int, int, bool]] = []
        for e in np.flatnonzero(e_now & cuttable & in_part[net.u] & in_part[net.v]).tolist():
            if zone[net.u[e]] != zone[net.v[e]]:
                on_edge = np.flatnonzero((net.sw_edge == e) & sw_closed_remote)
                links.append(((_pick_switch(grid, on_edge, in_part),), int(zone[net.u[e]]), int(zone[net.v[e]]), True))
        for e, rows_t in internal:
            if in_part[net.u[e]]:
                links.append((rows_t, int(zone[net.u[e]]), int(zone[net.v[e]]), False))
        ties: list[tuple[tuple[int, ...], int]] = []
        for e, rows_t in closable:
            end_u, end_v = int(net.u[e]), int(net.v[e])
            for inside, outside in ((end_u, end_v), (end_v, end_u)):
                if in_part[inside] and live_now[outside]:
                    ties.append((rows_t, int(zone[inside])))
        parts.append(_Part(tuple(int(z) for z in zones_here), zl, zc, tuple(links), tuple(ties)))

    evaluator = _Evaluator(grid, net, limits, region, cold_load_pickup)
    evaluator.prepare(closed, evaluator.prefault())
    # the search widens one switching change at a time, and stops once everything is restored
    cache: dict[bytes, tuple[bool, list[Violation]]] = {}
    full = (sum(sum(p.zone_load.values()) for p in parts), sum(sum(p.zone_customers.values()) for p in parts))
    widest = max((_max_changes(p) for p in parts), default=0)
    for depth in range(widest + 1):
        part_options = [_part_options(p, depth) for p in parts]
        chosen, verdict = _search(part_options, closed, evaluator, cache)
        got = (sum(o.load_w for o in chosen), sum(o.customers for o in chosen))
        if verdict[0] and not verdict[1] and math.isclose(got[0], full[0]) and got[1] == full[1]:
            break
    final = closed.copy()
    for option in chosen:
        final[list(option.opened)] = False
        final[list(option.closed)] = True
    for option in chosen:
        restore += [(str(grid.switch_names[s]), "open") for s in option.opened]
        restore += [(str(grid.switch_names[s]), "close") for s in option.closed]

    live_final = net.energised(net.edge_closed(final))
    interrupted = region
    restored = region & live_final & ~fault_zone
    converged, violations = verdict
    elapsed_ms = (time.perf_counter() - started) * 1e3
    return FlisrPlan(
        grid=grid.name,
        fault=None,
        tripped=tripped,
        located=tuple(candidates),
        faulted_nodes=tuple(str(n) for n in node_names[fault_zone]),
        isolate=tuple(str(grid.switch_names[s]) for s in isolate_rows),
        restore=tuple(restore),
        interrupted_nodes=tuple(str(n) for n in node_names[interrupted]),
        restored_nodes=tuple(str(n) for n in node_names[restored]),
        customers_interrupted=int(net.node_customers[interrupted].sum()),
        customers_restored=int(net.node_customers[restored].sum()),
        load_interrupted_w=float(net.node_load_w[interrupted].sum()),
        load_restored_w=float(net.node_load_w[restored].sum()),
        violations=tuple(violations),
        plan_ms=round(elapsed_ms, 3),
        converged=converged,
    )


def _branch_endpoints(grid: Grid, net: _Net, name: str) -> list[int]:
    for component in BRANCH_COMPONENTS:
        hits = np.flatnonzero(grid.names_of(component) == name) if component in grid.input else np.zeros(0, np.int64)
        if hits.size:
            comps = np.asarray(net.comp, dtype=object)
            e = np.flatnonzero((comps == component) & (net.row == int(hits[0])))
            if e.size:
                return [int(net.u[e[0]]), int(net.v[e[0]])]
    return []


def _pick_switch(grid: Grid, rows: IntArray, side: BoolArray) -> int:
    """Of the switches on one branch, the one at a node on ``side`` (nearest the fault), else the first."""
    if rows.size == 1:
        return int(rows[0])
    nodes = grid.node_positions(grid.switches["node"][rows])
    near = rows[side[nodes]]
    return int(near[0] if near.size else rows[0])


def _search(
    part_options: list[list[_Option]],
    closed: BoolArray,
    evaluator: _Evaluator,
    cache: dict[bytes, tuple[bool, list[Violation]]],
) -> tuple[list[_Option], tuple[bool, list[Violation]]]:
    """Return the best combination of per-part options without a new violation, checked best first.

    ``cache`` keeps the verdict of every configuration evaluated (by its switch states), so a
    wider search does not repeat the power flows of a narrower one.
    """

    def verdicts(configs: list[BoolArray]) -> list[tuple[bool, list[Violation]]]:
        todo = [c for c in configs if c.tobytes() not in cache]
        for c, v in zip(todo, evaluator.evaluate(todo), strict=True):
            cache[c.tobytes()] = v
        return [cache[c.tobytes()] for c in configs]

    if not part_options:
        return [], verdicts([closed])[0]
    # every part can also stay off: the all-off combination is the fallback
    keep = max(1, int(_MAX_CANDIDATES ** (1 / len(part_options))))
    lists = [opts[:keep] for opts in part_options]
    combos = sorted(
        itertools.product(*lists),
        key=lambda c: (
            -sum(o.load_w for o in c),
            -sum(o.customers for o in c),
            sum(len(o.opened) + len(o.closed) for o in c),
        ),
    )
    for batch in _batches(combos):
        configs = []
        for combo in batch:
            c = closed.copy()
            for o in combo:
                c[list(o.opened)] = False
                c[list(o.closed)] = True
            configs.append(c)
        for combo, verdict in zip(batch, verdicts(configs), strict=True):
            if verdict[0] and not verdict[1]:
                return list(combo), verdict
    # nothing restores within the limits, not even staying off (a violation upstream): stay off
    off = [min(opts, key=lambda o: o.load_w) for opts in part_options]
    return off, verdicts([closed])[0]


def _root(parent: list[int], x: int) -> int:
    while parent[x] != x:
        x = parent[x]
    return x


def _batches[T](items: Sequence[T]) -> Iterable[Sequence[T]]:
    """Yield ``items`` in growing batches (1, 3, 8, then ``_BATCH``): the best candidate usually passes alone."""
    start = 0
    for size in itertools.chain((1, 3, 8), itertools.repeat(_BATCH)):
        if start >= len(items):
            return
        yield items[start : start + size]
        start += size


# -- exhaustive search ---------------------------------------------------------------------------------


def exhaustive_flisr(
    grid: Grid,
    *,
    tripped: str,
    faulted_nodes: Iterable[str],
    limits: FlisrLimits | None = None,
    remote: npt.ArrayLike | None = None,
    customers: npt.ArrayLike | None = None,
    cold_load_pickup: float = 1.0,
    max_branches: int = 16,
    timeout_s: float | None = None,
) -> ExhaustiveResult | None:
    """Return the best restoration over every combination of the relevant remote-controlled branches.

    The relevant branches are those of the interrupted region with a closed remote switch (which
    may open) and those with an open remote switch joining the region to an energised node or
    to itself (which may close), plus the tripped breaker. A branch with several remote switches
    is one choice (open when any is open). A combination is valid when no faulted node is
    energised, it makes no loop the pre-fault grid did not have, and its power flow (same
    assumptions as :func:`plan_flisr`) shows no new violation; the best valid one restores the
    most load, then customers. Returns None when there are more than ``max_branches`` choices
    or the search takes longer than ``timeout_s``.
    """
    started = time.perf_counter()
    limits = limits or FlisrLimits()
    trip_row = _switch_row(grid, tripped)
    pre_closed = grid.switches["closed"].astype(bool).copy()
    pre_closed[trip_row] = True
    counts = _customers(grid, customers)
    remote_mask = remote_controlled(grid) if remote is None else np.asarray(remote, dtype=bool).copy()
    if remote_mask.shape != (grid.switches.size,):
        raise InputError(f"remote: {remote_mask.size} flags for {grid.switches.size} switches")
    remote_mask[trip_row] = True
    net = _build_net(grid, counts)
    e_pre = net.edge_closed(pre_closed)
    live_pre = net.energised(e_pre)
    trip_closed = pre_closed.copy()
    trip_closed[trip_row] = False
    region = live_pre & ~net.energised(net.edge_closed(trip_closed))
    name_row = {str(n): k for k, n in enumerate(grid.names_of("node"))}
    faulted = np.zeros(net.n, dtype=bool)
    for name in faulted_nodes:
        if name not in name_row:
            raise InputError(f"faulted node {name!r} is not in the grid {grid.name!r}")
        faulted[name_row[name]] = True
    # the search sees the region only: everything live outside it is one supply node
    region_rows = np.flatnonzero(region)
    k = int(region_rows.size)
    node_map = np.full(net.n, k + 1, dtype=np.int64)
    node_map[live_pre & ~region] = k
    node_map[region_rows] = np.arange(k)
    keep = region[net.u] | region[net.v]
    su, sv = node_map[net.u[keep]], node_map[net.v[keep]]
    sub_faulted = faulted[region_rows]
    sub_load = net.node_load_w[region_rows]
    sub_customers = net.node_customers[region_rows]

    def reach(edges: BoolArray) -> tuple[BoolArray, int]:
        sel = edges[keep]
        graph = sparse.coo_matrix((np.ones(int(sel.sum())), (su[sel], sv[sel])), shape=(k + 2, k + 2))
        n_comp, lab = csgraph.connected_components(graph, directed=False)
        return np.asarray(lab[:k] == lab[k]), int(sel.sum()) - (k + 2) + int(n_comp)

    pre_cycles = reach(e_pre)[1]

    # choices: one per branch with a remote switch, touching the region
    choices: list[tuple[int, IntArray]] = []  # (edge, switch rows to set)
    for e in np.unique(net.sw_edge[(net.sw_edge >= 0) & remote_mask]).tolist():
        a, b = int(net.u[e]), int(net.v[e])
        if not net.ok[e] or not (region[a] or region[b]):
            continue
        rows = np.flatnonzero((net.sw_edge == e) & remote_mask)
        non_remote_open = np.flatnonzero((net.sw_edge == e) & ~remote_mask & ~pre_closed)
        if non_remote_open.size:
            continue  # a manual switch holds it open
        if bool(e_pre[e]) and not (region[a] and region[b]) and trip_row not in rows.tolist():
            continue  # closed branch leaving the region: on a feeder the trip did not interrupt
        choices.append((e, rows))
    if len(choices) > max_branches:
        return None
    evaluator = _Evaluator(grid, net, limits, region, cold_load_pickup)
    base = pre_closed.copy()
    for _, rows in choices:
        base[rows] = True
    evaluator.prepare(base, evaluator.prefault())
    base_sel = net.edge_closed(pre_closed)

    def closed_of(states: tuple[bool, ...]) -> BoolArray:
        closed = pre_closed.copy()
        for (_, rows), on in zip(choices, states, strict=True):
            closed[rows] = on
        return closed

    # the branches no choice touches are joined once; each combination only adds its closed choices
    # (a choice's branch conducts exactly when its remote switches are closed: no manual one holds it open)
    choice_edges = np.array([e for e, _ in choices], dtype=np.int64)
    fixed = base_sel & keep
    fixed[choice_edges] = False
    fsel = fixed[keep]
    graph = sparse.coo_matrix((np.ones(int(fsel.sum())), (su[fsel], sv[fsel])), shape=(k + 2, k + 2))
    n_fixed, fixed_label = csgraph.connected_components(graph, directed=False)
    fixed_cycles = int(fsel.sum()) - (k + 2) + int(n_fixed)
    ends = [(int(fixed_label[node_map[net.u[e]]]), int(fixed_label[node_map[net.v[e]]])) for e in choice_edges.tolist()]
    node_label = np.asarray(fixed_label[:k], dtype=np.int64)
    supply_label = int(fixed_label[k])

    valid: list[tuple[float, int, tuple[bool, ...]]] = []
    total = 0
    for states in itertools.product((True, False), repeat=len(choices)):
        total += 1
        if timeout_s is not None and total % 256 == 0 and time.perf_counter() - started > timeout_s:
            return None
        parent = list(range(int(n_fixed)))
        cycles = fixed_cycles
        for (end_a, end_b), on in zip(ends, states, strict=True):
            if not on:
                continue
            ra, rb = _root(parent, end_a), _root(parent, end_b)
            if ra == rb:
                cycles += 1
            else:
                parent[ra] = rb
        if cycles > pre_cycles:
            continue
        roots = np.array([_root(parent, c) for c in range(int(n_fixed))], dtype=np.int64)
        live = roots[node_label] == roots[supply_label]
        if (live & sub_faulted).any():
            continue
        valid.append((float(sub_load[live].sum()), int(sub_customers[live].sum()), states))
    valid.sort(key=lambda t: (-t[0], -t[1]))
    for batch in _batches(valid):
        if timeout_s is not None and time.perf_counter() - started > timeout_s:
            return None
        configs = [closed_of(b[2]) for b in batch]
        for (load, cust, _), closed, (ok, violations) in zip(batch, configs, evaluator.evaluate(configs), strict=True):
            if ok and not violations:
                return ExhaustiveResult(load, cust, closed, total, time.perf_counter() - started)
    return ExhaustiveResult(0.0, 0, pre_closed, total, time.perf_counter() - started)
