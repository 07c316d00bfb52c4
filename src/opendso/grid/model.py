"""The network model: vectorised tables in power-grid-model's input layout, plus what it lacks.

A :class:`Grid` holds one numpy structured array per component type, in exactly the layout
power-grid-model takes as input (``node``, ``line``, ``link``, ``transformer``,
``three_winding_transformer``, ``source``, ``sym_load``, ``sym_gen``, ``asym_load``,
``asym_gen``, ``shunt``, ``voltage_regulator``, ...), so a calculation never converts element
by element. Beside those arrays it keeps what power-grid-model does not model:

- the element's name in its source (``names``), aligned row by row with each array;
- extra per-element columns (``extra``): the in-service flag, the element kind
  (``line``/``cable``, ``pv``/``wind``/``storage``, ...), the source table and index, nominal
  ratings, and for sources the short-circuit data used by short-circuit studies;
- switches as a table of their own (:data:`SWITCH_DTYPE`), which set the status of the branch
  end or link they act on;
- node coordinates (``node_xy``), NaN where the source gives none;
- measurement placements (``sensors``) in power-grid-model's sensor layout, measured values
  NaN until a measurement source fills them;
- relative profiles and how they scale each element over time (:class:`Profiles`).

Every element has a stable integer id, unique across all component types, as
power-grid-model requires. Units are SI (V, A, W, var, ohm, F).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from power_grid_model import initialize_array
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: Component types in power-grid-model's input dataset that OpenDSO grids may hold.
PGM_COMPONENTS: tuple[str, ...] = (
    "node",
    "line",
    "asym_line",
    "link",
    "generic_branch",
    "transformer",
    "three_winding_transformer",
    "transformer_tap_regulator",
    "source",
    "sym_load",
    "sym_gen",
    "asym_load",
    "asym_gen",
    "shunt",
    "voltage_regulator",
)

#: Two-terminal branches (from_node/to_node, from_status/to_status).
BRANCH_COMPONENTS: tuple[str, ...] = ("line", "asym_line", "link", "generic_branch", "transformer")

#: Components connected to one node (node, status).
APPLIANCE_COMPONENTS: tuple[str, ...] = ("source", "sym_load", "sym_gen", "asym_load", "asym_gen", "shunt")

#: Measurement placements, in power-grid-model's sensor layout.
SENSOR_COMPONENTS: tuple[str, ...] = (
    "sym_voltage_sensor",
    "asym_voltage_sensor",
    "sym_power_sensor",
    "asym_power_sensor",
    "sym_current_sensor",
    "asym_current_sensor",
)

#: Switch table: ``element`` is the branch (or link) the switch acts on; ``side`` is 0 for the
#: branch's from end, 1 for its to end, 2 when the element is a link that is the switch itself
#: (a bus-bus switch), 3 for a winding of a three-winding transformer (the switch's node names
#: the winding); ``closed`` is 1 when closed.
SWITCH_DTYPE = np.dtype([("id", "i4"), ("node", "i4"), ("element", "i4"), ("side", "i1"), ("closed", "i1")])

SIDE_FROM = 0
SIDE_TO = 1
SIDE_LINK = 2
SIDE_WINDING = 3

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def empty_component(component: str, size: int = 0) -> np.ndarray:
    """Return an input array of ``size`` rows for a power-grid-model component, all fields unset."""
    return initialize_array("input", component, size)


@dataclass(frozen=True)
class ProfileAssignment:
    """How one attribute of some elements follows the relative profiles over time.

    The value of element ``ids[k]`` at step ``t`` is ``values[t, column[k]] * scale[k]``; a
    column of -1 means the element keeps ``scale[k]`` at every step.
    """

    component: str
    attribute: str
    ids: npt.NDArray[np.int32]
    column: npt.NDArray[np.int64]
    scale: FloatArray

    def evaluate(self, values: FloatArray) -> FloatArray:
        """Return the attribute for every element at the given rows of the profile table."""
        has_profile = self.column >= 0
        # one gather and one multiply; a masked assignment only where some elements have no profile
        out: FloatArray = values[:, np.where(has_profile, self.column, 0)] * self.scale
        if not has_profile.all():
            out[:, ~has_profile] = self.scale[~has_profile]
        return out


@dataclass(frozen=True)
class Profiles:
    """Relative time profiles (one column per profile type) and their assignment to elements.

    The table stays per profile type (a hundred columns at most for SimBench) and is scaled per
    element chunk by chunk, so a year of quarter-hours for ten thousand loads never has to be
    held in memory at once.
    """

    time: npt.NDArray[np.datetime64]
    values: FloatArray
    columns: tuple[str, ...]
    assignments: tuple[ProfileAssignment, ...]

    @property
    def steps(self) -> int:
        """Number of time steps."""
        return int(self.values.shape[0])

    def update_data(
        self, start: int, stop: int, *, input_ids: Mapping[str, np.ndarray] | None = None
    ) -> dict[str, dict[str, np.ndarray]]:
        """Return a columnar power-grid-model batch update dataset for steps ``start`` to ``stop``.

        When ``input_ids`` shows that an assignment covers every element of its component in
        input order, the ids are left out (power-grid-model then matches by position, which is
        faster); otherwise they are repeated for every step.
        """
        chunk = self.values[start:stop]
        n_steps = chunk.shape[0]
        update: dict[str, dict[str, np.ndarray]] = {}
        for assignment in self.assignments:
            columns = update.setdefault(assignment.component, {})
            if "id" not in columns and not (
                input_ids is not None
                and assignment.component in input_ids
                and np.array_equal(input_ids[assignment.component], assignment.ids)
            ):
                columns["id"] = np.ascontiguousarray(np.broadcast_to(assignment.ids, (n_steps, assignment.ids.size)))
            columns[assignment.attribute] = assignment.evaluate(chunk)
        for component, columns in update.items():
            sizes = {a.shape[1] for a in columns.values()}
            if len(sizes) != 1:
                raise ValueError(f"profile assignments of {component} must cover the same elements")
        return update


@dataclass(frozen=True)
class Grid:
    """A network model: power-grid-model input arrays plus names, switches, coordinates and profiles."""

    name: str
    input: Mapping[str, np.ndarray]
    names: Mapping[str, npt.NDArray[np.object_]]
    extra: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    switches: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=SWITCH_DTYPE))
    switch_names: npt.NDArray[np.object_] = field(default_factory=lambda: np.zeros(0, dtype=object))
    switch_kinds: npt.NDArray[np.object_] = field(default_factory=lambda: np.zeros(0, dtype=object))
    node_xy: FloatArray = field(default_factory=lambda: np.zeros((0, 2)))
    sensors: Mapping[str, np.ndarray] = field(default_factory=dict)
    profiles: Profiles | None = None
    frequency_hz: float = 50.0

    # -- access -------------------------------------------------------------------------------
    def component(self, component: str) -> np.ndarray:
        """Return the input array of a component type (an empty one if the grid has none)."""
        array = self.input.get(component)
        if array is None:
            array = self.sensors.get(component)
        return array if array is not None else empty_component(component)

    def count(self, component: str) -> int:
        """Number of elements of a component type."""
        return int(self.component(component).size)

    @property
    def components(self) -> tuple[str, ...]:
        """Component types the grid holds, in power-grid-model's order."""
        return tuple(c for c in PGM_COMPONENTS if c in self.input and self.input[c].size)

    def pgm_input(self, *, with_sensors: bool = False) -> dict[str, np.ndarray]:
        """Return the power-grid-model input dataset (arrays are shared, not copied)."""
        data = {c: a for c, a in self.input.items() if a.size}
        if with_sensors:
            data.update({c: a for c, a in self.sensors.items() if a.size})
        return data

    def column(self, component: str, key: str, default: Any = None) -> np.ndarray:
        """Return an extra column of a component (``default`` repeated if the grid has none)."""
        columns = self.extra.get(component, {})
        if key in columns:
            return columns[key]
        return np.full(self.count(component), default, dtype=object if default is None else None)

    def names_of(self, component: str) -> npt.NDArray[np.object_]:
        """Return the source names of a component, aligned with its input array."""
        names = self.names.get(component)
        if names is None:
            return self.component(component)["id"].astype(str).astype(object)
        return names

    def iter_branches(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield (component, array) for every two-terminal branch type present."""
        for component in BRANCH_COMPONENTS:
            array = self.input.get(component)
            if array is not None and array.size:
                yield component, array

    def node_positions(self, node_ids: npt.ArrayLike) -> IntArray:
        """Return the row of each node id in the node array (vectorised)."""
        nodes = self.component("node")["id"]
        order = np.argsort(nodes, kind="stable")
        ids = np.asarray(node_ids)
        pos = np.searchsorted(nodes, ids, sorter=order)
        pos = np.clip(pos, 0, max(nodes.size - 1, 0))
        found = nodes[order[pos]] == ids if nodes.size else np.zeros(ids.shape, dtype=bool)
        if not np.all(found):
            missing = ids[~found]
            raise KeyError(f"node id(s) not in the grid: {missing[:10].tolist()}")
        return order[pos].astype(np.int64)

    def find(self, name: str) -> tuple[str, int]:
        """Return (component, id) of the element named ``name`` in its source."""
        for component, names in self.names.items():
            hits = np.flatnonzero(names == name)
            if hits.size:
                return component, int(self.component(component)["id"][hits[0]])
        raise KeyError(name)

    @property
    def max_id(self) -> int:
        """Largest id used by any element, sensor or switch."""
        ids = [int(a["id"].max()) for a in list(self.input.values()) + list(self.sensors.values()) if a.size]
        if self.switches.size:
            ids.append(int(self.switches["id"].max()))
        return max(ids, default=-1)

    def summary(self) -> dict[str, int]:
        """Return the number of elements per component type, switches and sensors included."""
        counts = {c: int(a.size) for c, a in self.input.items() if a.size}
        counts.update({c: int(a.size) for c, a in self.sensors.items() if a.size})
        if self.switches.size:
            counts["switch"] = int(self.switches.size)
        return counts

    # -- changes return new grids ----------------------------------------------------------------
    def with_switch_states(self, closed: npt.ArrayLike) -> Grid:
        """Return a grid whose switches have the given states, branch and link statuses following them."""
        switches = self.switches.copy()
        switches["closed"] = np.asarray(closed, dtype=np.int8)
        return replace(self, switches=switches, input=apply_switches(self.input, switches, self.extra))

    def with_input(self, **arrays: np.ndarray) -> Grid:
        """Return a grid with some input arrays replaced."""
        data = dict(self.input)
        data.update(arrays)
        return replace(self, input=data)


def apply_switches(
    data: Mapping[str, np.ndarray],
    switches: np.ndarray,
    extra: Mapping[str, Mapping[str, np.ndarray]],
    *,
    names: Mapping[str, np.ndarray] | None = None,
    source: str = "",
) -> dict[str, np.ndarray]:
    """Return input arrays whose statuses follow in-service flags and switch states.

    A branch end is connected when the branch is in service, its node is in service and every
    switch on that end is closed; a link that stands for a bus-bus switch is connected when that
    switch is closed. A branch at an out-of-service node keeps its other end connected, as in
    pandapower (a cable still draws its charging current). Voltage regulators are then resolved
    to one set-point per electrical node (:func:`resolve_voltage_control`), since which nodes
    form one electrical node depends on the switch states.
    """
    out = dict(data)
    node = data.get("node")
    node_ok_by_id: Any = None
    if node is not None and node.size and "in_service" in extra.get("node", {}):
        node_in_service = np.asarray(extra["node"]["in_service"], dtype=bool)
        if not node_in_service.all():
            node_order = np.argsort(node["id"])

            def node_ok_by_id(ids: np.ndarray) -> np.ndarray:
                return node_in_service[node_order[np.searchsorted(node["id"], ids, sorter=node_order)]]

    for component in BRANCH_COMPONENTS:
        array = data.get(component)
        if array is None or not array.size:
            continue
        array = array.copy()
        in_service = np.asarray(extra.get(component, {}).get("in_service", np.ones(array.size, dtype=bool)), bool)
        from_ok = in_service.copy()
        to_ok = in_service.copy()
        if node_ok_by_id is not None:
            from_ok &= node_ok_by_id(array["from_node"])
            to_ok &= node_ok_by_id(array["to_node"])
        if switches.size:
            ids = array["id"]
            order = np.argsort(ids)
            pos = np.searchsorted(ids, switches["element"], sorter=order)
            pos = np.clip(pos, 0, ids.size - 1)
            rows = order[pos]
            hit = ids[rows] == switches["element"]
            open_ = switches["closed"] == 0
            for side, targets in ((SIDE_FROM, (from_ok,)), (SIDE_TO, (to_ok,)), (SIDE_LINK, (from_ok, to_ok))):
                sel = hit & open_ & (switches["side"] == side)
                for target in targets:
                    target[rows[sel]] = False
        array["from_status"] = from_ok
        array["to_status"] = to_ok
        out[component] = array
    regulators = out.get("voltage_regulator")
    if regulators is not None and regulators.size and "sym_gen" in out:
        in_service_reg = extra.get("voltage_regulator", {}).get("in_service", regulators["status"] == 1)
        reg_names = (names or {}).get("voltage_regulator")
        if reg_names is None:
            reg_names = regulators["id"].astype(str).astype(object)
        out["voltage_regulator"] = resolve_voltage_control(out, np.asarray(in_service_reg), reg_names, source)
    return out


def electrical_nodes(data: Mapping[str, np.ndarray]) -> npt.NDArray[np.int64]:
    """Label each node (by row) with its electrical node: nodes joined by closed links are one."""
    nodes = data["node"]["id"]
    link = data.get("link")
    if link is None or not link.size:
        return np.arange(nodes.size, dtype=np.int64)
    closed = (link["from_status"] == 1) & (link["to_status"] == 1)
    order = np.argsort(nodes)
    a = order[np.searchsorted(nodes, link["from_node"][closed], sorter=order)]
    b = order[np.searchsorted(nodes, link["to_node"][closed], sorter=order)]
    graph = coo_matrix((np.ones(a.size), (a, b)), shape=(nodes.size, nodes.size))
    _, labels = connected_components(graph, directed=False)
    return np.asarray(labels, dtype=np.int64)


def resolve_voltage_control(
    data: Mapping[str, np.ndarray], in_service: np.ndarray, reg_names: np.ndarray, src: str
) -> np.ndarray:
    """Return the voltage regulators with one voltage set-point per electrical node, as pandapower solves it.

    pandapower merges buses joined by closed bus-bus switches into one electrical bus; an ext_grid
    there makes it the slack bus, else the generators make it a PV bus. power-grid-model keeps
    such buses as nodes joined by links (a large admittance) and refuses a regulated generator at
    a source node, and two voltage set-points on one electrical node only fight each other. So a
    regulator stays on only if no in-service source holds its electrical node and it sits on the
    node of the first regulated generator there (pandapower's table order) with that generator's
    set-point; the others are switched off and their generators inject their active power only,
    which leaves node voltages and branch flows unchanged. Differing set-points on one electrical
    node are an error in pandapower's power flow; here the source's or the first set-point wins
    and a warning names the case.
    """
    regulators = data["voltage_regulator"].copy()
    gens = data["sym_gen"]
    labels = electrical_nodes(data)
    nodes = data["node"]["id"]
    node_order = np.argsort(nodes)

    def label_of(node_ids: np.ndarray) -> np.ndarray:
        return labels[node_order[np.searchsorted(nodes, node_ids, sorter=node_order)]]

    gen_order = np.argsort(gens["id"])
    gen_node = gens["node"][gen_order[np.searchsorted(gens["id"], regulators["regulated_object"], sorter=gen_order)]]
    reg_label = label_of(gen_node)
    on = np.asarray(in_service, dtype=bool).copy()

    source = data.get("source")
    if source is not None and source.size:
        live = source["status"] == 1
        src_label = label_of(source["node"][live])
        src_u = np.full(labels.max() + 1, np.nan)
        src_u[src_label] = source["u_ref"][live]
        at_source = on & ~np.isnan(src_u[reg_label])
        conflict = at_source & ~np.isclose(regulators["u_ref"], src_u[reg_label], rtol=0, atol=1e-9)
        if conflict.any():
            log.warning(
                "event=voltage_setpoint_conflict source=%s generators=%d first=%s rule=source_wins",
                src,
                int(conflict.sum()),
                reg_names[np.flatnonzero(conflict)[0]],
            )
        on &= ~at_source

    rows = np.flatnonzero(on)
    _, first = np.unique(reg_label[rows], return_index=True)
    lead = np.full(labels.max() + 1, -1, dtype=np.int64)
    lead[reg_label[rows[first]]] = rows[first]
    leader = lead[reg_label]
    same_u = np.isclose(regulators["u_ref"], regulators["u_ref"][leader], rtol=0, atol=1e-9)
    conflict = on & ~same_u
    if conflict.any():
        log.warning(
            "event=voltage_setpoint_conflict source=%s generators=%d first=%s rule=first_generator_wins",
            src,
            int(conflict.sum()),
            reg_names[np.flatnonzero(conflict)[0]],
        )
    on &= same_u & (gen_node == gen_node[leader])
    regulators["status"] = on
    return regulators
