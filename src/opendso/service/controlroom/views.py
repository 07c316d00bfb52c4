"""What the API serves: the grid drawing, the element panel, the state, the alarm list and trends.

Each view is plain data (JSON-safe dicts: numpy scalars become Python numbers, NaN and infinity
``None``), in the shapes :mod:`opendso.service.schemas` documents. The classes cache what is
costly and changes only at known moments:

- :class:`GridView`: the drawing (nodes with coordinates, branches, switches) and the element
  index, built once; only the switch states are read per request. Grids without geography are
  drawn as a layered schematic (:func:`opendso.grid.layout.schematic_layout`).
- :class:`StateView`: the latest cycle result, serialised once per cycle for ``/api/state`` and
  every WebSocket client, with a version that is the entity tag.
- :class:`AlarmList`: the alarm list, built once per change of any alarm, with a version that
  grows with every change (``X-Alarm-Version`` and the ``v`` of alarm messages).

The caches share the lock of the real-time cycle, so a view never sees half a cycle.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from opendso.errors import InputError, NotFoundError
from opendso.grid.diagram import GridDiagram, build_diagram
from opendso.grid.layout import schematic_layout
from opendso.grid.model import BRANCH_COMPONENTS, SENSOR_COMPONENTS, Grid
from opendso.grid.topology import analyse_topology
from opendso.operations.alarms import ActiveAlarm, AlarmMonitor, AlarmState
from opendso.operations.cycle import CycleResult
from opendso.store.historian import Historian
from opendso.telemetry.points import QUANTITIES

__all__ = [
    "ALARM_STATES",
    "PRIORITIES",
    "AlarmList",
    "DiagramView",
    "GridView",
    "StateView",
    "alarm_entry",
    "check_choices",
    "finite",
    "measurement_rows",
    "state_of",
]

#: Decimals of the state a display gets: 1e-5 p.u. and 0.001 % loading, well under any measurement's accuracy.
U_DECIMALS = 5
LOADING_DECIMALS = 5
#: Alarm priorities, most urgent first (the ``priority`` filter).
PRIORITIES = ("critical", "high", "medium", "low")
#: Alarm states the alarm list may show (the ``state`` filter).
ALARM_STATES = tuple(s.value for s in AlarmState if s is not AlarmState.NORMAL)


def finite(value: Any) -> Any:
    """Return a JSON-safe scalar: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_choices(name: str, given: Collection[str], allowed: Collection[str]) -> None:
    """Refuse (:class:`InputError`) values of a filter ``name`` that are not among ``allowed``."""
    bad = sorted(set(given) - set(allowed))
    if bad:
        raise InputError(f"unknown {name} {', '.join(map(repr, bad))}: choose from {', '.join(allowed)}")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- the grid ------------------------------------------------------------------------------------------------
