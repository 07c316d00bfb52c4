"""The real-time cycle: latest measurements -> topology -> state estimation -> alarms.

Every cycle (2 s by default) :meth:`RealTimeCycle.run` takes the latest measurement of every
point with its quality, sets switch states from telemetry, fills the grid's measurement placements
with the good values (bad or stale ones are left out, never used), adds pseudo-measurements
for loads and generators from their set-points, runs state estimation and evaluates alarms on
the estimated state and on the telemetry itself. It returns a :class:`CycleResult`: the
estimated state, the alarm transitions of this cycle and the time each stage took, so that the
cycle time and the observability are themselves monitored.

Points are tied to the grid once, when the cycle is built, by the one binding of points to a grid
(:func:`~opendso.telemetry.binding.bind_points`): a sensor placement's name with
``u``/``p``/``q``/``i``, a node's name with ``u``, or a switch's name with ``switch``; points of
other quantities (indicators, taps, ...) are not inputs of the estimate and are ignored. Every
cycle then scatters the values into the sensor and switch arrays by point index, with no lookup
by name. The latest values come as a :class:`~opendso.measurement.LatestValues` of the cycle's
points (the monitor keeps one: read as arrays) or as any mapping of point name ->
:class:`~opendso.measurement.Measurement`. Switch values are 1 for closed and 0 for open,
whatever the protocol: the adapters map an IEC 104 double point's ON/OFF to 1/0 and its
intermediate or indeterminate states to quality invalid, which the cycle ignores.
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from power_grid_model import initialize_array

from opendso.calc import (
    Accuracy,
    EstimationResult,
    combine_measurements,
    pseudo_measurements,
    run_state_estimation,
)
from opendso.errors import AlarmStateError, ConflictError, InputError, UnknownSwitchError
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.measurement import LatestValues, Measurement
from opendso.operations.alarms import DEFAULT_MAX_SHELVE_S, AlarmEvent, AlarmMonitor, Limits, Priority
from opendso.telemetry.binding import (
    MEASURED_QUANTITIES,
    SENSOR_FIELDS,
    STATE_QUANTITIES,
    SWITCH,
    Gather,
    PointBinding,
    Target,
    bind_points,
)
from opendso.telemetry.points import PointMap

#: What the cycle takes of the binding: sensor values, node voltages and switch states.
_CYCLE_TARGETS = (Target.SENSOR, Target.NODE, Target.SWITCH)


@dataclass(frozen=True)
class CycleSettings:
    """Limits and options of the real-time cycle.

    Alarm defaults follow the basic alarm design of ISA-18.2 clause 10 with the starting points
    EEMUA 191 and ISA-TR18.2.3 give per signal type (deadband 1-5 % of the operating range,
    on-delay 15 s for fast signals such as flow and pressure, 60 s for slow ones):

    - ``voltage_deadband_pu`` 0.01: twice the 0.5 % voltage accuracy class (one sigma of the
      transducer noise is 0.005 p.u.) and 5 % of the 0.9-1.1 p.u. alarmed span, so noise on a
      value sitting at 1.05 p.u. no longer crosses back and forth (it did with 0.005);
    - ``loading_deadband`` 0.05: a loading is a flow-like signal (5 % of rating);
    - ``alarm_delay_s`` 15 s on-delay and ``alarm_off_delay_s`` 15 s off-delay for the analog
      alarms (voltage, loading), a fast signal's delay, which is 7 cycles at the 2 s default
      period: one noisy estimate can neither raise an alarm nor clear one (a value at 1.055 p.u.
      cleared by one low sample was raised again a few cycles later). Status alarms (switch
      changes, loss of supply, telemetry, the cycle itself) have no delay: a breaker trip is
      announced in the cycle that sees it;
    - ``chatter_count`` 6 changes in ``chatter_window_s`` 60 s: three alarms in one minute, the
      chattering threshold of ISA-TR18.2.5 / EEMUA 191;
    - ``shelve_max_s`` 8 h: the longest shelf, one shift (ISA-18.2 clause 14: shelving is
      time-limited).

    ``event_driven`` (on by default): the monitor runs a cycle at once when a switch's state
    (value or quality) changes in the field, instead of waiting for the next period; analog
    values stay on the period (see :mod:`opendso.operations.monitor`). Off, cycles run on the
    period only.
    """

    period_s: float = 2.0
    voltage_warning_pu: float = 0.05  # band around 1 p.u.: warning outside 1 +- this
    voltage_alarm_pu: float = 0.10
    voltage_deadband_pu: float = 0.01
    loading_warning: float = 0.9
    loading_alarm: float = 1.0
    loading_deadband: float = 0.05
    alarm_delay_s: float = 15.0
    alarm_off_delay_s: float = 15.0
    chatter_count: int = 6
    chatter_window_s: float = 60.0
    shelve_max_s: float = DEFAULT_MAX_SHELVE_S
    method: str = "iterative_linear"
    bad_data_threshold: float = 3.0
    voltage_sigma_pu: float = 0.005  # for node voltage points that are not sensor placements
    telemetry_grace_s: float = 10.0  # a point never received is a telemetry failure only after this
    accuracy: Accuracy = field(default_factory=Accuracy)  # sigmas where the placements give none
    event_driven: bool = True  # a switch change in the field runs a cycle at once


#: What made a cycle run: its period came round, or a switch changed state in the field.
CycleTrigger = Literal["period", "switch"]


@dataclass
class CycleResult:
    """What one cycle found: the estimated state, alarm transitions and stage timings (ms).

    ``trigger`` says what made the cycle run: ``"period"`` (the schedule, and every cycle run
    directly) or ``"switch"`` (an extra cycle for a switch change, set by the monitor).
    """

    time: datetime
    estimation: EstimationResult
    energised: npt.NDArray[np.bool_]
    alarm_events: list[AlarmEvent]
    timings_ms: dict[str, float] = field(default_factory=dict)
    used_points: int = 0
    bad_points: int = 0
    switch_changes: list[str] = field(default_factory=list)
    trigger: CycleTrigger = "period"

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
            "trigger": self.trigger,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }


@dataclass(frozen=True)
class _Scatter:
    """Where each bound point's value goes, as index arrays into the latest values (built once)."""

    sensors: dict[str, list[tuple[str, Gather]]]  # sensor component -> [(value field, points/rows)]
    nodes: Gather  # node voltage points and node rows
    switches: Gather  # switch state points and switch rows
    telemetry: npt.NDArray[np.int64]  # the points of the telemetry alarm channels, in channel order


