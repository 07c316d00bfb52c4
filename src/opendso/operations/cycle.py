"""The real-time cycle: latest measurements -> topology -> state estimation -> alarms.

Every cycle (2 s by default) :meth:`RealTimeCycle.run` takes the latest reading of every point
with its quality, sets switch states from telemetry, fills the grid's measurement placements
with the good readings (bad or stale ones are left out, never used), adds pseudo-measurements
for loads and generators from their set-points, runs state estimation and evaluates alarms on
the estimated state and on the telemetry itself. It returns a :class:`CycleResult`: the
estimated state, the alarm transitions of this cycle and the time each stage took, so that the
cycle time and the observability are themselves monitored.

Points are tied to the grid through their ``element`` and ``quantity`` (see
:mod:`opendso.telemetry.points`): a sensor placement's name with ``u``/``p``/``q``/``i``, a
node's name with ``u``, or a switch's name with ``switch``. Switch values are 1 for closed
and 0 for open, whatever the protocol: the adapters map an IEC 104 double point's ON/OFF to 1/0
and its intermediate or indeterminate states to quality invalid, which the cycle ignores.
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from power_grid_model import initialize_array

from opendso.calc.estimation import (
    Accuracy,
    EstimationResult,
    combine_measurements,
    pseudo_measurements,
    run_state_estimation,
)
from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.operations.alarms import AlarmEvent, AlarmMonitor, Limits, Priority, Transition

_SENSOR_FIELDS: dict[str, dict[str, str]] = {
    "sym_voltage_sensor": {"u": "u_measured"},
    "sym_power_sensor": {"p": "p_measured", "q": "q_measured"},
    "sym_current_sensor": {"i": "i_measured"},
}
#: Point quantities the cycle turns into state-estimation inputs or switch states.
_STATE_QUANTITIES = frozenset({"u", "p", "q", "i", "switch"})
_SIGMA_FIELDS = {"u_measured": "u_sigma", "p_measured": "p_sigma", "q_measured": "q_sigma", "i_measured": "i_sigma"}


@dataclass(frozen=True)
class Reading:
    """The latest value of one point: value, quality bit set (0 is good) and source time (UTC)."""

    value: float
    quality: int
    time: datetime


@dataclass(frozen=True)
class CycleSettings:
    """Limits and options of the real-time cycle."""

    period_s: float = 2.0
    voltage_warning_pu: float = 0.05  # band around 1 p.u.: warning outside 1 +- this
    voltage_alarm_pu: float = 0.10
    voltage_deadband_pu: float = 0.005
    loading_warning: float = 0.9
    loading_alarm: float = 1.0
    loading_deadband: float = 0.02
    alarm_delay_s: float = 0.0
    method: str = "iterative_linear"
    bad_data_threshold: float = 3.0
    voltage_sigma_pu: float = 0.005  # for node voltage points that are not sensor placements
    telemetry_grace_s: float = 10.0  # a point never received is a telemetry failure only after this
    accuracy: Accuracy = field(default_factory=Accuracy)  # sigmas where the placements give none


@dataclass
class CycleResult:
    """What one cycle found: the estimated state, alarm transitions and stage timings (ms)."""

    time: datetime
    estimation: EstimationResult
    energised: npt.NDArray[np.bool_]
    alarm_events: list[AlarmEvent]
    timings_ms: dict[str, float] = field(default_factory=dict)
    used_points: int = 0
    bad_points: int = 0
    switch_changes: list[str] = field(default_factory=list)

    @property
    def observable(self) -> bool:
        """Whether the measurements made the grid observable."""
        return self.estimation.observable

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary of the cycle."""
        est = self.estimation
        u = est.output["node"]["u_pu"] if est.converged and "node" in est.output else None
        ok = self.energised
        return {
            "time": self.time.isoformat(),
            "converged": est.converged,
            "observable": est.observable,
            "error": est.error,
            "u_min_pu": float(np.min(u[ok])) if u is not None and ok.any() else None,
            "u_max_pu": float(np.max(u[ok])) if u is not None and ok.any() else None,
            "de_energised_nodes": int((~self.energised).sum()),
            "used_points": self.used_points,
            "bad_points": self.bad_points,
            "suspect_sensors": est.suspects if est.converged else [],
            "alarm_transitions": len(self.alarm_events),
            "switch_changes": self.switch_changes,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }


