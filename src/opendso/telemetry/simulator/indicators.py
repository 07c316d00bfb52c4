"""Fault-passage indicators of the field simulator: which points there are, and which pick up.

A fault-passage indicator is a point of quantity ``fpi`` (:data:`~opendso.telemetry.binding.FPI`)
on a switch or on a branch sensor (a power or current sensor at a branch end): 1.0 while it has
picked up, 0.0 otherwise.
:func:`with_fault_indicators` adds one such point per switch and branch sensor to a point map;
:func:`indicators_on_fault_path` says which indicators see the fault current of a fault at a
node: those on the branches between the source and the fault, on the faulted feeder. The twin
(:class:`~opendso.telemetry.simulator.twin.FieldSimulator`) holds which have picked up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from power_grid_model import MeasuredTerminalType

from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology, path_from_source
from opendso.telemetry.binding import FPI
from opendso.telemetry.points import Point, PointMap

__all__ = ["BRANCH_TERMINALS", "FaultPath", "indicators_on_fault_path", "with_fault_indicators"]

#: A branch sensor's terminal types (branch_from, branch_to) in power-grid-model.
BRANCH_TERMINALS = (int(MeasuredTerminalType.branch_from), int(MeasuredTerminalType.branch_to))

#: The sensor tables whose branch sensors carry indicators.
_BRANCH_SENSOR_COMPONENTS = ("sym_power_sensor", "sym_current_sensor")


@dataclass(frozen=True)
class FaultPath:
    """The indicators a fault picks up: ``switches`` (a mask over the grid's switches) and ``sensors`` (sensor ids)."""

    feeder: int
    switches: npt.NDArray[np.bool_]
    sensors: frozenset[int]


def indicators_on_fault_path(grid: Grid, fault_node: str) -> FaultPath | None:
    """Return the indicators between the source and a fault at node ``fault_node``; None when it is not energised.

    ``grid`` is the grid as it stands when the fault happens (its switch states decide the path):
    the indicators on the branches of the path from the source to the node, on the node's feeder,
    pick up, for switches and for branch sensors alike.
    """
    topology = analyse_topology(grid)
    node_id = int(grid.component("node")["id"][np.flatnonzero(grid.names_of("node") == fault_node)[0]])
    path = path_from_source(topology, node_id)
    if path is None:
        return None
    row = int(np.flatnonzero(topology.node_id == node_id)[0])
    feeder = int(topology.node_feeder[row])
    on_path: set[int] = set()
    for component, ids in topology.element_id.items():
        feeders = topology.branch_feeder.get(component)
        if feeders is None:
            continue
        hit = np.isin(ids, path.branches) & ((feeders == feeder) | (feeder < 0))
        on_path.update(int(i) for i in ids[hit])
    switches = np.isin(grid.switches["element"], list(on_path))
    sensor_ids: set[int] = set()
    for component in _BRANCH_SENSOR_COMPONENTS:
        sensors = grid.sensors.get(component)
        if sensors is None or not sensors.size:
            continue
        hit = np.isin(sensors["measured_object"], list(on_path)) & np.isin(
            sensors["measured_terminal_type"], BRANCH_TERMINALS
        )
        sensor_ids.update(int(i) for i in sensors["id"][hit])
    return FaultPath(feeder, switches, frozenset(sensor_ids))


def with_fault_indicators(point_map: PointMap, grid: Grid, *, source: str | None = None) -> PointMap:
    """Return ``point_map`` with a fault-passage indicator point (``<element>/fpi``) per switch and branch sensor.

    The points go to ``source`` (default: the first source), after its last address: Modbus
    uint16 registers, MQTT key ``fpi`` on the element's topic, IEC 104 single points
    (M_SP_NA_1) from IOA 3001. Their quantity is ``fpi`` (1.0 picked up, 0.0 not).
    """
    if not point_map.sources:
        raise InputError(f"{point_map.file}: no source to put fault-passage indicators on")
    src = point_map.sources[source or next(iter(point_map.sources))]
    mine = point_map.points_of(src.name)
    elements = [str(n) for n in grid.switch_names]
    for component in _BRANCH_SENSOR_COMPONENTS:
        sensors = grid.sensors.get(component)
        if sensors is not None and sensors.size:
            on_branch = np.isin(sensors["measured_terminal_type"], BRANCH_TERMINALS)
            elements += [str(n) for n in grid.names_of(component)[on_branch]]
    register = max((p.register + p.register_count for p in mine if p.register is not None), default=0)
    ioa = max([3000] + [p.ioa for p in mine if p.ioa is not None and p.type == "M_SP_NA_1"]) + 1
    topics = {p.element: p.topic for p in mine if p.topic is not None}
    added: list[Point] = []
    for element in dict.fromkeys(elements):
        kw: dict[str, Any]
        if src.protocol == "modbus":
            kw = {"register": register, "data_type": "uint16", "poll_group": next(iter(src.poll_groups), "default")}
            register += 1
        elif src.protocol == "mqtt":
            kw = {"topic": topics.get(element) or _topic_part(element), "key": FPI}
        else:
            kw = {"common_address": src.common_address, "ioa": ioa, "type": "M_SP_NA_1"}
            ioa += 1
        added.append(Point(f"{element}/{FPI}", element, FPI, "", src.name, **kw))
    return PointMap(file=point_map.file, sources=point_map.sources, points=point_map.points + tuple(added))


def _topic_part(name: str) -> str:
    # the same rule as point_map_for_grid's topics, so an indicator shares its element's topic
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "element"
