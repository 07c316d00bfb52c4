"""Sensor placement: where meters sit, at a chosen redundancy, for studies, tests and benchmarks.

:func:`place_measurements` returns placements only (sensor arrays with ids, measured objects and
terminals; values and sigmas NaN). :func:`~opendso.calc.synthesis.measurements_from_power_flow`
fills them from a power flow; a grid read from a source carries its own placements in
``grid.sensors`` instead.
"""

from __future__ import annotations

import numpy as np
from power_grid_model import AngleMeasurementType, MeasuredTerminalType, initialize_array

from opendso.calc.sensors import MEASURABLE_BRANCHES, Measurements
from opendso.grid.model import Grid


def place_measurements(
    grid: Grid,
    *,
    voltage_fraction: float = 1.0,
    branch_fraction: float = 1.0,
    branch_quantity: str = "power",
    rng: np.random.Generator | None = None,
) -> Measurements:
    """Return measurement placements (values and sigmas NaN) at a chosen redundancy.

    Voltage magnitude on ``voltage_fraction`` of the nodes (the source nodes always, as every
    substation measures its busbar), and at both ends of every transformer and of
    ``branch_fraction`` of the lines and other measurable branches whose ends are both
    connected either active and reactive power (``branch_quantity="power"``) or the current
    phasor, magnitude and local angle (``"current"``). Which elements is drawn with ``rng``
    (seeded by the caller).
    """
    if branch_quantity not in ("power", "current"):
        raise ValueError(f"branch_quantity must be 'power' or 'current', not {branch_quantity!r}")
    rng = rng if rng is not None else np.random.default_rng(0)
    next_id = grid.max_id + 1
    nodes = grid.component("node")["id"]
    source_nodes = np.unique(grid.component("source")["node"])
    n_voltage = round(voltage_fraction * nodes.size)
    chosen = rng.permutation(nodes.size)[:n_voltage]
    v_nodes = np.union1d(nodes[chosen], source_nodes)
    vs = initialize_array("input", "sym_voltage_sensor", v_nodes.size)
    vs["id"] = np.arange(next_id, next_id + v_nodes.size)
    vs["measured_object"] = v_nodes
    next_id += v_nodes.size

    ends: list[np.ndarray] = []
    for component in MEASURABLE_BRANCHES:
        array = grid.input.get(component)
        if array is None or not array.size:
            continue
        connected = np.flatnonzero((array["from_status"] == 1) & (array["to_status"] == 1))
        if component != "transformer":
            connected = rng.permutation(connected)[: round(branch_fraction * connected.size)]
        ends.append(np.sort(array["id"][connected]))
    branch_ids = np.concatenate(ends) if ends else np.zeros(0, np.int32)
    component = "sym_power_sensor" if branch_quantity == "power" else "sym_current_sensor"
    sensors = initialize_array("input", component, 2 * branch_ids.size)
    sensors["id"] = np.arange(next_id, next_id + sensors.size)
    sensors["measured_object"] = np.concatenate([branch_ids, branch_ids])
    sensors["measured_terminal_type"] = np.repeat(
        [MeasuredTerminalType.branch_from, MeasuredTerminalType.branch_to], branch_ids.size
    )
    if component == "sym_current_sensor":
        sensors["angle_measurement_type"] = AngleMeasurementType.local_angle
    return {"sym_voltage_sensor": vs, component: sensors}
