"""Modbus TCP: the polling client (with commands), the point server, and the register coding.

- :mod:`~opendso.telemetry.modbus.client`: :class:`ModbusPoller` (one device of a point map:
  block reads per poll group, deadbands, stale marks, reconnect back-off; commands as writes)
  and :func:`modbus_pollers`;
- :mod:`~opendso.telemetry.modbus.server`: :class:`ModbusPointServer`, the device the field
  simulator and the tests serve points from (writes are checked commands);
- :mod:`~opendso.telemetry.modbus.codec`: :func:`encode_value` / :func:`decode_registers`
  (word and byte orders) and the coil values.
"""

from opendso.telemetry.modbus.client import MAX_BLOCK, MAX_GAP, ModbusPoller, modbus_pollers
from opendso.telemetry.modbus.codec import COIL_OFF, COIL_ON, decode_registers, encode_value, exception_text
from opendso.telemetry.modbus.server import ModbusPointServer, WriteCallback, WriteCheck

__all__ = [
    "COIL_OFF",
    "COIL_ON",
    "MAX_BLOCK",
    "MAX_GAP",
    "ModbusPointServer",
    "ModbusPoller",
    "WriteCallback",
    "WriteCheck",
    "decode_registers",
    "encode_value",
    "exception_text",
    "modbus_pollers",
]
