"""The field simulator: a digital twin of a grid that serves what field devices would report.

:class:`FieldSimulator` steps through the grid's SimBench profiles on a simulated clock that
runs ``speed`` times real time, holding each profile step (one power flow per step and per
change), and draws fresh measurement noise at every publish. Each point of the point map is
computed from the twin's power flow (power-grid-model through
:func:`~opendso.calc.powerflow.run_power_flow`):

- a sensor placement's points (``u``, ``p``, ``q``, ``i``) as
  :func:`~opendso.calc.measurements_from_power_flow` measures them, with noise
  ``noise * sigma * N(0, 1)`` (the placement's sigma, else the accuracy class); de-energised
  magnitudes read exactly 0;
- a node's ``u``, an appliance's (load, generator, source) ``p``/``q``, a branch's ``p``/``q``/``i``
  at its from end, for points that name those elements directly;
- a switch's ``switch`` point: 1.0 closed, 0.0 open;
- fault-passage indicators (quantity ``fpi``, see :func:`with_fault_indicators`): 1.0 while
  the indicator has picked up.

Protocol servers plug in through :class:`FieldServer`; :class:`ModbusFieldServer`,
:class:`MqttFieldServer` and :class:`Iec104FieldServer` are built in, one per point-map source
of that protocol. Commands come back through the servers as (point, value): a ``switch`` point
opens (0) or closes (1) its switch, a ``p`` point naming a generator sets its active power (NaN
releases it to the profile), a ``p_limit`` point naming a generator sets its export limit (the DER
model of :mod:`~opendso.telemetry.simulator.der`: a watchdog and a fail-safe limit; ``p_limit``
reads back the limit in force, ``p_available`` the power before it). A command on a point of
another kind is refused (:class:`CommandError`).

Scripted events (:mod:`opendso.telemetry.scenario`) run at their simulated times.
Communication loss takes a whole source off the air (:meth:`FieldServer.set_online`) or marks
points lost (:meth:`FieldServer.set_lost`): MQTT stops sending them, Modbus answers reads of
them with exception 0x0B (gateway target failed to respond), IEC 104 serves them NT|IV, so the
adapters see them turn stale (source) or invalid (points behind a gateway). Measurement
telegrams carry the wall-clock time; the simulated time is for the status bar and the scenario.

The package, by seam:

- :mod:`~opendso.telemetry.simulator.twin`: :class:`FieldSimulator` (clock, power flow,
  values, commands, events) and :class:`SimulatorCounters`;
- :mod:`~opendso.telemetry.simulator.planning`: which table and row each point's value is
  gathered from, resolved once;
- :mod:`~opendso.telemetry.simulator.indicators`: fault-passage indicator points and which of
  them a fault picks up;
- :mod:`~opendso.telemetry.simulator.der`: the DER export limits (:class:`DerSettings`,
  :class:`DerState`) and :func:`der_points`, the points that serve them;
- :mod:`~opendso.telemetry.simulator.servers`: the protocol server wrappers;
- :mod:`~opendso.telemetry.simulator.errors`: how a command is refused.
"""

from opendso.errors import CommandError, CommandValueError, NotCommandableError
from opendso.telemetry.simulator.der import DerSettings, DerState, der_points
from opendso.telemetry.simulator.indicators import with_fault_indicators
from opendso.telemetry.simulator.servers import (
    CommandCallback,
    FieldServer,
    Iec104FieldServer,
    ModbusFieldServer,
    MqttFieldServer,
    ServerFactory,
    default_server_factories,
)
from opendso.telemetry.simulator.twin import FieldSimulator, SimulatorCounters

__all__ = [
    "CommandCallback",
    "CommandError",
    "CommandValueError",
    "DerSettings",
    "DerState",
    "FieldServer",
    "FieldSimulator",
    "Iec104FieldServer",
    "ModbusFieldServer",
    "MqttFieldServer",
    "NotCommandableError",
    "ServerFactory",
    "SimulatorCounters",
    "default_server_factories",
    "der_points",
    "with_fault_indicators",
]