class GridView:
    """The grid for drawing and the element panel of one grid (its ids, names and coordinates never change).

    ``points`` maps point name -> (element, quantity); ``unit_of`` gives a point's unit from the
    point map (None: the quantity's default unit).
    """

    def __init__(
        self,
        grid: Grid,
        points: Mapping[str, tuple[str, str]],
        unit_of: Callable[[str], str | None] | None = None,
    ) -> None:
        self.name = grid.name
        self.points = points
        self._unit_of = unit_of
        topo = analyse_topology(grid)
        xy = np.asarray(grid.node_xy, dtype=float)
        n = grid.count("node")
        geographic = bool(xy.shape == (n, 2) and n and np.isfinite(xy).all())
        if not geographic:
            xy = schematic_layout(grid, topo.pred_node)
        self._drawing = _drawing(grid, topo.node_feeder.tolist(), xy, geographic=geographic)
        self._index = _element_index(grid)

    def drawing(self, grid: Grid) -> dict[str, Any]:
        """The grid for drawing: nodes with coordinates, branches and switches with ``grid``'s switch states."""
        view = dict(self._drawing)
        view["switches"] = [
            {**s, "closed": bool(c)} for s, c in zip(view["switches"], grid.switches["closed"].tolist(), strict=True)
        ]
        return view

    def element(self, element_id: int, grid: Grid) -> dict[str, Any]:
        """One element of ``grid``: component, name, kind, its fields and the points measuring it (404: unknown)."""
        hit = self._index.get(int(element_id))
        if hit is None:
            raise NotFoundError(f"{self.name}: no element with id {element_id}")
        component, row = hit
        if component == "switch":
            array = grid.switches
            name = str(grid.switch_names[row])
            kind = str(grid.switch_kinds[row]) if grid.switch_kinds.size else "switch"
            extra: dict[str, Any] = {}
        else:
            array = grid.component(component)
            name = str(grid.names_of(component)[row])
            extra = {k: finite(v[row]) for k, v in grid.extra.get(component, {}).items() if len(v) > row}
            kind = str(extra.get("kind") or component)
        fields = {f: finite(array[f][row]) for f in array.dtype.names or ()}
        for k, v in extra.items():
            fields.setdefault(k, v if isinstance(v, str | int | float | bool | type(None)) else str(v))
        wanted = {name}
        if component in BRANCH_COMPONENTS:
            wanted.add(f"{component}:{name}")
        points = sorted(p for p, (el, _q) in self.points.items() if el in wanted)
        if component not in SENSOR_COMPONENTS:
            for sensor in SENSOR_COMPONENTS:
                placed = grid.sensors.get(sensor)
                if placed is None or not placed.size:
                    continue
                own = np.flatnonzero(placed["measured_object"] == element_id)
                sensor_names = {str(grid.names_of(sensor)[i]) for i in own} if own.size else set()
                points += sorted(p for p, (el, _q) in self.points.items() if el in sensor_names)
        # measured quantities in the point map's order, the fault indicators after them
        order = {q: k for k, q in enumerate(QUANTITIES)}
        points.sort(key=lambda p: (self.points[p][1] == "fpi", order.get(self.points[p][1], len(order))))
        return {
            "id": int(element_id),
            "component": component,
            "name": name,
            "kind": kind,
            "fields": fields,
            "points": points,
            "point_info": {p: self.point_info(p) for p in points},
        }

    def point_info(self, point: str) -> dict[str, str]:
        """A point's quantity and unit (from the point map when there is one), for labels and axes."""
        quantity = self.points[point][1]
        unit = self._unit_of(point) if self._unit_of is not None else None
        return {"quantity": quantity, "unit": QUANTITIES.get(quantity, "") if unit is None else unit}


class DiagramView:
    """The single-line diagrams of one grid (:mod:`opendso.grid.diagram`), laid out once on first use.

    The layout comes from the grid's normal switch states (it must not move when a switch
    operates); each view takes the live states. The catalogue (views and search index) is
    serialised once.
    """

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self._lock = threading.Lock()
        self._diagram: GridDiagram | None = None
        self._catalogue: bytes | None = None

    def _built(self) -> GridDiagram:
        with self._lock:
            if self._diagram is None:
                self._diagram = build_diagram(self._grid)
            return self._diagram

    def catalogue_json(self) -> bytes:
        """The views (substations, feeders) and the search index as JSON bytes."""
        diagram = self._built()
        with self._lock:
            if self._catalogue is None:
                self._catalogue = json.dumps(diagram.catalogue(), separators=(",", ":"), allow_nan=False).encode()
            return self._catalogue

    def view(self, *, substation: int | None, feeder: int | None, switches: Mapping[str, bool]) -> dict[str, Any]:
        """One substation's or feeder's diagram with the live switch states ``switches`` (id -> closed).

        Neither or both of ``substation`` and ``feeder``: :class:`InputError`; an unknown one:
        :class:`NotFoundError`.
        """
        if (substation is None) == (feeder is None):
            raise InputError("give either substation or feeder")
        diagram = self._built()
        ids = self._grid.switches["id"].tolist()
        normal = self._grid.switches["closed"].tolist()
        closed = [bool(switches.get(str(i), bool(c))) for i, c in zip(ids, normal, strict=True)]
        try:
            return diagram.view(substation=substation, feeder=feeder, closed=closed)
        except KeyError as exc:
            raise NotFoundError(f"{self._grid.name}: {exc.args[0]}") from None


