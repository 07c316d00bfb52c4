"""Measurement sets: power-grid-model sensor arrays, accuracy classes, assembling, counting and naming them.

A measurement set (:data:`Measurements`) maps a sensor component type (``sym_voltage_sensor``,
``sym_power_sensor`` on branch ends, loads, generators, sources or nodes, ``sym_current_sensor``
on branch ends) to its power-grid-model input array, in SI units (V, W, var, A, rad). Sets come
from a measurement file (:mod:`opendso.calc.measurement_file`), from a power flow
(:mod:`opendso.calc.synthesis`, for simulation and tests), from the real-time cycle's telemetry,
and from :func:`pseudo_measurements` (the control room's forecasts of loads and generators).
:func:`combine_measurements` joins sets made separately into one with unique sensor ids.

Sensor ids: the grid's own placements (``grid.sensors``) keep their ids, and so their names from
the source; every other sensor is numbered above the grid's largest id. :func:`sensor_names`
names both kinds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from power_grid_model import MeasuredTerminalType, initialize_array

from opendso.grid.model import Grid

#: Sensor component types the calculations fill and read.
SENSOR_TYPES: tuple[str, ...] = ("sym_voltage_sensor", "sym_power_sensor", "sym_current_sensor")

#: Branch components power-grid-model accepts power and current sensors on (links are not measurable).
MEASURABLE_BRANCHES: tuple[str, ...] = ("line", "asym_line", "generic_branch", "transformer")

#: Appliances a power sensor can sit on, with the terminal type power-grid-model wants.
APPLIANCE_TERMINALS: dict[str, MeasuredTerminalType] = {
    "sym_load": MeasuredTerminalType.load,
    "sym_gen": MeasuredTerminalType.generator,
    "source": MeasuredTerminalType.source,
}

_TERMINAL_LABEL = {
    int(MeasuredTerminalType.branch_from): "from",
    int(MeasuredTerminalType.branch_to): "to",
    int(MeasuredTerminalType.source): "source",
    int(MeasuredTerminalType.shunt): "shunt",
    int(MeasuredTerminalType.load): "load",
    int(MeasuredTerminalType.generator): "generator",
    9: "node",  # MeasuredTerminalType.node, deprecated in power-grid-model 1.13
}

#: A quantity that a source does not measure gets this many times its nominal sigma: it then
#: carries no weight, but power-grid-model still gets the complete sensor it requires.
UNMEASURED_SIGMA_FACTOR = 1e4

#: Local current angles with a sigma above this (rad) are taken as "angle not measured".
ANGLE_NOT_MEASURED_RAD = 1.0

#: A measurement set: sensor component type -> power-grid-model input array.
Measurements = dict[str, np.ndarray]


@dataclass(frozen=True)
class Accuracy:
    """Standard deviations of measurement errors (accuracy classes), used for sigmas and noise.

    Power sigmas are ``power_rel * |S| + power_abs_w`` (p and q alike: a meter's error scales with
    the apparent power it sees); pseudo-measurements use ``pseudo_rel`` and ``pseudo_abs_w``.
    """

    voltage_rel: float = 0.005  # of rated voltage
    power_rel: float = 0.01
    power_abs_w: float = 100.0
    current_rel: float = 0.01
    current_abs_a: float = 0.1
    current_angle_rad: float = 0.01
    pseudo_rel: float = 0.10
    pseudo_abs_w: float = 100.0


#: The accuracy classes used when a caller gives none.
DEFAULT_ACCURACY = Accuracy()


def grid_sensor_ids(grid: Grid, component: str | None = None) -> npt.NDArray[np.int32]:
    """Return the ids of the grid's own sensor placements (of one component type, or all)."""
    arrays = [a["id"] for c, a in grid.sensors.items() if a.size and (component is None or c == component)]
    return np.concatenate(arrays) if arrays else np.zeros(0, np.int32)