def _scatter_of(binding: PointBinding) -> _Scatter:
    groups = binding.groups(Target.SENSOR, quantities=MEASURED_QUANTITIES)
    sensors: dict[str, list[tuple[str, Gather]]] = {}
    for (component, quantity), sensor_field in SENSOR_FIELDS.items():  # placements in one fixed order
        if (component, quantity) in groups:
            sensors.setdefault(component, []).append((sensor_field.value, groups[(component, quantity)]))
    nodes = binding.gather(Target.NODE, quantities=MEASURED_QUANTITIES)
    switches = binding.gather(Target.SWITCH, quantities={SWITCH})
    sensor_points = binding.gather(Target.SENSOR, quantities=MEASURED_QUANTITIES).points
    telemetry = np.concatenate([sensor_points, nodes.points, switches.points]).astype(np.int64)
    return _Scatter(sensors, nodes, switches, telemetry)


@dataclass(frozen=True)
class _Values:
    """One cycle's view of the latest values: arrays by point index, plus the records of unknown points."""

    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.int64]
    received: npt.NDArray[np.bool_]
    good: npt.NDArray[np.bool_]  # received, quality 0 and a finite value
    other_count: int  # measurements of points the cycle does not know
    other_good: int


def _values_of(latest: Mapping[str, Measurement], names: tuple[str, ...]) -> _Values:
    """The latest values as arrays over ``names``: read directly from a LatestValues of those points."""
    if not (isinstance(latest, LatestValues) and (latest.names is names or latest.names == names)):
        latest = LatestValues.of(names, latest)
    others = list(latest.others.values())
    return _Values(
        value=latest.value,
        quality=latest.quality,
        received=latest.received,
        good=latest.good(),
        other_count=len(others),
        other_good=sum(1 for m in others if m.is_good),
    )


