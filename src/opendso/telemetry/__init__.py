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

__all__ = [
    "AdapterCounters",
    "InProcessAdapter",
    "Measurement",
    "ModbusPointServer",
    "ModbusPoller",
    "MqttPublisher",
    "MqttSubscriber",
    "Point",
    "PointMap",
    "PointMapError",
    "PointMapFinding",
    "Quality",
    "Source",
    "TelemetryAdapter",
    "assert_valid_against_grid",
    "modbus_pollers",
    "mqtt_subscribers",
    "point_map_for_grid",
    "read_point_map",
    "validate_against_grid",
    "write_point_map",
]