def _drawing(grid: Grid, feeders: list[int], xy: npt.NDArray[np.float64], *, geographic: bool) -> dict[str, Any]:
    """The static part of the drawing: nodes at ``xy``, branches, switches (states added per request)."""
    node = grid.component("node")
    nodes = [
        {"id": int(i), "name": str(nm), "x": float(x), "y": float(y), "u_rated_kv": float(u) / 1e3, "feeder": int(f)}
        for i, nm, x, y, u, f in zip(
            node["id"].tolist(),
            grid.names_of("node"),
            xy[:, 0].tolist(),
            xy[:, 1].tolist(),
            node["u_rated"].tolist(),
            feeders,
            strict=True,
        )
    ]
    branches: list[dict[str, Any]] = []
    for component, array in grid.iter_branches():
        kinds = grid.column(component, "kind", component)
        for i, nm, k, a, b in zip(
            array["id"].tolist(),
            grid.names_of(component),
            kinds,
            array["from_node"].tolist(),
            array["to_node"].tolist(),
            strict=True,
        ):
            branches.append({"id": int(i), "name": str(nm), "kind": str(k or component), "from_node": a, "to_node": b})
    switches = [
        {"id": int(i), "name": str(nm), "node": int(n), "element": int(e)}
        for i, nm, n, e in zip(
            grid.switches["id"].tolist(),
            grid.switch_names,
            grid.switches["node"].tolist(),
            grid.switches["element"].tolist(),
            strict=True,
        )
    ]
    return {"name": grid.name, "geographic": geographic, "nodes": nodes, "branches": branches, "switches": switches}


def _element_index(grid: Grid) -> dict[int, tuple[str, int]]:
    """Element id -> (component, row) over every component, sensor and switch."""
    index: dict[int, tuple[str, int]] = {}
    for component, array in list(grid.input.items()) + list(grid.sensors.items()):
        for row, i in enumerate(array["id"].tolist()):
            index[int(i)] = (component, row)
    for row, i in enumerate(grid.switches["id"].tolist()):
        index[int(i)] = ("switch", row)
    return index


# -- the state -----------------------------------------------------------------------------------------------
def state_of(result: CycleResult | None, grid: Grid) -> dict[str, Any]:
    """The estimated state of a cycle result on ``grid`` (see the API contract); empty maps before the first."""
    switches = dict(
        zip(map(str, grid.switches["id"].tolist()), map(bool, grid.switches["closed"].tolist()), strict=True)
    )
    if result is None:
        return {
            "time": None,
            "observable": False,
            "converged": False,
            "cycle_ms": None,
            "u_pu": {},
            "energised": {},
            "loading": {},
            "switches": switches,
        }
    est = result.estimation
    ids = [str(i) for i in grid.component("node")["id"].tolist()]
    u_pu: dict[str, float | None] = {}
    loading: dict[str, float | None] = {}
    if est.converged and "node" in est.output:
        u = np.round(est.output["node"]["u_pu"], U_DECIMALS)
        u_pu = dict(zip(ids, map(finite, u.tolist()), strict=True))
        for component in BRANCH_COMPONENTS:
            out = est.output.get(component)
            if out is not None and out.size and "loading" in (out.dtype.names or ()):
                rounded = np.round(out["loading"], LOADING_DECIMALS).tolist()
                loading.update(zip(map(str, out["id"].tolist()), map(finite, rounded), strict=True))
    return {
        "time": result.time.isoformat(),
        "observable": bool(result.observable),
        "converged": bool(est.converged),
        "cycle_ms": round(result.timings_ms.get("cycle", 0.0), 3),
        "u_pu": u_pu,
        "energised": dict(zip(ids, map(bool, result.energised.tolist()), strict=True)),
        "loading": loading,
        "switches": switches,
    }


class StateView:
    """The latest cycle result and its state, built and serialised at most once per cycle.

    ``grid_now`` returns the grid with the present switch states; ``lock`` is the cycle's lock.
    """

    def __init__(self, grid_now: Callable[[], Grid], lock: threading.RLock) -> None:
        self._grid_now = grid_now
        self._lock = lock
        self.latest: CycleResult | None = None
        self.version = 0  # counts published states: the entity tag of /api/state
        self._state: dict[str, Any] | None = None
        self._json: tuple[bytes, str] | None = None

    def update(self, result: CycleResult) -> None:
        """Keep ``result`` as the latest: the next read builds its state."""
        with self._lock:
            self.latest = result
            self._state = None
            self._json = None
            self.version += 1

    def state(self) -> dict[str, Any]:
        """The latest estimated state (see :func:`state_of`)."""
        with self._lock:
            if self._state is not None:
                return self._state
            state = state_of(self.latest, self._grid_now())
            if self.latest is not None:  # before the first cycle the switch states may still change
                self._state = state
            return state

    def state_json(self) -> tuple[bytes, str]:
        """The latest state as JSON bytes and its entity tag, serialised once per cycle for every reader."""
        with self._lock:
            if self._json is None:
                body = json.dumps(self.state(), separators=(",", ":"), allow_nan=False).encode()
                self._json = (body, f'"{self.version}"')
            return self._json


