"""The binding of telemetry points to a grid: which value of which grid element each point carries.

A point names a grid element by its source name (``element``) and a ``quantity`` (see
:data:`~opendso.telemetry.points.QUANTITIES`). :func:`bind_points` resolves every point of a
point map against a :class:`~opendso.grid.Grid` once, and returns a :class:`PointBinding`:
per point (by its index in the point map) the :class:`Target` kind, the table it lives in
(``component``), its row there, the element's power-grid-model id, the measured field of a
sensor placement and the side measured. Consumers gather and scatter values by index with the
:class:`Gather` arrays of :meth:`PointBinding.gather` and :meth:`PointBinding.groups`, never by
looking names up per cycle. This module is the only place the quantity -> field and
sensor-type tables live (:data:`SENSOR_FIELDS`, :data:`SENSOR_QUANTITIES`).

How a point is bound, by quantity (the first rule that matches):

- ``switch``: the switch of that name (:attr:`Target.SWITCH`; 1 closed, 0 open);
- ``fpi`` (fault-passage indicator): the switch of that name, else the sensor placement of that
  name (:attr:`Target.SWITCH` or :attr:`Target.SENSOR`);
- ``u``, ``p``, ``q``, ``i``: the sensor placement of that name that measures the quantity
  (:attr:`Target.SENSOR`, with its field from :data:`SENSOR_FIELDS`); else for ``u`` the node
  (:attr:`Target.NODE`); for ``p``/``q`` the load, generator or source
  (:attr:`Target.APPLIANCE`, the p/q of the appliance itself); for ``p``/``q``/``i`` the line,
  transformer or generic branch (:attr:`Target.BRANCH`, measured at its from end; links carry
  no measured flow);
- ``p_limit``, ``p_available`` (a DER's export limit in force and its available power): the
  generator of that name (:attr:`Target.DER`);
- anything else (``tap``, ``f``, ``soc``, angles, or a quantity the element has no place for)
  is not bound (:attr:`Target.NONE`) and gets a finding.

Findings are :class:`~opendso.telemetry.points.PointMapFinding` objects: field ``element`` when
the grid has no element of that name (what :func:`~opendso.telemetry.points.validate_against_grid`
reports), field ``quantity`` when the element exists but the quantity has no place on it. What a
consumer cannot use depends on the consumer (the real-time cycle ignores a tap position, a field
simulator must compute every point): :meth:`PointBinding.require` raises one
:class:`~opendso.telemetry.points.PointMapError` listing every point a consumer cannot use.
When several elements share a name, the first row of the first table in the order above wins.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from opendso.errors import PointMapError
from opendso.grid.model import SIDE_FROM, Grid
from opendso.telemetry.points import SENSOR_QUANTITIES, Point, PointMap, PointMapFinding

__all__ = [
    "APPLIANCE_COMPONENTS",
    "BRANCH_COMPONENTS",
    "DER_QUANTITIES",
    "FPI",
    "MAGNITUDES",
    "MEASURED_QUANTITIES",
    "SENSOR_COMPONENTS",
    "SENSOR_FIELDS",
    "SENSOR_OF_QUANTITY",
    "SENSOR_QUANTITIES",
    "STATE_QUANTITIES",
    "SWITCH",
    "Gather",
    "PointBinding",
    "SensorField",
    "Target",
    "assert_valid_against_grid",
    "bind_points",
    "validate_against_grid",
]

IntArray = npt.NDArray[np.int64]

#: Quantity of a switch state point (1.0 closed, 0.0 open).
SWITCH = "switch"
#: Quantity of a fault-passage indicator point (1.0 picked up, 0.0 not).
FPI = "fpi"
#: Analog measured quantities: what a transducer measures, with noise.
MEASURED_QUANTITIES: frozenset[str] = frozenset({"u", "p", "q", "i"})
#: Measured quantities that are magnitudes (never negative).
MAGNITUDES: frozenset[str] = frozenset({"u", "i"})
#: A DER's control quantities on its generator: the export limit in force (commandable) and the available power.
DER_QUANTITIES: frozenset[str] = frozenset({"p_limit", "p_available"})
#: Quantities that are inputs of the state estimate (values) or of the topology (switch states).
STATE_QUANTITIES: frozenset[str] = MEASURED_QUANTITIES | {SWITCH}


@dataclass(frozen=True)
class SensorField:
    """The input fields of a sensor placement that hold one measured quantity: value and sigma."""

    value: str
    sigma: str


#: (sensor placement component, quantity) -> the fields holding its measured value and sigma.
SENSOR_FIELDS: Mapping[tuple[str, str], SensorField] = {
    ("sym_voltage_sensor", "u"): SensorField("u_measured", "u_sigma"),
    ("sym_power_sensor", "p"): SensorField("p_measured", "p_sigma"),
    ("sym_power_sensor", "q"): SensorField("q_measured", "q_sigma"),
    ("sym_current_sensor", "i"): SensorField("i_measured", "i_sigma"),
}
#: The sensor placement components points can name.
SENSOR_COMPONENTS: tuple[str, ...] = tuple(SENSOR_QUANTITIES)
#: Measured quantity -> the sensor placement component that measures it.
SENSOR_OF_QUANTITY: Mapping[str, str] = {q: c for c, qs in SENSOR_QUANTITIES.items() for q in qs}
#: Appliances whose active and reactive power a point can name.
APPLIANCE_COMPONENTS: tuple[str, ...] = ("sym_load", "sym_gen", "source")
#: Branches whose flow (p, q, i at the from end) a point can name (links carry no measured flow).
BRANCH_COMPONENTS: tuple[str, ...] = ("line", "asym_line", "generic_branch", "transformer")
_APPLIANCE_QUANTITIES = frozenset({"p", "q"})
_BRANCH_QUANTITIES = frozenset({"p", "q", "i"})


class Target(IntEnum):
    """What a point's value belongs to."""

    NONE = 0  #: not bound: see the point's finding
    SENSOR = 1  #: a sensor placement's measured value (or its fault-passage indicator)
    NODE = 2  #: a node's voltage magnitude
    SWITCH = 3  #: a switch's state (or its fault-passage indicator)
    APPLIANCE = 4  #: a load's, generator's or source's p or q
    BRANCH = 5  #: a branch's p, q or i at its from end
    DER = 6  #: a generator's export limit in force (``p_limit``) or available power (``p_available``)