@dataclass(frozen=True)
class _Binding:
    """Where each point's value goes: a sensor field row, a node voltage, or a switch."""

    sensor_points: dict[str, tuple[str, str, int]]  # point -> (component, field, row)
    node_points: dict[str, int]  # point -> node row
    switch_points: dict[str, int]  # point -> switch row


def _bind(grid: Grid, points: Mapping[str, tuple[str, str]]) -> _Binding:
    """Resolve every point's (element, quantity) against the grid; one error lists all unknowns."""
    sensor_rows: dict[str, tuple[str, int]] = {}
    for component in _SENSOR_FIELDS:
        names = grid.names.get(component)
        if names is not None:
            for row, name in enumerate(names):
                sensor_rows[str(name)] = (component, row)
    node_rows = {str(n): i for i, n in enumerate(grid.names_of("node"))}
    switch_rows = {str(n): i for i, n in enumerate(grid.switch_names)}
    sensors: dict[str, tuple[str, str, int]] = {}
    nodes: dict[str, int] = {}
    switches: dict[str, int] = {}
    problems: list[str] = []
    for point, (element, quantity) in points.items():
        if quantity not in _STATE_QUANTITIES:
            continue  # fault-passage indicators, taps, ... are not inputs of the state estimate
        if quantity == "switch":
            if element in switch_rows:
                switches[point] = switch_rows[element]
                continue
            problems.append(f"point {point!r}: no switch named {element!r}")
            continue
        if element in sensor_rows:
            component, row = sensor_rows[element]
            fld = _SENSOR_FIELDS[component].get(quantity)
            if fld is None:
                problems.append(f"point {point!r}: sensor {element!r} ({component}) does not measure {quantity!r}")
                continue
            sensors[point] = (component, fld, row)
            continue
        if quantity == "u" and element in node_rows:
            nodes[point] = node_rows[element]
            continue
        problems.append(f"point {point!r}: no sensor placement or node named {element!r} for quantity {quantity!r}")
    if problems:
        raise InputError(
            f"{grid.name}: {len(problems)} point(s) do not match the grid:\n  - " + "\n  - ".join(problems)
        )
    return _Binding(sensors, nodes, switches)


def _fill_sigmas(component: str, array: np.ndarray, have: npt.NDArray[np.bool_], accuracy: Accuracy) -> None:
    """Give measured values without a sigma the accuracy class's one; a power sensor's missing half no weight."""
    if component == "sym_power_sensor":
        p, q = array["p_measured"], array["q_measured"]
        s_abs = np.hypot(np.nan_to_num(p), np.nan_to_num(q))
        for fld in ("p_measured", "q_measured"):
            sig = _SIGMA_FIELDS[fld]
            missing = have & np.isnan(array[fld])
            array[fld][missing] = 0.0
            array[sig][missing] = 1e12  # a power sensor needs both p and q: the missing one carries no weight
            unset = have & ~missing & ~(array[sig] > 0)
            array[sig][unset] = accuracy.power_rel * s_abs[unset] + accuracy.power_abs_w
    elif component == "sym_current_sensor":
        unset = have & ~(array["i_sigma"] > 0)
        array["i_sigma"][unset] = accuracy.current_rel * np.abs(array["i_measured"][unset]) + accuracy.current_abs_a
        no_angle = have & ~(array["i_angle_sigma"] > 0)
        array["i_angle_sigma"][no_angle] = np.pi
        array["i_angle_measured"][have & np.isnan(array["i_angle_measured"])] = 0.0
    elif component == "sym_voltage_sensor":
        unset = have & ~(array["u_sigma"] > 0)
        array["u_sigma"][unset] = accuracy.voltage_rel * np.abs(array["u_measured"][unset])