# -- the alarm list ------------------------------------------------------------------------------------------
def alarm_entry(monitor: str, alarm: ActiveAlarm) -> dict[str, Any]:
    """One alarm of the list as the API and the stream give it."""
    return {
        "key": alarm.key,
        "monitor": monitor,
        "channel": alarm.channel,
        "condition": alarm.condition,
        "severity": alarm.severity,
        "priority": alarm.priority.name.lower(),
        "priority_rank": int(alarm.priority),
        "value": finite(alarm.value),
        "group": alarm.group,
        "since": alarm.since.isoformat(),
        "acknowledged": alarm.acknowledged,
        "state": alarm.state.value,
        "chattering": alarm.chattering,
        "cause": alarm.cause,
        "shelved_until": _iso(alarm.shelved_until),
        "shelved_at": _iso(alarm.shelved_at),
        "shelved_by": alarm.shelved_by,
        "shelve_reason": alarm.shelve_reason,
        "out_of_service": alarm.out_of_service,
        "out_of_service_since": _iso(alarm.out_of_service_since),
        "out_of_service_by": alarm.out_of_service_by,
        "out_of_service_reason": alarm.out_of_service_reason,
        "suppressed": alarm.suppressed,
        "suppressed_reason": alarm.suppressed_reason,
    }


class AlarmList:
    """The alarm list of some monitors, most urgent first, built once per change, with its version.

    Call :meth:`changed` after anything that may change an alarm (a cycle, an operator action).
    """

    def __init__(self, monitors: Callable[[], Sequence[AlarmMonitor]], lock: threading.RLock) -> None:
        self._monitors = monitors
        self._lock = lock
        self._version = 0
        self._cached: list[dict[str, Any]] | None = None

    def changed(self) -> None:
        """Forget the list built so far and count a new version."""
        with self._lock:
            self._cached = None
            self._version += 1

    def snapshot(self) -> tuple[int, list[dict[str, Any]]]:
        """The alarm list with its version (it grows with every change of any alarm)."""
        with self._lock:
            version = self._version
            if self._cached is not None:
                return version, self._cached
            listed = [(monitor.name, monitor.listed()) for monitor in self._monitors()]
        out = [alarm_entry(name, a) for name, alarms in listed for a in alarms]
        out.sort(key=lambda a: (a["priority_rank"], a["since"], a["key"]))
        with self._lock:
            if version == self._version:  # nothing changed the alarms meanwhile
                self._cached = out
        return version, out

    def select(
        self,
        *,
        priorities: Collection[str] = (),
        areas: Collection[str] = (),
        states: Collection[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """The list filtered by priority, area (group), state and time raised (``start <= since < end``)."""
        check_choices("priority", priorities, PRIORITIES)
        check_choices("state", states, ALARM_STATES)
        version, listed = self.snapshot()
        out = []
        for a in listed:
            if priorities and a["priority"] not in priorities:
                continue
            if areas and a["group"] not in areas:
                continue
            if states and a["state"] not in states:
                continue
            since = datetime.fromisoformat(a["since"])
            if (start is not None and since < start) or (end is not None and since >= end):
                continue
            out.append(a)
        return version, out


# -- trends --------------------------------------------------------------------------------------------------
def measurement_rows(
    historian: Historian, point: str, start: datetime, end: datetime, interval: timedelta | None = None
) -> list[dict[str, Any]]:
    """Measurements of a point (``[{ts, value, quality}]``) or, with ``interval``, aggregates (min/max/mean/count)."""
    if point not in historian.point_ids():
        raise NotFoundError(f"no measurement point named {point!r}")
    if end <= start:
        raise InputError(f"'to' ({end.isoformat()}) must be after 'from' ({start.isoformat()})")
    if interval is not None:
        frame = historian.aggregate(point, start, end, interval)
        return [
            {"ts": ts.isoformat(), "min": finite(lo), "max": finite(hi), "mean": finite(mu), "count": int(c)}
            for ts, lo, hi, mu, c in zip(
                frame["start"], frame["min"], frame["max"], frame["mean"], frame["count"], strict=True
            )
        ]
    frame = historian.read_range(point, start, end)
    return [
        {"ts": ts.isoformat(), "value": finite(v), "quality": int(q)}
        for ts, v, q in zip(frame["ts"], frame["value"], frame["quality"], strict=True)
    ]
