"""Measurement synthesis: what the field would send, made from a power flow of the true state.

The simulator (:mod:`opendso.telemetry.simulator`), the command line's ``estimate`` without a
measurement file, the tests and the benchmarks take their measurements here:
:func:`measurements_from_power_flow` fills sensor placements (the grid's own, or a set from
:func:`~opendso.calc.placement.place_measurements`) with the power flow's values at each sensor's
terminal plus seeded noise of the stated sigmas, and adds pseudo-measurements of the loads and
generators from the grid's set-points (forecasts, not the truth). Conventions are power-grid-model's:
branch power into the branch at the measured end, a load's power as consumption, a generator's or
source's as injection, the local current angle as arg(U) - arg(I).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from power_grid_model import AngleMeasurementType, MeasuredTerminalType

from opendso.calc.powerflow import PowerFlowResult
from opendso.calc.sensors import (
    ANGLE_NOT_MEASURED_RAD,
    APPLIANCE_TERMINALS,
    DEFAULT_ACCURACY,
    MEASURABLE_BRANCHES,
    UNMEASURED_SIGMA_FACTOR,
    Accuracy,
    Measurements,
    combine_measurements,
    grid_sensor_ids,
    pseudo_measurements,
)
from opendso.errors import InputError
from opendso.grid.model import Grid


def measurements_from_power_flow(
    grid: Grid,
    result: PowerFlowResult,
    *,
    noise: float | None,
    rng: np.random.Generator | None = None,
    placements: Mapping[str, np.ndarray] | None = None,
    pseudo_loads: bool = True,
    accuracy: Accuracy = DEFAULT_ACCURACY,
) -> Measurements:
    """Return measurements filled from a power-flow result, with seeded noise and load pseudo-measurements.

    ``placements`` defaults to the grid's own (``grid.sensors``); see
    :func:`~opendso.calc.placement.place_measurements` for sets at a chosen redundancy. A
    placement's own finite sigma is kept, a NaN sigma gets the ``accuracy`` class. ``noise``
    scales the errors drawn with ``rng``: ``None`` or 0 gives the exact power-flow values, 1
    errors with the stated sigmas (the sigmas reported never change).
    Quantities a source does not measure (``grid.extra["sym_power_sensor"]["has_p"/"has_q"]``) are
    given a weightless sigma. With ``pseudo_loads``, every in-service load and generator gets a
    pseudo-measurement from ``grid`` (:func:`pseudo_measurements`), not from the power flow: pass
    the grid the control room holds, and a result computed on the true state.
    """
    if not result.converged or "node" not in result.output:
        raise InputError(f"{grid.name}: cannot take measurements from a power flow that did not converge")
    if not result.symmetric:
        raise InputError(f"{grid.name}: measurements need a symmetric (balanced) power-flow result")
    placements = grid.sensors if placements is None else placements
    rng = rng if rng is not None else np.random.default_rng(0)
    scale = 0.0 if noise is None else float(noise)
    out = _output_index(result.output)
    filled: Measurements = {}

    vs = placements.get("sym_voltage_sensor")
    if vs is not None and vs.size:
        vs = vs.copy()
        rows = grid.node_positions(vs["measured_object"])
        u_true = result.output["node"]["u"][rows]
        sigma = np.where(
            np.isfinite(vs["u_sigma"]), vs["u_sigma"], accuracy.voltage_rel * grid.component("node")["u_rated"][rows]
        )
        vs["u_sigma"] = sigma
        vs["u_measured"] = u_true + scale * sigma * rng.standard_normal(vs.size)
        vs["u_angle_measured"] = np.nan
        filled["sym_voltage_sensor"] = vs

    ps = placements.get("sym_power_sensor")
    if ps is not None and ps.size:
        ps = ps.copy()
        p, q = out.power(ps["measured_object"], ps["measured_terminal_type"])
        nominal = accuracy.power_rel * np.hypot(p, q) + accuracy.power_abs_w
        own = grid_sensor_ids(grid, "sym_power_sensor")
        has_p, has_q = _has_pq(grid, ps["id"], own)
        for value, meas, sig, has in ((p, "p_measured", "p_sigma", has_p), (q, "q_measured", "q_sigma", has_q)):
            sigma = np.where(np.isfinite(ps[sig]), ps[sig], nominal)
            noisy = value + scale * sigma * rng.standard_normal(ps.size)
            ps[meas] = np.where(has, noisy, 0.0)
            ps[sig] = np.where(has, sigma, UNMEASURED_SIGMA_FACTOR * sigma)
        ps["power_sigma"] = np.nan
        filled["sym_power_sensor"] = ps

    cs = placements.get("sym_current_sensor")
    if cs is not None and cs.size:
        cs = cs.copy()
        i_true, angle_true = out.current(cs["measured_object"], cs["measured_terminal_type"])
        sigma = np.where(
            np.isfinite(cs["i_sigma"]), cs["i_sigma"], accuracy.current_rel * i_true + accuracy.current_abs_a
        )
        cs["i_sigma"] = sigma
        cs["i_measured"] = np.abs(i_true + scale * sigma * rng.standard_normal(cs.size))
        cs["angle_measurement_type"] = AngleMeasurementType.local_angle
        angle_sigma = np.where(np.isfinite(cs["i_angle_sigma"]), cs["i_angle_sigma"], accuracy.current_angle_rad)
        cs["i_angle_sigma"] = angle_sigma
        # an angle the source does not measure (huge sigma) is written without noise
        measured_angle = angle_sigma <= ANGLE_NOT_MEASURED_RAD
        cs["i_angle_measured"] = angle_true + np.where(
            measured_angle, scale * angle_sigma * rng.standard_normal(cs.size), 0.0
        )
        filled["sym_current_sensor"] = cs

    if pseudo_loads:
        return combine_measurements(grid, filled, pseudo_measurements(grid, accuracy=accuracy))
    return filled


def _has_pq(
    grid: Grid, ids: npt.NDArray[np.int32], own: npt.NDArray[np.int32]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Which of p and q each power sensor measures: the source's flags for its own placements, else both."""
    has_p = np.ones(ids.size, dtype=bool)
    has_q = np.ones(ids.size, dtype=bool)
    flags = grid.extra.get("sym_power_sensor", {})
    if own.size and "has_p" in flags:
        order = np.argsort(own)
        rows = order[np.clip(np.searchsorted(own, ids, sorter=order), 0, own.size - 1)]
        hit = own[rows] == ids
        has_p[hit] = np.asarray(flags["has_p"], bool)[rows[hit]]
        has_q[hit] = np.asarray(flags["has_q"], bool)[rows[hit]]
    return has_p, has_q