def pseudo_measurements(
    grid: Grid, *, accuracy: Accuracy = DEFAULT_ACCURACY, first_id: int | None = None
) -> Measurements:
    """Return pseudo-measurements of every in-service load and generator from the grid's set-points.

    Values are the grid's ``p_specified``/``q_specified`` (what the control room's profiles or
    forecasts say), sigmas ``pseudo_rel * |S| + pseudo_abs_w``: large, so real measurements win.
    """
    next_id = grid.max_id + 1 if first_id is None else first_id
    parts: list[np.ndarray] = []
    for component in ("sym_load", "sym_gen"):
        array = grid.input.get(component)
        if array is None or not array.size:
            continue
        array = array[array["status"] == 1]
        ps = initialize_array("input", "sym_power_sensor", array.size)
        ps["measured_object"] = array["id"]
        ps["measured_terminal_type"] = APPLIANCE_TERMINALS[component]
        p = np.nan_to_num(array["p_specified"])
        q = np.nan_to_num(array["q_specified"])
        sigma = accuracy.pseudo_rel * np.hypot(p, q) + accuracy.pseudo_abs_w
        ps["p_measured"], ps["q_measured"] = p, q
        ps["p_sigma"] = ps["q_sigma"] = sigma
        parts.append(ps)
    out = np.concatenate(parts) if parts else initialize_array("input", "sym_power_sensor", 0)
    out["id"] = np.arange(next_id, next_id + out.size)
    return {"sym_power_sensor": out}


def combine_measurements(grid: Grid, *sets: Mapping[str, np.ndarray]) -> Measurements:
    """Return one measurement set holding every sensor of ``sets``.

    Sensors that are the grid's own placements keep their ids (and so their source names); all
    others are numbered afresh above the grid's largest id, so sets made separately never clash.
    """
    own = grid_sensor_ids(grid)
    out: Measurements = {}
    for component in SENSOR_TYPES:
        arrays = [s[component] for s in sets if component in s and s[component].size]
        if arrays:
            out[component] = np.concatenate(arrays)
    next_id = max(grid.max_id, max((int(a["id"].max()) for a in out.values() if a.size), default=-1)) + 1
    for array in out.values():
        fresh = ~np.isin(array["id"], own)
        array["id"][fresh] = np.arange(next_id, next_id + int(fresh.sum()))
        next_id += int(fresh.sum())
    return out


def measurement_redundancy(grid: Grid, measurements: Mapping[str, np.ndarray]) -> float:
    """Return scalar measurements per state variable (2 per node less one reference angle)."""
    count = 0
    vs = measurements.get("sym_voltage_sensor")
    if vs is not None:
        count += vs.size + int(np.isfinite(vs["u_angle_measured"]).sum())
    ps = measurements.get("sym_power_sensor")
    if ps is not None:
        count += 2 * ps.size
    cs = measurements.get("sym_current_sensor")
    if cs is not None:
        count += cs.size + int((cs["i_angle_sigma"] <= ANGLE_NOT_MEASURED_RAD).sum())
    states = 2 * grid.count("node") - 1
    return count / states if states > 0 else math.nan


def _element_names(grid: Grid) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.object_]]:
    """All element ids (sorted) and their source names."""
    ids = [grid.input[c]["id"].astype(np.int64) for c in grid.input if grid.input[c].size]
    names = [grid.names_of(c) for c in grid.input if grid.input[c].size]
    all_ids = np.concatenate(ids)
    all_names = np.concatenate(names).astype(object)
    order = np.argsort(all_ids)
    return all_ids[order], all_names[order]


def sensor_names(grid: Grid, measurements: Mapping[str, np.ndarray]) -> dict[int, str]:
    """Return a name per sensor id: the source's name for the grid's own placements, else a description.

    Descriptions read ``U <node>``, ``PQ <element> <terminal>`` or ``I <branch> <end>``, with the
    measured element's source name.
    """
    ids, names = _element_names(grid)
    own: dict[int, str] = {}
    for component, array in grid.sensors.items():
        if array.size:
            own.update(zip(array["id"].tolist(), (str(n) for n in grid.names_of(component)), strict=True))
    out: dict[int, str] = {}
    for component, prefix in (("sym_voltage_sensor", "U"), ("sym_power_sensor", "PQ"), ("sym_current_sensor", "I")):
        sensor_array = measurements.get(component)
        if sensor_array is None or not sensor_array.size:
            continue
        array = sensor_array
        pos = np.clip(np.searchsorted(ids, array["measured_object"]), 0, max(ids.size - 1, 0))
        found = ids[pos] == array["measured_object"]
        objects = np.where(found, names[pos], array["measured_object"].astype(str).astype(object))
        if component == "sym_voltage_sensor":
            labels = [f"{prefix} {o}" for o in objects]
        else:
            labels = [
                f"{prefix} {o} {_TERMINAL_LABEL.get(int(t), str(t))}"
                for o, t in zip(objects, array["measured_terminal_type"], strict=True)
            ]
        for sid, label in zip(array["id"].tolist(), labels, strict=True):
            out[sid] = own.get(sid, label)
    return out
