"""State estimation on a :class:`~opendso.grid.model.Grid` through power-grid-model.

Measurements are power-grid-model sensor arrays (``sym_voltage_sensor``, ``sym_power_sensor``
on branch ends, loads, generators, sources or nodes, ``sym_current_sensor`` on branch ends),
keyed by component name, in SI units (V, W, var, A, rad). They come from

- :func:`measurements_from_power_flow`: the grid's measurement placements (or a set made by
  :func:`place_measurements`) filled from a power-flow result with seeded noise, plus
  pseudo-measurements on every load and generator taken from the grid's own set-points, the
  way a control room knows them (forecasts, not the truth);
- :func:`read_measurements`: a CSV or JSON file naming elements by their source names;
- :func:`pseudo_measurements` and :func:`combine_measurements` to assemble sets by hand.

:func:`run_state_estimation` runs power-grid-model's weighted-least-squares estimator
(iterative linear or Newton-Raphson) and never raises for an unobservable or non-converging
case: the result says so, with power-grid-model's reason. For bad-data detection every scalar
measurement (u, p, q, i magnitudes) gets a normalised residual ``r / sqrt(Omega_ii)``, where
``Omega_ii = sigma_i**2 * d r_i / d z_i`` is the residual variance. The sensitivity
``d r_i / d z_i`` (``1 - K_ii``, K the hat matrix) is measured, not derived: one sparse batch
run perturbs each measurement by one sigma, so it holds for whichever estimator ran. The
measurement with the largest normalised residual above the threshold (3 by default) is the
suspect (the classical largest-normalised-residual test); critical measurements (sensitivity
zero) cannot be tested and get NaN.
"""

from __future__ import annotations

import csv
import enum
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from power_grid_model import (
    AngleMeasurementType,
    CalculationMethod,
    ComponentType,
    MeasuredTerminalType,
    PowerGridModel,
    initialize_array,
)
from power_grid_model.errors import NotObservableError, PowerGridError

from opendso.calc.powerflow import PowerFlowResult, branch_records
from opendso.errors import InputError
from opendso.grid.model import Grid

log = logging.getLogger(__name__)
_WARNED_CURRENT_SENSORS: set[str] = set()

#: Sensor component types this module fills and reads.
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

#: One row per scalar measurement in :attr:`EstimationResult.residuals`.
RESIDUAL_DTYPE = np.dtype(
    [
        ("sensor", "i4"),
        ("quantity", "U1"),  # u, p, q or i
        ("measured", "f8"),
        ("sigma", "f8"),
        ("residual", "f8"),  # measured - estimated (SI)
        ("weighted", "f8"),  # residual / sigma
        ("sensitivity", "f8"),  # d residual / d measured = 1 - K_ii (NaN when not computed)
        ("normalised", "f8"),  # residual / sqrt(Omega_ii); NaN for critical measurements
    ]
)

Measurements = dict[str, np.ndarray]


class Method(enum.StrEnum):
    """State-estimation methods (names as on the command line)."""

    ITERATIVE_LINEAR = "iterative_linear"
    NEWTON_RAPHSON = "newton_raphson"

    @property
    def pgm(self) -> CalculationMethod:
        """The power-grid-model calculation method."""
        return CalculationMethod[self.value]


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


DEFAULT_ACCURACY = Accuracy()


class MeasurementFileError(InputError):
    """A measurement file is malformed: names the file, the data row (1-based) and the field."""

    def __init__(self, path: Path | str, message: str, *, row: int | None = None, field: str | None = None) -> None:
        self.path = str(path)
        self.row = row
        self.field = field
        self.message = message
        where = self.path
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")