# -- power-flow values at sensor terminals ---------------------------------------------------------


@dataclass(frozen=True)
class _OutputIndex:
    """Power-flow output values looked up by element id, vectorised."""

    ids: npt.NDArray[np.int64]
    p_from: npt.NDArray[np.float64]
    q_from: npt.NDArray[np.float64]
    p_to: npt.NDArray[np.float64]
    q_to: npt.NDArray[np.float64]
    i_from: npt.NDArray[np.float64]
    i_to: npt.NDArray[np.float64]

    def rows(self, objects: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
        pos = np.clip(np.searchsorted(self.ids, objects), 0, max(self.ids.size - 1, 0))
        if not self.ids.size or np.any(self.ids[pos] != objects):
            missing = np.asarray(objects)[self.ids[pos] != objects] if self.ids.size else np.asarray(objects)
            raise InputError(f"sensor(s) measure element id(s) with no power-flow result: {missing[:10].tolist()}")
        return pos

    def power(self, objects: npt.NDArray[Any], terminals: npt.NDArray[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Measured p and q at each (object, terminal): branch ends into the branch, appliances as measured."""
        rows = self.rows(objects)
        to_side = terminals == MeasuredTerminalType.branch_to
        p = np.where(to_side, self.p_to[rows], self.p_from[rows])
        q = np.where(to_side, self.q_to[rows], self.q_from[rows])
        return p, q

    def current(self, objects: npt.NDArray[Any], terminals: npt.NDArray[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Current magnitude and local angle (current angle minus voltage angle) at each branch end."""
        rows = self.rows(objects)
        to_side = terminals == MeasuredTerminalType.branch_to
        i = np.where(to_side, self.i_to[rows], self.i_from[rows])
        p = np.where(to_side, self.p_to[rows], self.p_from[rows])
        q = np.where(to_side, self.q_to[rows], self.q_from[rows])
        # power-grid-model's local current angle is the power-factor angle arg(U) - arg(I) = arg(S)
        # (with exact values and tight angle sigmas this reproduces the power flow to 1e-14 p.u.)
        return i, np.arctan2(q, p)


def _output_index(output: Mapping[str, np.ndarray]) -> _OutputIndex:
    """Index branch ends and appliances of a symmetric power-flow output by id."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("ids", "p_from", "q_from", "p_to", "q_to", "i_from", "i_to")}
    for component in MEASURABLE_BRANCHES:
        res = output.get(component)
        if res is None or not res.size:
            continue
        for key, values in cols.items():
            values.append(res["id"] if key == "ids" else res[key])
    for component in (*APPLIANCE_TERMINALS, "node"):
        res = output.get(component)
        if res is None or not res.size:
            continue
        cols["ids"].append(res["id"])
        # appliance sensors measure in the appliance's own reference direction, as power-grid-model reports it
        cols["p_from"].append(res["p"])
        cols["q_from"].append(res["q"])
        cols["p_to"].append(res["p"])
        cols["q_to"].append(res["q"])
        current = res["i"] if "i" in (res.dtype.names or ()) else np.full(res.size, np.nan)
        cols["i_from"].append(current)
        cols["i_to"].append(current)
    arrays = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    order = np.argsort(arrays["ids"], kind="stable")
    sorted_arrays = {k: v[order] for k, v in arrays.items()}
    return _OutputIndex(
        ids=sorted_arrays["ids"].astype(np.int64),
        p_from=sorted_arrays["p_from"],
        q_from=sorted_arrays["q_from"],
        p_to=sorted_arrays["p_to"],
        q_to=sorted_arrays["q_to"],
        i_from=sorted_arrays["i_from"],
        i_to=sorted_arrays["i_to"],
    )
