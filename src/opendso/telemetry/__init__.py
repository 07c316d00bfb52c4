"""Telemetry: point maps, quality flags and protocol adapters (Modbus TCP, MQTT, IEC 60870-5-104).

Every adapter derives from :class:`TelemetryAdapter`: it hands out :class:`Measurement`
batches and takes commands (:class:`CommandRequest` in, :class:`CommandResult` with one of
the four :class:`CommandOutcome` out); :class:`InProcessAdapter` does both in-process for unit
tests. The IEC 104 client needs the optional extra ``iec104`` (c104): import it from
:mod:`opendso.telemetry.iec104`.
"""

from opendso.errors import PointMapError, ScenarioError
from opendso.telemetry.base import AdapterCounters, InProcessAdapter, Measurement, TelemetryAdapter
from opendso.telemetry.binding import assert_valid_against_grid, validate_against_grid
from opendso.telemetry.commands import CommandKind, CommandOutcome, CommandRequest, CommandResult
from opendso.telemetry.modbus import ModbusPointServer, ModbusPoller, modbus_pollers
from opendso.telemetry.mqtt import MqttPublisher, MqttSubscriber, mqtt_subscribers
from opendso.telemetry.points import (
    Connection,
    Point,
    PointMap,
    PointMapFinding,
    point_map_for_grid,
    read_point_map,
    write_point_map,
)
from opendso.telemetry.quality import Quality
from opendso.telemetry.scenario import Scenario, ScenarioEvent, read_scenario
from opendso.telemetry.simulator import (
    FieldServer,
    FieldSimulator,
    ModbusFieldServer,
    MqttFieldServer,
    with_fault_indicators,
)

__all__ = [
    "AdapterCounters",
    "CommandKind",
    "CommandOutcome",
    "CommandRequest",
    "CommandResult",
    "Connection",
    "FieldServer",
    "FieldSimulator",
    "InProcessAdapter",
    "Measurement",
    "ModbusFieldServer",
    "ModbusPointServer",
    "ModbusPoller",
    "MqttFieldServer",
    "MqttPublisher",
    "MqttSubscriber",
    "Point",
    "PointMap",
    "PointMapError",
    "PointMapFinding",
    "Quality",
    "Scenario",
    "ScenarioError",
    "ScenarioEvent",
    "TelemetryAdapter",
    "assert_valid_against_grid",
    "modbus_pollers",
    "mqtt_subscribers",
    "point_map_for_grid",
    "read_point_map",
    "read_scenario",
    "validate_against_grid",
    "with_fault_indicators",
    "write_point_map",
]