class RealTimeCycle:
    """Turns the latest readings into an estimated state and alarms, once per cycle."""

    def __init__(
        self,
        grid: Grid,
        points: Mapping[str, tuple[str, str]],
        *,
        settings: CycleSettings | None = None,
        feeder_of_node: npt.ArrayLike | None = None,
    ) -> None:
        """Bind ``points`` (point name -> (element, quantity)) to ``grid`` and set up the alarm monitors.

        ``feeder_of_node`` (one group label per node, e.g. from topology) groups the alarms.
        """
        self.grid = grid
        self.settings = settings or CycleSettings()
        self.binding = _bind(grid, points)
        self._commanded = grid.switches["closed"].copy() if grid.switches.size else np.zeros(0, np.int8)
        s = self.settings
        node_names = [str(n) for n in grid.names_of("node")]
        groups = (
            [None if g is None else str(g) for g in np.asarray(feeder_of_node, dtype=object)]
            if feeder_of_node is not None
            else None
        )
        self.voltage = AlarmMonitor(
            "voltage",
            node_names,
            limits=Limits(
                low_alarm=1 - s.voltage_alarm_pu,
                low_warning=1 - s.voltage_warning_pu,
                high_warning=1 + s.voltage_warning_pu,
                high_alarm=1 + s.voltage_alarm_pu,
                deadband=s.voltage_deadband_pu,
            ),
            delay_s=s.alarm_delay_s,
            groups=groups,
        )
        branch_names: list[str] = []
        for component in ("line", "transformer"):
            branch_names += [f"{component}:{n}" for n in grid.names_of(component)] if grid.count(component) else []
        self._branch_components = [c for c in ("line", "transformer") if grid.count(c)]
        self.loading = AlarmMonitor(
            "loading",
            branch_names,
            conditions=("", "overload"),
            limits=Limits(high_warning=s.loading_warning, high_alarm=s.loading_alarm, deadband=s.loading_deadband),
            delay_s=s.alarm_delay_s,
        )
        load_nodes = grid.node_positions(grid.component("sym_load")["node"]) if grid.count("sym_load") else None
        self._load_nodes = load_nodes
        self.supply = AlarmMonitor(
            "supply",
            [str(n) for n in grid.names_of("sym_load")],
            conditions=("", "loss of supply"),
            priority_alarm=Priority.HIGH,
            groups=[groups[i] for i in load_nodes] if groups is not None and load_nodes is not None else None,
        )
        self.switching = AlarmMonitor(
            "switch",
            [str(n) for n in grid.switch_names],
            conditions=("", "uncommanded change"),
            priority_alarm=Priority.HIGH,
        )
        point_names = (
            list(self.binding.sensor_points) + list(self.binding.node_points) + list(self.binding.switch_points)
        )
        self._point_names = point_names
        self.telemetry = AlarmMonitor(
            "telemetry", point_names, conditions=("", "telemetry failure"), priority_alarm=Priority.MEDIUM
        )
        # the cycle watches itself: an estimate that fails and a cycle slower than its period
        self.system = AlarmMonitor(
            "system",
            ["state estimation", "cycle time"],
            conditions=("", "failure"),
            priority_alarm=Priority.HIGH,
        )
        self._pseudo = pseudo_measurements(grid)
        self._started: datetime | None = None
        self._in_service_loads = (
            grid.component("sym_load")["status"] == 1 if grid.count("sym_load") else np.zeros(0, bool)
        )

    @property
    def monitors(self) -> tuple[AlarmMonitor, ...]:
        """Every alarm monitor of the cycle."""
        return (self.voltage, self.loading, self.supply, self.switching, self.telemetry, self.system)

    def command_switch(self, switch_name: str, closed: bool) -> None:
        """Record that a switch was commanded (its next change in telemetry is then expected)."""
        rows = np.flatnonzero(self.grid.switch_names == switch_name)
        if not rows.size:
            raise InputError(f"{self.grid.name}: unknown switch {switch_name!r}")
        self._commanded[rows[0]] = 1 if closed else 0

    def run(self, readings: Mapping[str, Reading], now: datetime) -> CycleResult:
        """Run one cycle on the latest readings (point name -> Reading); unknown points are ignored."""
        timings: dict[str, float] = {}
        t0 = _time.perf_counter()
        good = {name: r for name, r in readings.items() if r.quality == 0 and np.isfinite(r.value)}
        # -- topology from telemetry ---------------------------------------------------------------
        grid = self.grid
        changes: list[str] = []
        if self.binding.switch_points:
            closed = grid.switches["closed"].copy()
            for point, row in self.binding.switch_points.items():
                reading = good.get(point)
                if reading is not None:
                    closed[row] = 1 if reading.value >= 0.5 else 0
            if not np.array_equal(closed, grid.switches["closed"]):
                changes = [str(grid.switch_names[i]) for i in np.flatnonzero(closed != grid.switches["closed"])]
                grid = grid.with_switch_states(closed)
                self.grid = grid
        timings["topology"] = (_time.perf_counter() - t0) * 1e3
        # -- measurements ----------------------------------------------------------------------------
        t1 = _time.perf_counter()
        meas: dict[str, np.ndarray] = {}
        used = 0
        for component, fields in _SENSOR_FIELDS.items():
            placements = grid.sensors.get(component)
            if placements is None or not placements.size:
                continue
            array = placements.copy()
            have = np.zeros(array.size, dtype=bool)
            for fld in fields.values():
                array[fld] = np.nan
            for point, (comp, fld, row) in self.binding.sensor_points.items():
                if comp != component:
                    continue
                reading = good.get(point)
                if reading is not None:
                    array[fld][row] = reading.value
                    have[row] = True
                    used += 1
            _fill_sigmas(component, array, have, self.settings.accuracy)
            if have.any():
                meas[component] = array[have]
        if self.binding.node_points:
            rows = [(row, good[p].value) for p, row in self.binding.node_points.items() if p in good]
            if rows:
                vs = initialize_array("input", "sym_voltage_sensor", len(rows))
                node = grid.component("node")
                idx = np.array([r for r, _ in rows])
                vs["measured_object"] = node["id"][idx]
                vs["u_measured"] = [v for _, v in rows]
                vs["u_sigma"] = self.settings.voltage_sigma_pu * node["u_rated"][idx]
                vs["id"] = 0  # renumbered by combine_measurements
                meas["sym_voltage_sensor"] = (
                    np.concatenate([meas["sym_voltage_sensor"], vs]) if "sym_voltage_sensor" in meas else vs
                )
                used += len(rows)
        measurements = combine_measurements(grid, meas, self._pseudo)
        timings["measurements"] = (_time.perf_counter() - t1) * 1e3
        # -- state estimation ---------------------------------------------------------------------------
        t2 = _time.perf_counter()
        est = run_state_estimation(
            grid, measurements, method=self.settings.method, threshold=self.settings.bad_data_threshold
        )
        timings["state_estimation"] = (_time.perf_counter() - t2) * 1e3
        # -- alarms -------------------------------------------------------------------------------------
        t3 = _time.perf_counter()
        events: list[AlarmEvent] = []
        if est.converged:
            node_out = est.output["node"]
            energised = node_out["energized"].astype(bool)
            events += self.voltage.update_values(now, node_out["u_pu"], valid=energised)
            loadings = [est.output[c]["loading"] for c in self._branch_components if c in est.output]
            if loadings:
                events += self.loading.update_values(now, np.concatenate(loadings))
        else:
            energised = np.ones(grid.count("node"), dtype=bool)
        if self._load_nodes is not None:
            lost = self._in_service_loads & ~energised[self._load_nodes]
            events += self.supply.update_conditions(now, lost)
        if self.switching.channels.size:
            uncommanded = grid.switches["closed"] != self._commanded
            events += self.switching.update_conditions(now, uncommanded)
        if self._started is None:
            self._started = now
        waited = (now - self._started).total_seconds() >= self.settings.telemetry_grace_s
        failing = np.array(
            [readings[p].quality != 0 if p in readings else waited for p in self._point_names], dtype=bool
        )
        events += self.telemetry.update_conditions(now, failing)
        elapsed_s = _time.perf_counter() - t0
        # right after start-up the first values are still on their way: no estimate is expected yet
        events += self.system.update_conditions(now, [not est.converged and waited, elapsed_s > self.settings.period_s])
        timings["alarms"] = (_time.perf_counter() - t3) * 1e3
        timings["cycle"] = (_time.perf_counter() - t0) * 1e3
        return CycleResult(
            time=now,
            estimation=est,
            energised=energised,
            alarm_events=events,
            timings_ms=timings,
            used_points=used,
            bad_points=len(readings) - len(good),
            switch_changes=changes,
        )


def is_raise(event: AlarmEvent) -> bool:
    """Whether an alarm event brings a new or worse alarm to the operator (not suppressed or shelved)."""
    return event.transition in (Transition.RAISED, Transition.ESCALATED) and not (event.suppressed or event.shelved)


__all__ = ["CycleResult", "CycleSettings", "Reading", "RealTimeCycle", "is_raise"]
