"""Telemetry: point maps, quality flags and protocol adapters (Modbus TCP, MQTT).

Every adapter derives from :class:`TelemetryAdapter` and hands out :class:`Measurement`
batches; :class:`InProcessAdapter` feeds measurements in-process for unit tests.
"""

from opendso.telemetry.base import AdapterCounters, InProcessAdapter, Measurement, TelemetryAdapter
from opendso.telemetry.modbus import ModbusPointServer, ModbusPoller, modbus_pollers
from opendso.telemetry.mqtt import MqttPublisher, MqttSubscriber, mqtt_subscribers
from opendso.telemetry.points import (
    Point,
    PointMap,
    PointMapError,
    PointMapFinding,
    Source,
    assert_valid_against_grid,
    point_map_for_grid,
    read_point_map,
    validate_against_grid,
    write_point_map,
)
from opendso.telemetry.quality import Quality
from opendso.telemetry.scenario import Scenario, ScenarioError, ScenarioEvent, read_scenario
from opendso.telemetry.simulator import (
    FieldServer,
    FieldSimulator,
    ModbusFieldServer,
    MqttFieldServer,
    with_fault_indicators,
)

__all__ = [
    "AdapterCounters",
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
    "Source",
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
