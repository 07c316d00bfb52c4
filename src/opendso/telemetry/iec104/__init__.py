"""IEC 60870-5-104: a client (controlling station) adapter on c104, and an RTU simulator on OpenDSO's own link.

- :mod:`~opendso.telemetry.iec104.client`: :class:`Iec104Client` (GI on every connect,
  monitoring decoded a whole ASDU at a time, stale marks, reconnect back-off, commands with
  select-before-operate and the four outcomes) and :func:`iec104_clients`. c104 (GPL-3.0) is
  the optional extra ``iec104``, imported only when a client starts;
- :mod:`~opendso.telemetry.iec104.server`: :class:`Iec104Server`, the simulated RTU
  (spontaneous values, GI, read, command transmission per IEC 60870-5-101 clause 7.4.4);
- :mod:`~opendso.telemetry.iec104.link`: :class:`LinkParameters` and the controlled station's
  :class:`LinkConnection` (clause 5 of IEC 60870-5-104: sequence numbers, k/w window, t1-t3);
- :mod:`~opendso.telemetry.iec104.codec`: APCI frames, ASDUs, information elements, CP56Time2a,
  type identifications and causes of transmission, command objects.
"""

from opendso.errors import AsduError
from opendso.telemetry.iec104.client import Iec104Client, iec104_clients
from opendso.telemetry.iec104.codec import (
    COMMAND_IOA_OFFSET,
    COMMAND_MODES,
    CP56_SIZE,
    DEFAULT_COMMAND_MODE,
    ELEMENT_SIZE,
    TYPE_ID,
    Asdu,
    Cot,
    cp56time2a,
    encode_asdu,
    objects_per_asdu,
)
from opendso.telemetry.iec104.link import LinkConnection, LinkParameters
from opendso.telemetry.iec104.server import CommandCallback, CommandCheck, Iec104Server

__all__ = [
    "COMMAND_IOA_OFFSET",
    "COMMAND_MODES",
    "CP56_SIZE",
    "DEFAULT_COMMAND_MODE",
    "ELEMENT_SIZE",
    "TYPE_ID",
    "Asdu",
    "AsduError",
    "CommandCallback",
    "CommandCheck",
    "Cot",
    "Iec104Client",
    "Iec104Server",
    "LinkConnection",
    "LinkParameters",
    "cp56time2a",
    "encode_asdu",
    "iec104_clients",
    "objects_per_asdu",
]
