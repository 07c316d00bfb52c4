"""Point planning for the field simulator: where each point's value comes from, resolved once.

The points are bound to the grid by the one binding (:func:`~opendso.telemetry.binding.bind_points`);
:func:`plan_points` turns that binding into a :class:`PointPlan` of index arrays (point indices,
table rows), grouped by what fills them. Each power flow then fills the whole point vector by
gathering from the output arrays (:meth:`PointPlan.evaluate`), never by looking names up again.
What a point carries, by the target it is bound to:

- a sensor placement's ``u``, ``p``, ``q``, ``i``: the sensor's exact measurement as
  :func:`~opendso.calc.measurements_from_power_flow` computes it, with the
  placement's sigma (else the accuracy class);
- a node's ``u``, an appliance's (load, generator, source) ``p``/``q``, a branch's
  ``p``/``q``/``i`` at its from end, with sigmas from the accuracy class;
- a switch's ``switch``: 1.0 closed, 0.0 open;
- a fault-passage indicator (``fpi``) on a switch or a sensor: 1.0 while picked up;
- a generator's ``p_limit`` and ``p_available``: filled by the twin's DER model
  (:mod:`~opendso.telemetry.simulator.der`), not from the power flow.

The simulator computes every point: a point the binding leaves unbound is refused with one
:class:`~opendso.telemetry.points.PointMapError` (an :class:`~opendso.errors.InputError`)
listing every such point.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from opendso.calc import Accuracy, PowerFlowResult, measurements_from_power_flow
from opendso.grid.model import Grid
from opendso.telemetry.binding import (
    FPI,
    MAGNITUDES,
    MEASURED_QUANTITIES,
    SENSOR_FIELDS,
    SWITCH,
    Gather,
    PointBinding,
    Target,
)

__all__ = ["SERVED_TARGETS", "PointPlan", "PointValues", "plan_points"]

#: The targets the simulator computes a value for: every bound point.
SERVED_TARGETS: tuple[Target, ...] = (
    Target.SENSOR,
    Target.NODE,
    Target.SWITCH,
    Target.APPLIANCE,
    Target.BRANCH,
    Target.DER,
)


@dataclass(frozen=True)
class PointValues:
    """The exact value of every point (by point index) and the sigma of its measurement noise."""

    exact: npt.NDArray[np.float64]
    sigma: npt.NDArray[np.float64]


@dataclass(frozen=True)
class PointPlan:
    """Where each point's value comes from, as index arrays; see the module docstring.

    ``sensors``, ``appliances`` and ``branches`` map (table, quantity) to the points and their
    rows in that table; ``nodes`` gathers node voltages; ``switches`` and ``fpi_switches``
    gather from the switch rows; ``fpi_sensors`` pairs points with sensor ids (its ``rows`` are
    ids, not rows). ``noisy`` and ``magnitude`` mark the points that carry measurement noise and
    the magnitudes (never negative, exactly 0 when de-energised).
    """

    size: int
    sensors: dict[tuple[str, str], Gather]
    nodes: Gather
    appliances: dict[tuple[str, str], Gather]
    branches: dict[tuple[str, str], Gather]
    switches: Gather
    fpi_switches: Gather
    fpi_sensors: Gather
    noisy: npt.NDArray[np.bool_]
    magnitude: npt.NDArray[np.bool_]

    def evaluate(
        self,
        twin: Grid,
        result: PowerFlowResult | None,
        accuracy: Accuracy,
        *,
        closed: npt.NDArray[np.int8],
        fpi_switches: npt.NDArray[np.bool_],
        fpi_sensors: Collection[int],
    ) -> PointValues:
        """Return every point's exact value and noise sigma for the twin's state.

        ``twin`` is the grid as the twin holds it, ``result`` its converged power flow (None:
        the measured points are NaN). ``closed`` and ``fpi_switches`` are the switch states and
        the picked-up switch indicators (by switch row), ``fpi_sensors`` the ids of the sensors
        whose indicator picked up.
        """
        exact = np.full(self.size, np.nan)
        sigma = np.zeros(self.size)
        if result is not None:
            self._gather_measured(twin, result, accuracy, exact, sigma)
        points, rows = self.switches
        exact[points] = closed[rows].astype(float)
        points, rows = self.fpi_switches
        exact[points] = fpi_switches[rows].astype(float)
        points, ids = self.fpi_sensors
        exact[points] = np.isin(ids, np.fromiter(fpi_sensors, dtype=np.int64)).astype(float)
        return PointValues(exact, sigma)

    def _gather_measured(
        self,
        twin: Grid,
        result: PowerFlowResult,
        accuracy: Accuracy,
        exact: npt.NDArray[np.float64],
        sigma: npt.NDArray[np.float64],
    ) -> None:
        if self.sensors:
            measured = measurements_from_power_flow(twin, result, noise=None, pseudo_loads=False, accuracy=accuracy)
            for (table, quantity), (points, rows) in self.sensors.items():
                fields = SENSOR_FIELDS[(table, quantity)]
                exact[points] = measured[table][fields.value][rows]
                sigma[points] = measured[table][fields.sigma][rows]
        output = result.output
        points, rows = self.nodes
        if points.size:
            exact[points] = output["node"]["u"][rows]
            sigma[points] = accuracy.voltage_rel * twin.component("node")["u_rated"][rows]
        for groups, suffix in ((self.appliances, ""), (self.branches, "_from")):
            for (table, quantity), (points, rows) in groups.items():
                res = output[table]
                if quantity == "i":
                    exact[points] = res["i" + suffix][rows]
                    sigma[points] = accuracy.current_rel * exact[points] + accuracy.current_abs_a
                else:
                    exact[points] = res[quantity + suffix][rows]
                    s = np.hypot(res["p" + suffix][rows], res["q" + suffix][rows])
                    sigma[points] = accuracy.power_rel * s + accuracy.power_abs_w


def plan_points(binding: PointBinding) -> PointPlan:
    """Return the plan that fills every point of ``binding`` by index.

    Raises :class:`~opendso.telemetry.points.PointMapError` listing every point the binding
    leaves unbound (an unknown element, or a quantity the element has no place for).
    """
    binding.require(SERVED_TARGETS, user="the field simulator")
    fpi_sensor_points = binding.gather(Target.SENSOR, quantities={FPI}).points
    node_points = binding.gather(Target.NODE, quantities={"u"})
    return PointPlan(
        size=len(binding),
        sensors=binding.groups(Target.SENSOR, quantities=MEASURED_QUANTITIES),
        nodes=node_points,
        appliances=binding.groups(Target.APPLIANCE, quantities=MEASURED_QUANTITIES),
        branches=binding.groups(Target.BRANCH, quantities=MEASURED_QUANTITIES),
        switches=binding.gather(Target.SWITCH, quantities={SWITCH}),
        fpi_switches=binding.gather(Target.SWITCH, quantities={FPI}),
        fpi_sensors=Gather(fpi_sensor_points, binding.element_id[fpi_sensor_points]),
        noisy=np.isin(binding.quantities, list(MEASURED_QUANTITIES)),
        magnitude=np.isin(binding.quantities, list(MAGNITUDES)),
    )