def _fill_sigmas(component: str, array: np.ndarray, have: npt.NDArray[np.bool_], accuracy: Accuracy) -> None:
    """Give measured values without a sigma the accuracy class's one; a power sensor's missing half no weight."""
    if component == "sym_power_sensor":
        p, q = array["p_measured"], array["q_measured"]
        s_abs = np.hypot(np.nan_to_num(p), np.nan_to_num(q))
        for quantity in ("p", "q"):
            fld, sig = SENSOR_FIELDS[(component, quantity)].value, SENSOR_FIELDS[(component, quantity)].sigma
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


#: Most opened switches whose consequences the cycle attributes one by one (one topology run each).
MAX_ATTRIBUTED_SWITCHES = 16


@dataclass(frozen=True)
class AreaSuppression:
    """An area (alarm group, e.g. a feeder) whose alarms are suppressed by design, e.g. under a work permit."""

    area: str
    reason: str
    actor: str
    since: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {"area": self.area, "reason": self.reason, "actor": self.actor, "since": self.since.isoformat()}


@dataclass(frozen=True)
class _Attribution:
    """Which opened switch de-energised each node (row, -1 for none) under the present switch states."""

    energised: npt.NDArray[np.bool_]
    cause_row: npt.NDArray[np.int64]
    uncommanded_open: npt.NDArray[np.bool_]
    intended_open: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class _SuppressionPlan:
    """Per monitor: the causes and groups to set, and the designed suppression (mask, reasons) to apply."""

    causes: dict[str, tuple[npt.NDArray[np.object_], npt.NDArray[np.object_]]]
    designed: dict[str, tuple[npt.NDArray[np.bool_], npt.NDArray[np.object_]]]


def _label(value: Any) -> str | None:
    return None if value is None else str(value)