# -- the result ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EstimationResult:
    """The outcome of one state estimation: whether it worked (with the reason), states and residuals."""

    grid: Grid
    converged: bool
    observable: bool
    method: Method
    measurements: Measurements
    output: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=RESIDUAL_DTYPE))
    threshold: float = 3.0

    @cached_property
    def sensor_names(self) -> dict[int, str]:
        """Sensor id -> name (source name, or a label built from the measured element); built on first use."""
        return sensor_names(self.grid, self.measurements)

    def node_u_pu(self) -> npt.NDArray[np.float64]:
        """Estimated per-unit voltage magnitude per node (empty when the estimation failed)."""
        return self.output["node"]["u_pu"] if "node" in self.output else np.zeros(0)

    @property
    def redundancy(self) -> float:
        """Scalar measurements per state variable (2 per node less one reference angle)."""
        return measurement_redundancy(self.grid, self.measurements)

    @property
    def max_normalised_residual(self) -> float | None:
        """Largest absolute normalised residual (None when none could be computed)."""
        values = np.abs(self.residuals["normalised"])
        values = values[np.isfinite(values)]
        return float(values.max()) if values.size else None

    @property
    def suspects(self) -> list[str]:
        """The sensor with the largest normalised residual when that exceeds the threshold, by name."""
        rows = self.suspect_rows()
        return [self.sensor_names.get(int(rows["sensor"][0]), str(rows["sensor"][0]))] if rows.size else []

    def suspect_rows(self) -> np.ndarray:
        """Residual rows above the threshold, largest normalised residual first."""
        norm = np.abs(self.residuals["normalised"])
        sel = np.isfinite(norm) & (norm > self.threshold)
        rows = self.residuals[sel]
        return rows[np.argsort(-np.abs(rows["normalised"]), kind="stable")]

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict (same node and branch layout as the power flow)."""
        above = self.suspect_rows()
        out: dict[str, Any] = {
            "grid": self.grid.name,
            "converged": self.converged,
            "observable": self.observable,
            "method": self.method.value,
            "error": self.error,
            "redundancy": self.redundancy,
            "bad_data_threshold": self.threshold,
            "max_normalised_residual": self.max_normalised_residual,
            "suspect_sensors": self.suspects,
            "above_threshold": [
                {
                    "sensor": self.sensor_names.get(int(r["sensor"]), str(r["sensor"])),
                    "quantity": str(r["quantity"]),
                    "normalised_residual": float(r["normalised"]),
                }
                for r in above
            ],
            "nodes": [],
            "branches": [],
        }
        if not self.converged:
            return out
        node = self.output["node"]
        out["nodes"] = [
            {
                "name": str(n),
                "u_pu": float(u),
                "u_angle_deg": float(a),
                "u_kv": float(v) / 1e3,
                "p_mw": float(p) / 1e6,
                "q_mvar": float(q) / 1e6,
            }
            for n, u, a, v, p, q in zip(
                self.grid.names_of("node"),
                node["u_pu"],
                np.rad2deg(node["u_angle"]),
                node["u"],
                node["p"],
                node["q"],
                strict=True,
            )
        ]
        out["branches"] = branch_records(self.grid, self.output, symmetric=True)
        return out


# -- measurement sets -----------------------------------------------------------------------------


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
    own = _grid_sensor_ids(grid)
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

    ``placements`` defaults to the grid's own (``grid.sensors``); see :func:`place_measurements`
    for sets at a chosen redundancy. A placement's own finite sigma is kept, a NaN sigma gets the
    ``accuracy`` class. ``noise`` scales the errors drawn with ``rng``: ``None`` or 0 gives the
    exact power-flow values, 1 errors with the stated sigmas (the sigmas reported never change).
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
        own = _grid_sensor_ids(grid, "sym_power_sensor")
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


# -- state estimation -----------------------------------------------------------------------------


def run_state_estimation(
    grid: Grid,
    measurements: Mapping[str, np.ndarray],
    *,
    method: Method | str = Method.ITERATIVE_LINEAR,
    error_tolerance: float = 1e-8,
    max_iterations: int = 100,
    threshold: float = 3.0,
    normalise: bool = True,
    candidates: int | None = 10,
    threading: int = 0,
) -> EstimationResult:
    """Run one state estimation and return its result; never raises for non-convergence or unobservability.

    ``threshold`` is the largest-normalised-residual limit of bad-data detection. With
    ``normalise`` (the default) residuals are normalised by their variance, measured with one
    sparse batch run of one scenario per measurement normalised. Only the ``candidates``
    measurements with the largest weighted residuals ``r / sigma`` are normalised (all of them
    with ``candidates=None``), so the cost does not grow with the grid. The other rows keep their
    weighted residual, a lower bound of their normalised one (``sqrt(Omega_ii) <= sigma``), so
    the largest value is always a normalised candidate; a measurement with a small weighted
    residual but very little redundancy can be missed, the price of that bounded cost. Without
    ``normalise``,
    ``normalised`` holds the weighted residual for every row. Measurements power-grid-model rejects (a sensor
    on a link or on an element that does not exist) raise :class:`~opendso.errors.InputError`.
    """
    method = Method(method)
    sensors = {c: a for c, a in measurements.items() if c in SENSOR_TYPES and a.size}
    if "sym_current_sensor" in sensors and _has_de_energised_nodes(grid):
        # power-grid-model 1.13 crashes the process (segmentation fault) in state estimation with a
        # current sensor while part of the grid is de-energised; leave current sensors out then
        # (warned once per grid: a real-time cycle would repeat it every cycle while the part is dead)
        log.log(
            logging.DEBUG if grid.name in _WARNED_CURRENT_SENSORS else logging.WARNING,
            "event=current_sensors_left_out grid=%s count=%d reason=de-energised part (power-grid-model crash)",
            grid.name,
            sensors["sym_current_sensor"].size,
        )
        _WARNED_CURRENT_SENSORS.add(grid.name)
        sensors.pop("sym_current_sensor")
    unknown = set(measurements) - set(SENSOR_TYPES)
    if unknown:
        raise InputError(f"{grid.name}: unsupported measurement component(s): {sorted(unknown)}")
    data = grid.pgm_input()
    data.update(sensors)

    def result(
        *,
        converged: bool,
        observable: bool,
        error: str | None = None,
        output: dict[str, np.ndarray] | None = None,
        residuals: np.ndarray | None = None,
    ) -> EstimationResult:
        return EstimationResult(
            grid=grid,
            converged=converged,
            observable=observable,
            method=method,
            measurements=dict(sensors),
            output=output or {},
            error=error,
            threshold=threshold,
            residuals=residuals if residuals is not None else np.zeros(0, dtype=RESIDUAL_DTYPE),
        )

    try:
        model = PowerGridModel(data, system_frequency=grid.frequency_hz)
    except PowerGridError as exc:
        raise InputError(f"{grid.name}: measurements rejected by power-grid-model: {_reason(exc)}") from None
    options: dict[str, Any] = {
        "calculation_method": method.pgm,
        "error_tolerance": error_tolerance,
        "max_iterations": max_iterations,
    }
    try:
        output: dict[str, np.ndarray] = {str(k): v for k, v in model.calculate_state_estimation(**options).items()}
    except NotObservableError as exc:
        return result(converged=False, observable=False, error=_reason(exc))
    except PowerGridError as exc:
        return result(converged=False, observable=True, error=_reason(exc))
    residuals = _residual_table(sensors, output)
    residuals["normalised"] = residuals["weighted"]
    if normalise and residuals.size:
        if candidates is None or candidates >= residuals.size:
            rows = np.arange(residuals.size)
        else:
            weighted = np.nan_to_num(np.abs(residuals["weighted"]), nan=-1.0)
            rows = np.sort(np.argpartition(-weighted, candidates - 1)[:candidates]).astype(np.int64)
        sensitivity = _sensitivity(model, sensors, residuals, options, threading, rows)
        residuals["sensitivity"] = sensitivity
        ok = sensitivity > 1e-6
        normalised = residuals["residual"] / (residuals["sigma"] * np.sqrt(np.where(ok, sensitivity, 1.0)))
        residuals["normalised"][rows] = np.where(ok[rows], normalised[rows], np.nan)
    return result(converged=True, observable=True, output=output, residuals=residuals)


def _reason(exc: Exception) -> str:
    text = str(exc).replace("\nTry validate_input_data() or validate_batch_data() to validate your data.", "")
    return f"{type(exc).__name__}: {text.strip()}"


_QUANTITIES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    # component: (quantity, measured field, sigma field, residual field)
    "sym_voltage_sensor": (("u", "u_measured", "u_sigma", "u_residual"),),
    "sym_power_sensor": (("p", "p_measured", "p_sigma", "p_residual"), ("q", "q_measured", "q_sigma", "q_residual")),
    "sym_current_sensor": (("i", "i_measured", "i_sigma", "i_residual"),),
}


def _residual_table(sensors: Mapping[str, np.ndarray], output: Mapping[str, np.ndarray]) -> np.ndarray:
    """One row per scalar magnitude measurement (u, p, q, i), in component then quantity order."""
    parts: list[np.ndarray] = []
    for component, quantities in _QUANTITIES.items():
        array = sensors.get(component)
        if array is None:
            continue
        res = output[component]
        sigma_p = array["power_sigma"] if component == "sym_power_sensor" else None
        for quantity, meas, sig, resid in quantities:
            rows = np.zeros(array.size, dtype=RESIDUAL_DTYPE)
            rows["sensor"] = array["id"]
            rows["quantity"] = quantity
            rows["measured"] = array[meas]
            sigma = array[sig]
            if sigma_p is not None:
                sigma = np.where(np.isfinite(sigma), sigma, sigma_p)
            rows["sigma"] = sigma
            rows["residual"] = res[resid]
            rows["weighted"] = res[resid] / sigma
            rows["sensitivity"] = np.nan
            parts.append(rows)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=RESIDUAL_DTYPE)


def _sensitivity(
    model: PowerGridModel,
    sensors: Mapping[str, np.ndarray],
    residuals: np.ndarray,
    options: dict[str, Any],
    threading: int,
    rows: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:
    """Return d residual_i / d measured_i for the given residual rows (NaN elsewhere).

    One sparse batch with one scenario per row: scenario ``s`` moves measurement ``rows[s]`` by
    one sigma and reads back its own residual.
    """
    n_rows = residuals.size
    sens = np.full(n_rows, np.nan)
    if not rows.size:
        return sens
    # where each residual row comes from: component, quantity number and sensor position
    blocks: list[tuple[str, int, int, int]] = []  # (component, k, first row, size)
    start = 0
    for component, quantities in _QUANTITIES.items():
        array = sensors.get(component)
        if array is None:
            continue
        for k in range(len(quantities)):
            blocks.append((component, k, start, array.size))
            start += array.size
    update: dict[str, Any] = {}
    reads: list[tuple[str, str, npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
    for component in {b[0] for b in blocks}:
        array = sensors[component]
        mine = [(k, first, size) for c, k, first, size in blocks if c == component]
        scen: list[npt.NDArray[np.int64]] = []
        pos: list[npt.NDArray[np.int64]] = []
        kind: list[npt.NDArray[np.int64]] = []
        for k, first, size in mine:
            hit = np.flatnonzero((rows >= first) & (rows < first + size))
            scen.append(hit)
            pos.append(rows[hit] - first)
            kind.append(np.full(hit.size, k))
        s_all, p_all, k_all = np.concatenate(scen), np.concatenate(pos), np.concatenate(kind)
        if not s_all.size:
            continue
        order = np.argsort(s_all, kind="stable")
        s_all, p_all, k_all = s_all[order], p_all[order], k_all[order]
        upd = initialize_array("update", component, s_all.size)
        upd["id"] = array["id"][p_all]
        for k, (_, meas, _, resid) in enumerate(_QUANTITIES[component]):
            sel = k_all == k
            upd[meas][sel] = array[meas][p_all[sel]] + residuals["sigma"][rows[s_all[sel]]]
            reads.append((component, resid, s_all[sel], p_all[sel], rows[s_all[sel]]))
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.add.at(indptr, s_all + 1, 1)
        update[component] = {"data": upd, "indptr": np.cumsum(indptr)}
    try:
        batch = model.calculate_state_estimation(
            update_data=update,
            output_component_types=list(update),
            threading=threading,
            continue_on_batch_error=True,
            **options,
        )
    except PowerGridError:
        return sens
    failed = _failed_scenarios(model, rows.size)
    for component, resid, scenarios, positions, residual_rows in reads:
        perturbed = batch[ComponentType(component)][resid][scenarios, positions]
        value = (perturbed - residuals["residual"][residual_rows]) / residuals["sigma"][residual_rows]
        sens[residual_rows] = np.where(failed[scenarios], np.nan, value)
    return np.clip(sens, 0.0, 1.0)


def _has_de_energised_nodes(grid: Grid) -> bool:
    """Whether some node has no path to an in-service source under the present statuses."""
    from opendso.grid.topology import analyse_topology

    return not bool(analyse_topology(grid).node_energised.all())


def _failed_scenarios(model: PowerGridModel, n: int) -> npt.NDArray[np.bool_]:
    """Scenarios of the last batch that failed (continue_on_batch_error keeps the rest)."""
    failed = np.zeros(n, dtype=bool)
    error = model.batch_error
    if error is not None:
        failed[np.asarray(error.failed_scenarios, dtype=np.int64)] = True
    return failed


# -- names ----------------------------------------------------------------------------------------


def _grid_sensor_ids(grid: Grid, component: str | None = None) -> npt.NDArray[np.int32]:
    arrays = [a["id"] for c, a in grid.sensors.items() if a.size and (component is None or c == component)]
    return np.concatenate(arrays) if arrays else np.zeros(0, np.int32)


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


# -- measurement files ---------------------------------------------------------------------------

#: Columns of a measurement file; ``side`` may be left out when no row measures a branch.
FILE_COLUMNS: tuple[str, ...] = ("element", "quantity", "side", "value", "sigma")
_REQUIRED = ("element", "quantity", "value", "sigma")


def read_measurements(path: Path, grid: Grid) -> Measurements:
    """Return the sensor arrays described by a CSV or JSON measurement file.

    One row per scalar measurement, with columns (CSV header, or keys of each object in a JSON
    list, or in its ``"measurements"`` list):

    - ``element``: the measured element's name in its source (a node, a line or transformer,
      a load, generator or source);
    - ``quantity``: ``u`` (voltage magnitude, line-to-line, at a node), ``p`` (active power),
      ``q`` (reactive power) or ``i`` (current magnitude, at a branch end);
    - ``side``: ``from`` or ``to`` for a branch (``hv``/``lv`` are accepted for transformers),
      empty otherwise;
    - ``value`` and ``sigma`` (standard deviation, > 0) in SI units: V, W, var, A. Branch power
      is measured into the branch; a load's power is consumption, a generator's or source's
      injection (power-grid-model's conventions).

    A p without a matching q on the same element and side (or the reverse) is taken as an
    unmeasured q with no weight. Any bad row raises :class:`MeasurementFileError` (an
    :class:`~opendso.errors.InputError`) naming the file, the 1-based data row and the field.
    """
    records = _read_records(path)
    lookup = _NameLookup(grid)
    voltage: list[tuple[int, float, float]] = []
    power: dict[tuple[int, int], dict[str, tuple[float, float]]] = {}
    current: list[tuple[int, int, float, float]] = []
    for row, record in enumerate(records, start=1):
        for column in _REQUIRED:
            if column not in record:
                raise MeasurementFileError(path, "missing column", row=row, field=column)
        name = str(record["element"]).strip()
        quantity = str(record["quantity"]).strip().lower()
        side = str(record.get("side") or "").strip().lower()
        if side in ("nan", "none"):
            side = ""
        value = _number(path, row, "value", record["value"])
        sigma = _number(path, row, "sigma", record["sigma"])
        if not sigma > 0:
            raise MeasurementFileError(path, f"sigma must be positive, got {sigma}", row=row, field="sigma")
        if quantity not in ("u", "p", "q", "i"):
            raise MeasurementFileError(
                path, f"unknown quantity {quantity!r} (expected u, p, q or i)", row=row, field="quantity"
            )
        if quantity == "u":
            node = lookup.node(name)
            if node is None:
                raise MeasurementFileError(path, f"no node named {name!r}", row=row, field="element")
            voltage.append((node, value, sigma))
            continue
        target = lookup.terminal(name, side, branch_only=quantity == "i")
        if isinstance(target, str):
            raise MeasurementFileError(path, target, row=row, field="side" if "side" in target else "element")
        if quantity == "i":
            current.append((*target, value, sigma))
        else:
            entry = power.setdefault(target, {})
            if quantity in entry:
                raise MeasurementFileError(
                    path, f"{quantity} of {name!r} {side} given twice", row=row, field="quantity"
                )
            entry[quantity] = (value, sigma)
    out: Measurements = {}
    next_id = grid.max_id + 1
    if voltage:
        vs = initialize_array("input", "sym_voltage_sensor", len(voltage))
        vs["id"] = np.arange(next_id, next_id + vs.size)
        vs["measured_object"], vs["u_measured"], vs["u_sigma"] = (np.array(c) for c in zip(*voltage, strict=True))
        next_id += vs.size
        out["sym_voltage_sensor"] = vs
    if power:
        keys = list(power)
        ps = initialize_array("input", "sym_power_sensor", len(keys))
        ps["id"] = np.arange(next_id, next_id + ps.size)
        ps["measured_object"] = [k[0] for k in keys]
        ps["measured_terminal_type"] = [k[1] for k in keys]
        for quantity, other in (("p", "q"), ("q", "p")):
            values = [power[k].get(quantity, (0.0, UNMEASURED_SIGMA_FACTOR * power[k][other][1])) for k in keys]
            ps[f"{quantity}_measured"] = [v[0] for v in values]
            ps[f"{quantity}_sigma"] = [v[1] for v in values]
        next_id += ps.size
        out["sym_power_sensor"] = ps
    if current:
        cs = initialize_array("input", "sym_current_sensor", len(current))
        cs["id"] = np.arange(next_id, next_id + cs.size)
        cs["measured_object"], cs["measured_terminal_type"], cs["i_measured"], cs["i_sigma"] = (
            np.array(c) for c in zip(*current, strict=True)
        )
        cs["angle_measurement_type"] = AngleMeasurementType.local_angle
        cs["i_angle_measured"] = 0.0
        cs["i_angle_sigma"] = np.pi  # magnitude only
        out["sym_current_sensor"] = cs
    return out


def _read_records(path: Path) -> list[Mapping[str, Any]]:
    """Rows of a CSV or JSON measurement file as mappings."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MeasurementFileError(path, f"cannot read: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MeasurementFileError(path, f"malformed JSON: {exc}") from None
        if isinstance(data, dict):
            data = data.get("measurements")
        if not isinstance(data, list):
            raise MeasurementFileError(path, "expected a list of measurements (or an object with 'measurements')")
        for row, record in enumerate(data, start=1):
            if not isinstance(record, dict):
                raise MeasurementFileError(path, "each measurement must be an object", row=row)
        return data
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None:
        raise MeasurementFileError(path, "empty file: expected a header " + ",".join(FILE_COLUMNS))
    header = [f.strip().lower() for f in reader.fieldnames]
    for column in _REQUIRED:
        if column not in header:
            raise MeasurementFileError(path, "missing column in the header", row=None, field=column)
    records: list[Mapping[str, Any]] = []
    for raw in reader:
        records.append({k.strip().lower(): v for k, v in raw.items() if k is not None and v is not None})
    return records


def _number(path: Path, row: int, column: str, raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise MeasurementFileError(path, f"not a number: {raw!r}", row=row, field=column) from None
    if not math.isfinite(value):
        raise MeasurementFileError(path, f"not a finite number: {raw!r}", row=row, field=column)
    return value


class _NameLookup:
    """Element names of a grid, to resolve measurement-file rows."""

    def __init__(self, grid: Grid) -> None:
        def table(components: Iterable[str]) -> dict[str, tuple[str, int]]:
            out: dict[str, tuple[str, int]] = {}
            for component in components:
                array = grid.input.get(component)
                if array is None or not array.size:
                    continue
                for name, element_id in zip(grid.names_of(component), array["id"].tolist(), strict=True):
                    out.setdefault(str(name), (component, element_id))
            return out

        self.nodes = table(("node",))
        self.branches = table(MEASURABLE_BRANCHES)
        self.appliances = table(APPLIANCE_TERMINALS)

    def node(self, name: str) -> int | None:
        hit = self.nodes.get(name)
        return hit[1] if hit else None

    def terminal(self, name: str, side: str, *, branch_only: bool) -> tuple[int, int] | str:
        """(element id, terminal type) for a power or current measurement, or the reason it is bad."""
        branch = self.branches.get(name)
        if branch is not None:
            if side in ("from", "hv"):
                return branch[1], int(MeasuredTerminalType.branch_from)
            if side in ("to", "lv"):
                return branch[1], int(MeasuredTerminalType.branch_to)
            return f"branch {name!r} needs side 'from' or 'to', got {side!r}"
        if branch_only:
            return f"no line or transformer named {name!r}"
        if side:
            return f"side {side!r} given for {name!r}, which is not a branch"
        appliance = self.appliances.get(name)
        if appliance is not None:
            return appliance[1], int(APPLIANCE_TERMINALS[appliance[0]])
        if self.node(name) is not None:
            return f"{name!r} is a node: p and q are measured on a branch end, a load, a generator or a source"
        return f"no element named {name!r}"
