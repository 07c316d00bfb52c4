"""State estimation on a :class:`~opendso.grid.model.Grid` through power-grid-model.

:func:`run_state_estimation` takes a measurement set (:mod:`opendso.calc.sensors`: power-grid-model
sensor arrays in SI units, from a file, from telemetry, or synthesised from a power flow) and runs
power-grid-model's weighted-least-squares estimator (iterative linear or Newton-Raphson,
:class:`EstimationMethod`). It never raises for an unobservable or non-converging case: the
:class:`EstimationResult` says so, with power-grid-model's reason. Bad measurements and sensors
on elements that do not exist raise :class:`~opendso.errors.InputError`.

The result carries the estimated state (power-grid-model's output arrays) and the bad-data test
of :mod:`opendso.calc.bad_data`: one residual row per scalar measurement with its normalised
residual, and the suspect (the largest normalised residual above the threshold).

The iteration tolerance follows the measurement accuracy (:func:`estimation_tolerance`): a
tolerance far below what the meters can tell apart buys iterations, not accuracy. power-grid-model
stops when no node voltage moves more than ``error_tolerance`` (p.u.) in an iteration; its
iterative linear estimator converges linearly, and the error left when it stops was measured at
no more than 3.3 times the tolerance (on a 100,000-node feeder, where it converges slowest). The
default is ``TOLERANCE_PER_VOLTAGE_SIGMA`` (1/5000) of the smallest voltage-meter sigma in p.u.,
within ``TOLERANCE_MIN_PU`` and ``TOLERANCE_MAX_PU``: 1e-6 for the usual 0.5 % meters, which
leaves under 3.3e-6 p.u., about 1/1500 of the meter sigma and under 1 % of the estimate's own
error against the true state (``tests/test_estimation.py`` and
``tests/test_estimation_performance.py`` show the estimate is not worse than at 1e-8, and that
the bad-data test finds the same suspects).

Repeated estimations on the same grid and sensors (a real-time cycle's) reuse the
power-grid-model model, updated with the new values (:mod:`opendso.calc.model_cache`).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from threading import Lock
from typing import Any

import numpy as np
import numpy.typing as npt
from power_grid_model import CalculationMethod, PowerGridModel
from power_grid_model.errors import NotObservableError, PowerGridError

from opendso.calc.bad_data import RESIDUAL_DTYPE, largest_normalised, normalise_residuals, residual_table, rows_above
from opendso.calc.model_cache import KeptModel, ModelCache
from opendso.calc.powerflow import branch_records
from opendso.calc.sensors import SENSOR_TYPES, Measurements, measurement_redundancy, sensor_names
from opendso.errors import InputError
from opendso.grid.model import Grid

log = logging.getLogger(__name__)
_WARNED_CURRENT_SENSORS: set[str] = set()

#: Default iteration tolerance per unit of the smallest voltage-meter sigma (both in p.u.).
TOLERANCE_PER_VOLTAGE_SIGMA = 2e-4

#: Bounds of the default tolerance: never tighter than power-grid-model's own default, never
#: looser than the tolerance shown not to change the estimate against the true state.
TOLERANCE_MIN_PU = 1e-8
TOLERANCE_MAX_PU = 1e-6

#: Models kept between estimations on the same grid and sensors (see :mod:`opendso.calc.model_cache`).
_MODELS = ModelCache(size=2)


class EstimationMethod(enum.StrEnum):
    """State-estimation methods (names as on the command line)."""

    ITERATIVE_LINEAR = "iterative_linear"
    NEWTON_RAPHSON = "newton_raphson"

    @property
    def pgm(self) -> CalculationMethod:
        """The power-grid-model calculation method."""
        return CalculationMethod[self.value]


@dataclass(frozen=True, eq=False)
class EstimationResult:
    """The outcome of one state estimation: whether it worked (with the reason), states and residuals."""

    grid: Grid
    converged: bool
    observable: bool
    method: EstimationMethod
    measurements: Measurements
    output: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    residuals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=RESIDUAL_DTYPE))
    threshold: float = 3.0
    error_tolerance: float = math.nan  # the iteration tolerance the estimator ran with (p.u.)

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
        return largest_normalised(self.residuals)

    @property
    def suspects(self) -> list[str]:
        """The sensor with the largest normalised residual when that exceeds the threshold, by name."""
        rows = self.suspect_rows()
        return [self.sensor_names.get(int(rows["sensor"][0]), str(rows["sensor"][0]))] if rows.size else []

    def suspect_rows(self) -> np.ndarray:
        """Residual rows above the threshold, largest normalised residual first."""
        return rows_above(self.residuals, self.threshold)

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


def run_state_estimation(
    grid: Grid,
    measurements: Mapping[str, np.ndarray],
    *,
    method: EstimationMethod | str = EstimationMethod.ITERATIVE_LINEAR,
    error_tolerance: float | None = None,
    max_iterations: int = 100,
    threshold: float = 3.0,
    normalise: bool = True,
    candidates: int | None = 10,
    threading: int = 0,
    reuse_model: bool = True,
) -> EstimationResult:
    """Run one state estimation and return its result; never raises for non-convergence or unobservability.

    ``error_tolerance`` (p.u.) defaults to what the measurement accuracy calls for
    (:func:`estimation_tolerance`). ``threshold`` is the largest-normalised-residual limit of
    bad-data detection. With ``normalise`` (the default) residuals are normalised by their
    variance, measured with one sparse batch run of one scenario per measurement normalised
    (:mod:`opendso.calc.bad_data`). Only the ``candidates``
    measurements with the largest weighted residuals ``r / sigma`` are normalised (all of them
    with ``candidates=None``), so the cost does not grow with the grid. The other rows keep their
    weighted residual, a lower bound of their normalised one (``sqrt(Omega_ii) <= sigma``), so
    the largest value is always a normalised candidate; a measurement with a small weighted
    residual but very little redundancy can be missed, the price of that bounded cost. Without
    ``normalise``, ``normalised`` holds the weighted residual for every row. Measurements
    power-grid-model rejects (a sensor on a link or on an element that does not exist) raise
    :class:`~opendso.errors.InputError`.

    With ``reuse_model`` (the default) the power-grid-model model of the last estimations on the
    same grid and sensor layout is kept and updated with the new values
    (:mod:`opendso.calc.model_cache`): the same estimate, without building the model again.
    """
    method = EstimationMethod(method)
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
    tolerance = estimation_tolerance(grid, sensors) if error_tolerance is None else float(error_tolerance)
    grid_input = grid.pgm_input()

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
            error_tolerance=tolerance,
        )

    kept = _MODELS.take(grid_input, sensors, grid.frequency_hz) if reuse_model else None
    try:
        if kept is not None:
            model = kept.model
        elif reuse_model:
            kept = KeptModel.build(grid_input, sensors, grid.frequency_hz)
            model = kept.model
        else:
            model = PowerGridModel({**grid_input, **sensors}, system_frequency=grid.frequency_hz)
    except PowerGridError as exc:
        raise InputError(f"{grid.name}: measurements rejected by power-grid-model: {_reason(exc)}") from None
    options: dict[str, Any] = {
        "calculation_method": method.pgm,
        "error_tolerance": tolerance,
        "max_iterations": max_iterations,
    }
    try:
        try:
            output: dict[str, np.ndarray] = {str(k): v for k, v in model.calculate_state_estimation(**options).items()}
        except NotObservableError as exc:
            return result(converged=False, observable=False, error=_reason(exc))
        except PowerGridError as exc:
            return result(converged=False, observable=True, error=_reason(exc))
        residuals = residual_table(sensors, output)
        if normalise:
            normalise_residuals(model, sensors, residuals, options=options, threading=threading, candidates=candidates)
        return result(converged=True, observable=True, output=output, residuals=residuals)
    finally:
        if kept is not None:
            _MODELS.keep(kept)


def _reason(exc: Exception) -> str:
    text = str(exc).replace("\nTry validate_input_data() or validate_batch_data() to validate your data.", "")
    return f"{type(exc).__name__}: {text.strip()}"


def estimation_tolerance(grid: Grid, measurements: Mapping[str, np.ndarray]) -> float:
    """Return the iteration tolerance (p.u.) the measurement accuracy calls for.

    ``TOLERANCE_PER_VOLTAGE_SIGMA`` times the smallest voltage-meter sigma in p.u. of the measured
    node's rated voltage, within ``TOLERANCE_MIN_PU`` and ``TOLERANCE_MAX_PU``; the lower bound
    when no voltage meter has a usable sigma.
    """
    vs = measurements.get("sym_voltage_sensor")
    if vs is None or not vs.size:
        return TOLERANCE_MIN_PU
    nodes = grid.component("node")
    order = np.argsort(nodes["id"], kind="stable")
    pos = np.clip(np.searchsorted(nodes["id"], vs["measured_object"], sorter=order), 0, max(nodes.size - 1, 0))
    rows = order[pos] if nodes.size else pos
    found = nodes["id"][rows] == vs["measured_object"] if nodes.size else np.zeros(vs.size, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_pu = vs["u_sigma"][found] / nodes["u_rated"][rows[found]]
    sigma_pu = sigma_pu[np.isfinite(sigma_pu) & (sigma_pu > 0)]
    if not sigma_pu.size:
        return TOLERANCE_MIN_PU
    return float(np.clip(TOLERANCE_PER_VOLTAGE_SIGMA * sigma_pu.min(), TOLERANCE_MIN_PU, TOLERANCE_MAX_PU))


#: Fields that decide which nodes a source energises (connections, ids and statuses).
_CONNECTIVITY_FIELDS = frozenset(
    (
        "id",
        "node",
        "from_node",
        "to_node",
        "node_1",
        "node_2",
        "node_3",
        "status",
        "from_status",
        "to_status",
        "status_1",
        "status_2",
        "status_3",
    )
)
_DE_ENERGISED: dict[bytes, bool] = {}
_DE_ENERGISED_SIZE = 16
_DE_ENERGISED_LOCK = Lock()


def _has_de_energised_nodes(grid: Grid) -> bool:
    """Whether some node has no path to an in-service source under the present statuses.

    The answer is remembered per connectivity (a digest of the ids, connections and statuses, so
    a grid changed in place is looked at afresh): a real-time cycle asks every cycle, and the
    topology analysis costs more than the rest of the estimation's preparation.
    """
    from opendso.grid.topology import analyse_topology

    digest = hashlib.blake2b(digest_size=16)
    for component in sorted(grid.input):
        array = grid.input[component]
        digest.update(component.encode())
        for name in array.dtype.names or ():
            if name in _CONNECTIVITY_FIELDS:
                digest.update(np.ascontiguousarray(array[name]).tobytes())
    key = digest.digest()
    with _DE_ENERGISED_LOCK:
        known = _DE_ENERGISED.get(key)
    if known is None:
        known = not bool(analyse_topology(grid).node_energised.all())
        with _DE_ENERGISED_LOCK:
            if len(_DE_ENERGISED) >= _DE_ENERGISED_SIZE:
                _DE_ENERGISED.pop(next(iter(_DE_ENERGISED)))
            _DE_ENERGISED[key] = known
    return known