class RealTimeCycle:
    """Turns the latest measurements into an estimated state and alarms, once per cycle.

    Alarm grouping and designed suppression (ISA-18.2 clause 12) are done here, where the
    topology is known: when a switch opens, the nodes it de-energises are attributed to it (one
    topology run per opened switch, only when switch states change). If the opening was not
    commanded, the switch's alarm is the *cause*: the loss-of-supply alarms of the loads and the
    voltage alarms of the nodes it de-energised join its group, under it. If it was commanded
    through :meth:`command_switch` (intended switching), those consequences are *suppressed by
    design*. :meth:`suppress_area` is the hook a work permit uses: every alarm of an area (a
    feeder) is suppressed by design until :meth:`release_area`.
    """

    def __init__(
        self,
        grid: Grid,
        points: PointMap | Mapping[str, tuple[str, str]],
        *,
        settings: CycleSettings | None = None,
        feeder_of_node: npt.ArrayLike | None = None,
    ) -> None:
        """Bind ``points`` (a point map, or point name -> (element, quantity)) to ``grid``; set up the alarm monitors.

        A point of a state quantity (``u``, ``p``, ``q``, ``i``, ``switch``) that is not a value
        of a sensor placement, a node voltage or a switch state raises one
        :class:`~opendso.telemetry.points.PointMapError` (an :class:`InputError`) naming them all.

        ``feeder_of_node`` (one group label per node, e.g. from topology) groups the alarms: a
        node's voltage, a load's supply, a branch's loading (the label of its from-node, else
        its to-node), a switch (the label of the branch it sits on) and a point's telemetry (the
        label of what it measures) all get the label of where they are.
        """
        self.grid = grid
        self.settings = settings or CycleSettings()
        self.binding = bind_points(grid, points)
        self.binding.require(_CYCLE_TARGETS, quantities=STATE_QUANTITIES, user="the real-time cycle")
        self._scatter = _scatter_of(self.binding)
        self._commanded = grid.switches["closed"].copy() if grid.switches.size else np.zeros(0, np.int8)
        #: switches whose state was entered by hand (:meth:`enter_switch_state`), by name
        self.manually_entered: set[str] = set()
        self._intended = np.zeros(grid.switches.size, dtype=bool)  # commanded through command_switch
        s = self.settings
        node_names = [str(n) for n in grid.names_of("node")]
        n_nodes = len(node_names)
        node_groups: list[str | None] = (
            [_label(g) for g in np.asarray(feeder_of_node, dtype=object)]
            if feeder_of_node is not None
            else [None] * n_nodes
        )
        if len(node_groups) != n_nodes:
            raise InputError(f"{grid.name}: {len(node_groups)} feeder labels for {n_nodes} nodes")
        self._node_groups = np.asarray(node_groups, dtype=object)
        element_group = self._element_groups(grid, node_groups)
        common: dict[str, Any] = {
            "chatter_count": s.chatter_count,
            "chatter_window_s": s.chatter_window_s,
            "max_shelve_s": s.shelve_max_s,
        }
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
            off_delay_s=s.alarm_off_delay_s,
            groups=node_groups,
            **common,
        )
        branch_names: list[str] = []
        branch_groups: list[str | None] = []
        for component in ("line", "transformer"):
            if grid.count(component):
                branch_names += [f"{component}:{n}" for n in grid.names_of(component)]
                branch_groups += [element_group.get(int(i)) for i in grid.component(component)["id"].tolist()]
        self._branch_components = [c for c in ("line", "transformer") if grid.count(c)]
        self.loading = AlarmMonitor(
            "loading",
            branch_names,
            conditions=("", "overload"),
            limits=Limits(high_warning=s.loading_warning, high_alarm=s.loading_alarm, deadband=s.loading_deadband),
            delay_s=s.alarm_delay_s,
            off_delay_s=s.alarm_off_delay_s,
            groups=branch_groups,
            **common,
        )
        load_nodes = grid.node_positions(grid.component("sym_load")["node"]) if grid.count("sym_load") else None
        self._load_nodes = load_nodes
        self.supply = AlarmMonitor(
            "supply",
            [str(n) for n in grid.names_of("sym_load")],
            conditions=("", "loss of supply"),
            priority_alarm=Priority.HIGH,
            groups=[node_groups[i] for i in load_nodes] if load_nodes is not None else None,
            **common,
        )
        switch_nodes = grid.node_positions(grid.switches["node"]) if grid.switches.size else np.zeros(0, np.int64)
        self._switch_groups = np.asarray(
            [
                element_group.get(int(e), node_groups[int(n)])
                for e, n in zip(grid.switches["element"].tolist(), switch_nodes.tolist(), strict=True)
            ],
            dtype=object,
        )
        # a breaker's trips are never nuisance: an auto-reclose sequence (trip, reclose, trip, ...
        # lockout) within a minute must announce the lockout, not suppress it as chattering
        self.switching = AlarmMonitor(
            "switch",
            [str(n) for n in grid.switch_names],
            conditions=("", "uncommanded change"),
            priority_alarm=Priority.HIGH,
            groups=list(self._switch_groups),
            **{**common, "chatter_count": 0},
        )
        self.telemetry = AlarmMonitor(
            "telemetry",
            [self.binding.names[k] for k in self._scatter.telemetry.tolist()],
            conditions=("", "telemetry failure"),
            priority_alarm=Priority.MEDIUM,
            groups=self._point_groups(grid, node_groups, element_group),
            **common,
        )
        # the cycle watches itself: an estimate that fails and a cycle slower than its period
        self.system = AlarmMonitor(
            "system",
            ["state estimation", "cycle time"],
            conditions=("", "failure"),
            priority_alarm=Priority.HIGH,
            **common,
        )
        self._pseudo = pseudo_measurements(grid)
        self._started: datetime | None = None
        self._in_service_loads = (
            grid.component("sym_load")["status"] == 1 if grid.count("sym_load") else np.zeros(0, bool)
        )
        self._attribution: tuple[bytes, _Attribution] | None = None
        self._plan: tuple[_Attribution, tuple[tuple[str, str], ...], _SuppressionPlan] | None = None
        self._areas: dict[str, AreaSuppression] = {}
        # each monitor's group labels as codes into one sorted label list: area masks are one np.isin
        self._area_labels = self.areas()
        position = {label: k for k, label in enumerate(self._area_labels)}
        self._area_codes = {
            m.name: np.array([position.get(g, -1) if g is not None else -1 for g in m.groups.tolist()], dtype=np.int64)
            for m in self.monitors
        }

    @staticmethod
    def _element_groups(grid: Grid, node_groups: list[str | None]) -> dict[int, str | None]:
        """Group label of every element id: appliances by their node, branches by their from- (else to-) node."""
        out: dict[int, str | None] = {}
        node_ids = grid.component("node")["id"].tolist()
        for i, g in zip(node_ids, node_groups, strict=True):
            out[int(i)] = g
        for _component, array in grid.iter_branches():
            a = grid.node_positions(array["from_node"])
            b = grid.node_positions(array["to_node"])
            for i, fa, fb in zip(array["id"].tolist(), a.tolist(), b.tolist(), strict=True):
                out[int(i)] = node_groups[fa] if node_groups[fa] is not None else node_groups[fb]
        for component, array in grid.input.items():
            if component != "node" and array.size and "node" in (array.dtype.names or ()):
                at = grid.node_positions(array["node"])
                for i, k in zip(array["id"].tolist(), at.tolist(), strict=True):
                    out.setdefault(int(i), node_groups[k])
        return out

    def _point_groups(
        self, grid: Grid, node_groups: list[str | None], element_group: Mapping[int, str | None]
    ) -> list[str | None]:
        """Group label of every point: the group of what it measures."""
        groups: list[str | None] = []
        b = self.binding
        sensor_points = b.gather(Target.SENSOR, quantities=MEASURED_QUANTITIES).points
        for component, row in zip(b.component[sensor_points].tolist(), b.row[sensor_points].tolist(), strict=True):
            measured = int(grid.sensors[component]["measured_object"][row])
            groups.append(element_group.get(measured))
        groups += [node_groups[row] for row in self._scatter.nodes.rows.tolist()]
        groups += [self._switch_groups[row] for row in self._scatter.switches.rows.tolist()]
        return groups

    @property
    def monitors(self) -> tuple[AlarmMonitor, ...]:
        """Every alarm monitor of the cycle."""
        return (self.voltage, self.loading, self.supply, self.switching, self.telemetry, self.system)

    def command_switch(self, switch_name: str, closed: bool) -> None:
        """Record that a switch was commanded: its next change in telemetry is then expected (intended).

        While a switch commanded open is open, the loss of supply and the voltages of the part
        it de-energises are suppressed by design.
        """
        rows = np.flatnonzero(self.grid.switch_names == switch_name)
        if not rows.size:
            raise InputError(f"{self.grid.name}: unknown switch {switch_name!r}")
        self._commanded[rows[0]] = 1 if closed else 0
        self._intended[rows[0]] = True

    def enter_switch_state(self, switch_name: str, closed: bool) -> None:
        """Enter by hand the state of a switch no telemetry reports (a field crew's confirmed manual step).

        The grid the cycle works on takes the state at once; the switch is then listed in
        :attr:`manually_entered` (the safety gate treats such a state as not trustworthy). A switch
        whose status comes from telemetry raises :class:`~opendso.errors.ConflictError`: the field
        reports its state. Unknown switch: :class:`~opendso.errors.UnknownSwitchError`.
        """
        rows = np.flatnonzero(self.grid.switch_names == switch_name)
        if not rows.size:
            raise UnknownSwitchError(f"{self.grid.name}: {switch_name}")
        row = int(rows[0])
        if row in set(self._scatter.switches.rows.tolist()):
            raise ConflictError(f"switch {switch_name} is reported by telemetry: its state is not entered by hand")
        closed_now = self.grid.switches["closed"].copy()
        closed_now[row] = 1 if closed else 0
        self.grid = self.grid.with_switch_states(closed_now)
        self._commanded[row] = closed_now[row]
        self.manually_entered.add(switch_name)

    # -- designed suppression of areas (the work-permit hook) ----------------------------------------------
    def areas(self) -> list[str]:
        """The areas (alarm groups) alarms are grouped by, sorted."""
        labels = {g for m in self.monitors for g in m.groups.tolist() if g is not None}
        return sorted(labels)

    @property
    def suppressed_areas(self) -> dict[str, AreaSuppression]:
        """Areas whose alarms are suppressed by design, by area."""
        return dict(self._areas)

    def suppress_area(self, area: str, *, reason: str, actor: str, time: datetime) -> list[AlarmEvent]:
        """Suppress by design every alarm of ``area`` (e.g. a feeder under a permit); return the transitions.

        Raises :class:`InputError` for an unknown area or a missing reason, and
        :class:`~opendso.operations.alarms.AlarmStateError` when the area is suppressed already.
        """
        if area not in self.areas():
            raise InputError(f"{self.grid.name}: no alarm area {area!r}")
        if not reason.strip():
            raise InputError(f"suppressing area {area!r}: a reason is required")
        if area in self._areas:
            raise AlarmStateError(f"area {area!r} is suppressed already (since {self._areas[area].since.isoformat()})")
        self._areas[area] = AreaSuppression(area, reason, actor, time)
        return self.apply_suppression(time)

    def release_area(self, area: str, *, time: datetime) -> list[AlarmEvent]:
        """Lift the designed suppression of ``area``; alarms still active are announced again."""
        if area not in self._areas:
            raise AlarmStateError(f"area {area!r} is not suppressed")
        del self._areas[area]
        return self.apply_suppression(time)

    def restore_areas(self, suppressions: list[AreaSuppression]) -> None:
        """Restore area suppressions saved before a restart (unknown areas are dropped)."""
        known = set(self.areas())
        self._areas = {s.area: s for s in suppressions if s.area in known}

    def apply_suppression(self, time: datetime, *, keep: bool = False) -> list[AlarmEvent]:
        """Set the designed suppression and the causes of every monitor from the switch states and areas.

        With ``keep`` suppressions start but none ends: a cycle applies them so before its updates,
        and in full after them, so a consequence that clears in the cycle its cause is undone is
        not announced again on its way out.
        """
        plan = self._suppression_plan(self._attribute(self.grid))
        events: list[AlarmEvent] = []
        for monitor in self.monitors:
            mask, why = plan.designed[monitor.name]
            causes = plan.causes.get(monitor.name)
            if causes is not None:
                monitor.set_causes(*causes)
            if keep:
                mask, why = mask | monitor.designed, np.where(mask, why, monitor.designed_reason)
            events += monitor.set_designed_suppression(time, mask, why)
        return events

    def _suppression_plan(self, att: _Attribution) -> _SuppressionPlan:
        """Causes and designed suppression of every monitor (cached per attribution and suppressed areas)."""
        areas = tuple(sorted((a, s.reason) for a, s in self._areas.items()))
        cached = self._plan
        if cached is not None and cached[0] is att and cached[1] == areas:
            return cached[2]
        names = self.grid.switch_names
        # nodes de-energised by a switch: the switch's alarm explains them, or intended switching suppresses them
        rows = att.cause_row
        by_switch = rows >= 0
        safe = np.where(by_switch, rows, 0)
        by_trip = by_switch & att.uncommanded_open[safe] if rows.size else by_switch
        by_intent = by_switch & att.intended_open[safe] if rows.size else by_switch
        node_cause = np.full(rows.size, None, dtype=object)
        node_group = np.full(rows.size, None, dtype=object)
        node_why = np.full(rows.size, None, dtype=object)
        for r in np.unique(rows[by_switch]):
            hit = rows == r
            node_cause[hit & by_trip] = f"switch:{names[r]}"
            node_group[hit & by_trip] = self._switch_groups[r] or _dominant(self._node_groups[hit])
            node_why[hit & by_intent] = f"intended switching: {names[r]} opened on command"
        reason_of_code = np.array(
            [None]
            + [
                f"area under suppression: {self._areas[a].reason}" if a in self._areas else None
                for a in self._area_labels
            ],
            dtype=object,
        )
        held = np.array([k for k, a in enumerate(self._area_labels) if a in self._areas], dtype=np.int64)

        def area_mask(monitor: AlarmMonitor) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.object_]]:
            codes = self._area_codes[monitor.name]
            if not held.size:
                return np.zeros(codes.size, dtype=bool), np.full(codes.size, None, dtype=object)
            return np.isin(codes, held), reason_of_code[codes + 1]

        plan = _SuppressionPlan({}, {})
        for monitor in self.monitors:
            mask, why = area_mask(monitor)
            if monitor is self.voltage:
                plan.causes[monitor.name] = (node_cause, node_group)
                mask, why = mask | by_intent, np.where(by_intent & ~mask, node_why, why)
            elif monitor is self.supply and self._load_nodes is not None:
                ln = self._load_nodes
                plan.causes[monitor.name] = (node_cause[ln], node_group[ln])
                mask, why = mask | by_intent[ln], np.where(by_intent[ln] & ~mask, node_why[ln], why)
            plan.designed[monitor.name] = (mask, why)
        for arrays in (*plan.causes.values(), *plan.designed.values()):
            for array in arrays:
                array.flags.writeable = False  # shared by every cycle until the switch states or areas change
        self._plan = (att, areas, plan)
        return plan

    def _attribute(self, grid: Grid) -> _Attribution:
        """Attribute de-energised nodes to the opened switches that de-energised them (cached per switch states)."""
        closed = grid.switches["closed"]
        key = closed.tobytes() + self._commanded.tobytes() + self._intended.tobytes()
        if self._attribution is not None and self._attribution[0] == key:
            return self._attribution[1]
        energised = analyse_topology(grid).node_energised
        uncommanded_open = (closed == 0) & (self._commanded == 1)
        intended_open = (closed == 0) & (self._commanded == 0) & self._intended
        cause_row = np.full(energised.size, -1, dtype=np.int64)
        # uncommanded openings first: a node that either one would restore is the trip's, not suppressed
        candidates = np.concatenate([np.flatnonzero(uncommanded_open), np.flatnonzero(intended_open)])
        for row in candidates[:MAX_ATTRIBUTED_SWITCHES]:
            trial = closed.copy()
            trial[row] = 1
            restored = analyse_topology(grid.with_switch_states(trial)).node_energised & ~energised & (cause_row < 0)
            cause_row[restored] = row
        att = _Attribution(energised, cause_row, uncommanded_open, intended_open)
        self._attribution = (key, att)
        return att

    def run(self, latest: Mapping[str, Measurement], now: datetime) -> CycleResult:
        """Run one cycle on the latest measurements; return what it found.

        ``latest`` is a :class:`~opendso.measurement.LatestValues` of the cycle's points (read as
        arrays, as the monitor passes it: give a snapshot, it is read while the cycle runs) or any
        mapping of point name -> :class:`~opendso.measurement.Measurement`. Measurements of
        points the cycle does not know are not used; they count in ``bad_points`` when bad.
        """
        timings: dict[str, float] = {}
        t0 = _time.perf_counter()
        values = _values_of(latest, self.binding.names)
        good, value = values.good, values.value
        scatter = self._scatter
        # -- topology from telemetry ---------------------------------------------------------------
        grid = self.grid
        changes: list[str] = []
        if scatter.switches.points.size:
            closed = grid.switches["closed"].copy()
            have = good[scatter.switches.points]
            closed[scatter.switches.rows[have]] = np.where(value[scatter.switches.points[have]] >= 0.5, 1, 0)
            if not np.array_equal(closed, grid.switches["closed"]):
                changes = [str(grid.switch_names[i]) for i in np.flatnonzero(closed != grid.switches["closed"])]
                grid = grid.with_switch_states(closed)
                self.grid = grid
        timings["topology"] = (_time.perf_counter() - t0) * 1e3
        # -- measurements ----------------------------------------------------------------------------
        t1 = _time.perf_counter()
        meas: dict[str, np.ndarray] = {}
        used = 0
        for component, fields in scatter.sensors.items():
            placements = grid.sensors[component]
            array = placements.copy()
            have = np.zeros(array.size, dtype=bool)
            for fld, _gather in fields:
                array[fld] = np.nan
            for fld, (points, rows) in fields:
                ok = good[points]
                array[fld][rows[ok]] = value[points[ok]]
                have[rows[ok]] = True
                used += int(np.count_nonzero(ok))
            _fill_sigmas(component, array, have, self.settings.accuracy)
            if have.any():
                meas[component] = array[have]
        ok = good[scatter.nodes.points]
        if ok.any():
            node = grid.component("node")
            idx = scatter.nodes.rows[ok]
            vs = initialize_array("input", "sym_voltage_sensor", idx.size)
            vs["measured_object"] = node["id"][idx]
            vs["u_measured"] = value[scatter.nodes.points[ok]]
            vs["u_sigma"] = self.settings.voltage_sigma_pu * node["u_rated"][idx]
            vs["id"] = 0  # renumbered by combine_measurements
            meas["sym_voltage_sensor"] = (
                np.concatenate([meas["sym_voltage_sensor"], vs]) if "sym_voltage_sensor" in meas else vs
            )
            used += int(idx.size)
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
        if self._started is None:
            self._started = now
        waited = (now - self._started).total_seconds() >= self.settings.telemetry_grace_s
        # shelves end on time whatever the estimate does (a voltage alarm's shelf too when it fails)
        events: list[AlarmEvent] = [e for m in self.monitors for e in m.expire_shelves(now)]
        # causes and new designed suppressions first, so this cycle's transitions carry them
        events += self.apply_suppression(now, keep=True)
        topo_energised = self._attribute(grid).energised
        if est.converged:
            node_out = est.output["node"]
            energised = node_out["energized"].astype(bool)
            events += self.voltage.update_values(now, node_out["u_pu"], valid=energised)
            loadings = [est.output[c]["loading"] for c in self._branch_components if c in est.output]
            if loadings:
                events += self.loading.update_values(now, np.concatenate(loadings))
        else:
            energised = topo_energised
        # switch positions not yet received (right after a start) say nothing about supply or
        # uncommanded changes: those alarms keep their (restored) state until the telemetry is in
        switches_known = np.ones(grid.switches.size, dtype=bool)
        if not waited:
            switches_known[scatter.switches.rows[~good[scatter.switches.points]]] = False
        if self._load_nodes is not None:
            lost = self._in_service_loads & ~topo_energised[self._load_nodes]
            events += self.supply.update_conditions(now, lost, valid=np.full(lost.size, bool(switches_known.all())))
        if self.switching.channels.size:
            uncommanded = grid.switches["closed"] != self._commanded
            events += self.switching.update_conditions(now, uncommanded, valid=switches_known)
        received = values.received[scatter.telemetry]
        failing = ~received | (values.quality[scatter.telemetry] != 0)
        events += self.telemetry.update_conditions(now, failing, valid=received | waited)
        elapsed_s = _time.perf_counter() - t0
        # right after start-up the first values are still on their way: no estimate is expected yet
        events += self.system.update_conditions(
            now, [not est.converged, elapsed_s > self.settings.period_s], valid=[waited, True]
        )
        # suppressions that ended: what is still active is announced again, what cleared is not
        events += self.apply_suppression(now)
        timings["alarms"] = (_time.perf_counter() - t3) * 1e3
        timings["cycle"] = (_time.perf_counter() - t0) * 1e3
        return CycleResult(
            time=now,
            estimation=est,
            energised=energised,
            alarm_events=events,
            timings_ms=timings,
            used_points=used,
            bad_points=int(np.count_nonzero(values.received))
            + values.other_count
            - int(np.count_nonzero(good))
            - values.other_good,
            switch_changes=changes,
        )


def _dominant(labels: npt.NDArray[np.object_]) -> str | None:
    """The most common non-None label, None when there is none."""
    counts: dict[str, int] = {}
    for label in labels.tolist():
        if label is not None:
            counts[label] = counts.get(label, 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else None


def is_raise(event: AlarmEvent) -> bool:
    """Whether an alarm event brings a new or worse alarm to the operator (not hidden, not chattering)."""
    return event.announced


__all__ = ["AreaSuppression", "CycleResult", "CycleSettings", "CycleTrigger", "RealTimeCycle", "is_raise"]