class Gather(NamedTuple):
    """Point indices and the rows of their table, aligned: ``table[rows] <-> values[points]``."""

    points: IntArray
    rows: IntArray


_EMPTY = Gather(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
for _array in _EMPTY:
    _array.flags.writeable = False  # shared by every empty gather


@dataclass(frozen=True, eq=False)
class PointBinding:
    """Every point of a point map bound to its grid element; arrays are indexed by point index.

    ``names`` are the point names (``index`` maps a name to its index), ``elements`` and
    ``quantities`` what each point names. ``target`` is the :class:`Target` code of each point;
    ``component`` the table its row is in (a sensor placement component, ``node``, ``switch``,
    an appliance or branch component; None when not bound); ``row`` its row there (-1 when not
    bound); ``element_id`` the element's power-grid-model id (a switch's id for a switch);
    ``measured_field`` a sensor point's value field, e.g. ``p_measured`` (None for the others,
    and for an indicator); ``side`` where the value is measured: a sensor placement's
    ``measured_terminal_type`` (power-grid-model's ``MeasuredTerminalType``, -1 for a voltage
    sensor), 0 (the from end) for a branch, -1 otherwise. ``findings`` has one finding per point
    that is not bound, in point order. The arrays are read-only.
    """

    file: str
    grid_name: str
    names: tuple[str, ...]
    elements: npt.NDArray[np.object_]
    quantities: npt.NDArray[np.object_]
    target: npt.NDArray[np.int8]
    component: npt.NDArray[np.object_]
    row: IntArray
    element_id: IntArray
    measured_field: npt.NDArray[np.object_]
    side: npt.NDArray[np.int8]
    findings: tuple[PointMapFinding, ...]
    index: Mapping[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        for k, name in enumerate(self.names):
            index.setdefault(name, k)
        object.__setattr__(self, "index", index)
        arrays = (self.elements, self.quantities, self.target, self.component, self.row, self.element_id)
        for array in (*arrays, self.measured_field, self.side):
            if array.shape != (len(self.names),):
                raise ValueError(f"binding arrays must have one entry per point ({len(self.names)})")
            array.flags.writeable = False
        if len(self.findings) != int(np.count_nonzero(self.target == Target.NONE)):
            raise ValueError("a binding has one finding per point that is not bound")

    def __len__(self) -> int:
        return len(self.names)

    def gather(
        self, target: Target, *, component: str | None = None, quantities: Collection[str] | None = None
    ) -> Gather:
        """Return the points bound to ``target`` (of one table, of some quantities) and their rows, in point order.

        Without ``component`` the rows of different tables are mixed: pair them with
        ``component[points]`` (or use :meth:`groups`).
        """
        mask = self.target == target
        if component is not None:
            mask &= self.component == component
        if quantities is not None:
            mask &= np.isin(self.quantities, list(quantities))
        points = np.flatnonzero(mask).astype(np.int64)
        return Gather(points, self.row[points]) if points.size else _EMPTY

    def groups(self, *targets: Target, quantities: Collection[str] | None = None) -> dict[tuple[str, str], Gather]:
        """Return the points bound to any of ``targets`` by (table, quantity), each in point order."""
        mask = np.isin(self.target, [int(t) for t in targets])
        if quantities is not None:
            mask &= np.isin(self.quantities, list(quantities))
        members: dict[tuple[str, str], list[int]] = {}
        for k in np.flatnonzero(mask).tolist():
            members.setdefault((str(self.component[k]), str(self.quantities[k])), []).append(k)
        out: dict[tuple[str, str], Gather] = {}
        for key, ks in members.items():
            points = np.asarray(ks, dtype=np.int64)
            out[key] = Gather(points, self.row[points])
        return out

    def problems(
        self, targets: Collection[Target], *, quantities: Collection[str] | None = None, user: str = "this consumer"
    ) -> list[PointMapFinding]:
        """Return a finding for every point (of ``quantities``; all by default) not bound to one of ``targets``.

        A point that is not bound at all gets its own finding; one bound to another target gets
        one saying that ``user`` (e.g. "the real-time cycle") cannot use it.
        """
        allowed = {int(t) for t in targets}
        own = iter(self.findings)  # one per unbound point, in point order
        out: list[PointMapFinding] = []
        for k, name in enumerate(self.names):
            target = int(self.target[k])
            finding = next(own) if target == Target.NONE else None
            if target in allowed or (quantities is not None and self.quantities[k] not in quantities):
                continue
            if finding is None:
                finding = PointMapFinding(
                    self.file,
                    name,
                    "quantity",
                    f"{user} cannot use {self.quantities[k]!r} of {self.elements[k]!r} ({self.component[k]})",
                )
            out.append(finding)
        return out

    def require(
        self, targets: Collection[Target], *, quantities: Collection[str] | None = None, user: str = "this consumer"
    ) -> None:
        """Raise one :class:`PointMapError` listing every point :meth:`problems` finds; return when there is none."""
        found = self.problems(targets, quantities=quantities, user=user)
        if found:
            raise PointMapError(self.file, found)


@dataclass
class _Tables:
    """Name -> row lookups of a grid's tables, built once per binding."""

    grid: Grid
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    component_of: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        grid = self.grid
        for component in (*SENSOR_COMPONENTS, "node", *APPLIANCE_COMPONENTS, *BRANCH_COMPONENTS):
            if grid.count(component):
                self.rows[component] = _first_rows(grid.names_of(component))
        self.rows["switch"] = _first_rows(grid.switch_names)
        for component, names in grid.names.items():
            for name in names.tolist():
                self.component_of.setdefault(str(name), component)

    def find(self, component: str, element: str) -> int | None:
        table = self.rows.get(component)
        return None if table is None else table.get(element)

    def first_sensor(self, element: str) -> tuple[str, int] | None:
        for component in SENSOR_COMPONENTS:
            row = self.find(component, element)
            if row is not None:
                return component, row
        return None


def _first_rows(names: npt.NDArray[np.object_]) -> dict[str, int]:
    rows: dict[str, int] = {}
    for row, name in enumerate(names.tolist()):
        rows.setdefault(str(name), row)
    return rows


def _resolve(tables: _Tables, element: str, quantity: str) -> tuple[Target, str, int] | None:
    """The (target, table, row) of one point, None when it has no place in the grid."""
    if quantity == SWITCH:
        row = tables.find("switch", element)
        return None if row is None else (Target.SWITCH, "switch", row)
    if quantity == FPI:
        row = tables.find("switch", element)
        if row is not None:
            return Target.SWITCH, "switch", row
        sensor = tables.first_sensor(element)
        return None if sensor is None else (Target.SENSOR, sensor[0], sensor[1])
    if quantity in DER_QUANTITIES:
        row = tables.find("sym_gen", element)
        return None if row is None else (Target.DER, "sym_gen", row)
    sensor_component = SENSOR_OF_QUANTITY.get(quantity)
    if sensor_component is not None:
        row = tables.find(sensor_component, element)
        if row is not None:
            return Target.SENSOR, sensor_component, row
    if quantity == "u":
        row = tables.find("node", element)
        if row is not None:
            return Target.NODE, "node", row
    if quantity in _APPLIANCE_QUANTITIES:
        for component in APPLIANCE_COMPONENTS:
            row = tables.find(component, element)
            if row is not None:
                return Target.APPLIANCE, component, row
    if quantity in _BRANCH_QUANTITIES:
        for component in BRANCH_COMPONENTS:
            row = tables.find(component, element)
            if row is not None:
                return Target.BRANCH, component, row
    return None


def _unbound_finding(file: str, grid: Grid, tables: _Tables, name: str, element: str, quantity: str) -> PointMapFinding:
    """The finding of a point without a place: the element is unknown, or has no place for the quantity."""
    known = tables.component_of.get(element)
    if quantity in (SWITCH, FPI):
        if known is None and tables.find("switch", element) is None:
            what = "switch or sensor" if quantity == FPI else "switch"
            return PointMapFinding(file, name, "element", f"no {what} {element!r} in grid {grid.name}")
        if quantity == FPI:
            message = f"a fault-passage indicator sits on a switch or a sensor; {element!r} is a {known}"
        else:
            message = f"{element!r} is a {known}, not a switch"
        return PointMapFinding(file, name, "quantity", message)
    if known is None:
        return PointMapFinding(file, name, "element", f"no element {element!r} in grid {grid.name}")
    return PointMapFinding(file, name, "quantity", f"{element!r} ({known}) has no place for quantity {quantity!r}")


def _point_triples(
    points: PointMap | Sequence[Point] | Mapping[str, tuple[str, str]],
) -> Iterable[tuple[str, str, str]]:
    if isinstance(points, PointMap):
        return ((p.name, p.element, p.quantity) for p in points.points)
    if isinstance(points, Mapping):
        return ((str(name), str(element), str(quantity)) for name, (element, quantity) in points.items())
    return ((p.name, p.element, p.quantity) for p in points)


def _objects(values: Sequence[str | None]) -> npt.NDArray[np.object_]:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def bind_points(
    grid: Grid,
    points: PointMap | Sequence[Point] | Mapping[str, tuple[str, str]],
    *,
    file: str | None = None,
) -> PointBinding:
    """Return every point bound to its element of ``grid`` (see the module docstring); never raises for a point.

    ``points`` is a point map, its points, or point name -> (element, quantity). ``file`` names
    the source of the points in findings (default: the point map's file, else
    ``<points of GRID>``). Points without a place are returned with target NONE and a finding;
    :meth:`PointBinding.require` turns what a consumer cannot use into one error.
    """
    if file is None:
        file = points.file if isinstance(points, PointMap) else f"<points of {grid.name}>"
    tables = _Tables(grid)
    names: list[str] = []
    elements: list[str] = []
    quantities: list[str] = []
    targets: list[int] = []
    components: list[str | None] = []
    rows: list[int] = []
    findings: list[PointMapFinding] = []
    for name, element, quantity in _point_triples(points):
        names.append(name)
        elements.append(element)
        quantities.append(quantity)
        where = _resolve(tables, element, quantity)
        if where is None:
            targets.append(Target.NONE)
            components.append(None)
            rows.append(-1)
            findings.append(_unbound_finding(file, grid, tables, name, element, quantity))
        else:
            targets.append(where[0])
            components.append(where[1])
            rows.append(where[2])
    n = len(names)
    target = np.asarray(targets, dtype=np.int8).reshape(n)
    component = _objects(components)
    row = np.asarray(rows, dtype=np.int64).reshape(n)
    element_id = np.full(n, -1, dtype=np.int64)
    measured_field = np.full(n, None, dtype=object)
    side = np.full(n, -1, dtype=np.int8)
    for table in {c for c in components if c is not None}:
        at = np.flatnonzero(component == table)
        these = row[at]
        if table == "switch":
            element_id[at] = grid.switches["id"][these]
            continue
        array = grid.component(table)
        element_id[at] = array["id"][these]
        if table in SENSOR_QUANTITIES:
            if "measured_terminal_type" in (array.dtype.names or ()):
                side[at] = array["measured_terminal_type"][these]
            for k in at.tolist():
                sensor_field = SENSOR_FIELDS.get((table, quantities[k]))
                measured_field[k] = sensor_field.value if sensor_field is not None else None
        elif table in BRANCH_COMPONENTS:
            side[at] = SIDE_FROM
    return PointBinding(
        file=file,
        grid_name=grid.name,
        names=tuple(names),
        elements=_objects(elements),
        quantities=_objects(quantities),
        target=target,
        component=component,
        row=row,
        element_id=element_id,
        measured_field=measured_field,
        side=side,
        findings=tuple(findings),
    )


# -- against a grid ---------------------------------------------------------------------------
def validate_against_grid(point_map: PointMap, grid: Grid) -> list[PointMapFinding]:
    """Return a finding for every point whose element ``grid`` does not have (field ``element``).

    A ``switch`` or ``fpi`` point may name a switch or any element; the others name an element
    that is not a switch. Whether the quantity fits the element is the consumer's question
    (see :meth:`PointBinding.require`).
    """
    return [f for f in bind_points(grid, point_map).findings if f.field == "element"]


def assert_valid_against_grid(point_map: PointMap, grid: Grid) -> None:
    """Raise :class:`PointMapError` when a point names an element ``grid`` does not have."""
    findings = validate_against_grid(point_map, grid)
    if findings:
        raise PointMapError(point_map.file, findings)
