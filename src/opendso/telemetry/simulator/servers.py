"""The field simulator's protocol servers: one per point-map source, serving the twin's values.

:class:`FieldServer` is what the twin needs from a server (start, stop, publish, lose points,
go off the air); :data:`ServerFactory` builds one for a source. Built in, by protocol
(:func:`default_server_factories`):

- :class:`ModbusFieldServer`: a Modbus TCP device (lost points answer exception 0x0B, writes
  are commands, refusals are exceptions 02/04);
- :class:`MqttFieldServer`: publishes JSON messages to a broker (lost points are left out; no
  commands);
- :class:`Iec104FieldServer`: an IEC 60870-5-104 RTU (spontaneous values, lost points NT|IV,
  commands with select-before-operate, refusals confirmed negatively).

Commands a server receives go to the twin through a :class:`CommandCallback`, which refuses
with a :class:`~opendso.telemetry.simulator.errors.CommandError`. Modbus and IEC 104 check a
whole request with ``dry_run=True`` before they apply any part of it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pymodbus.constants import ExcCodes

from opendso.errors import CommandError, NotCommandableError
from opendso.telemetry.modbus import ModbusPointServer
from opendso.telemetry.mqtt import MqttPublisher
from opendso.telemetry.points import Connection, PointMap
from opendso.telemetry.quality import Quality

__all__ = [
    "CommandCallback",
    "FieldServer",
    "Iec104FieldServer",
    "ModbusFieldServer",
    "MqttFieldServer",
    "ServerFactory",
    "default_server_factories",
]

log = logging.getLogger(__name__)


class CommandCallback(Protocol):
    """What a server calls with (point name, engineering value) when the field side receives a command.

    It raises :class:`~opendso.telemetry.simulator.errors.CommandError` to refuse:
    :class:`~opendso.telemetry.simulator.errors.NotCommandableError` for a point that takes no
    commands, :class:`~opendso.telemetry.simulator.errors.CommandValueError` for a value the point
    does not take. With
    ``dry_run=True`` it only checks: it raises what the command would raise and changes nothing,
    so a server can check every part of a request before it applies any.
    """

    def __call__(self, point: str, value: float, *, dry_run: bool = False) -> Awaitable[None] | None:
        """Apply (or with ``dry_run`` only check) one command; raise :class:`CommandError` to refuse."""
        ...


@runtime_checkable
class FieldServer(Protocol):
    """What the simulator needs from a protocol server (one per point-map source).

    ``points`` are the names of the points it serves. :meth:`publish` gets the values of the
    points that are on the air (lost points are left out); :meth:`set_lost` names the points
    whose communication is lost (the server makes the client see that the way its protocol
    does); :meth:`set_online` takes the whole source off the air and back. Commands received
    go to the callback the server was built with (see :data:`ServerFactory`).
    """

    name: str
    points: frozenset[str]

    async def start(self) -> None:
        """Start serving."""
        ...

    async def stop(self) -> None:
        """Stop serving and release the port or connection."""
        ...

    async def publish(self, values: Mapping[str, tuple[float, Quality]], *, at: datetime) -> None:
        """Serve these values (engineering units) measured at ``at`` (wall-clock UTC)."""
        ...

    async def set_lost(self, points: frozenset[str]) -> None:
        """Make exactly these points unreachable (an empty set restores them all)."""
        ...

    async def set_online(self, online: bool) -> None:
        """Take the source off the air (False) or bring it back (True)."""
        ...


#: Builds the server of one point-map source: (point map, its connection, command callback, options) -> server.
ServerFactory = Callable[[PointMap, Connection, CommandCallback, Mapping[str, Any]], FieldServer]


class ModbusFieldServer:
    """A Modbus TCP device serving one point-map source (a :class:`ModbusPointServer` underneath).

    Options: ``host``, ``port`` (0 for an ephemeral port; :attr:`port` holds the one bound).
    Writes by a client are commands (see :class:`ModbusPointServer` for the function codes and
    exception codes): a switch point's holding register takes 0 (open) or 1 (close), its
    declared coil (if any) OFF or ON; a generator's ``p`` register takes a set-point in W
    (NaN releases it). A write the twin refuses is answered with an exception and changes
    nothing: 02 (illegal data address) for a point that takes no commands, 04 (server device
    failure) for a value it does not take. Modbus has no quality: values are served as they are.
    """

    def __init__(
        self, point_map: PointMap, source: Connection, on_command: CommandCallback, options: Mapping[str, Any]
    ) -> None:
        self.name = f"modbus:{source.name}"

        async def check(point: str, value: float) -> ExcCodes | None:
            try:
                result = on_command(point, value, dry_run=True)
                if result is not None:
                    await result
            except NotCommandableError:
                return ExcCodes.ILLEGAL_ADDRESS
            except CommandError:
                return ExcCodes.DEVICE_FAILURE
            return None

        self.server = ModbusPointServer.for_source(
            point_map, source.name, on_write=on_command, check_write=check, **dict(options)
        )
        self.points = frozenset(self.server.points)
        self._lost: frozenset[str] = frozenset()
        self.online = True

    @property
    def port(self) -> int:
        """The TCP port served (the bound one after :meth:`start`)."""
        return self.server.port

    async def start(self) -> None:
        """Start the pymodbus server."""
        await self.server.start()
        self.online = True

    async def stop(self) -> None:
        """Stop the pymodbus server."""
        await self.server.stop()

    async def publish(self, values: Mapping[str, tuple[float, Quality]], *, at: datetime) -> None:
        """Write the values into the register image (integer points only when finite)."""
        for name, (value, _quality) in values.items():
            point = self.server.points.get(name)
            if point is None or (not math.isfinite(value) and not point.data_type.startswith("float")):
                continue
            try:
                self.server.set_value(name, value)
            except ValueError:
                log.warning("event=sim_modbus_value_does_not_fit point=%s value=%r", name, value)

    async def set_lost(self, points: frozenset[str]) -> None:
        """Answer reads of lost points with exception 0x0B (gateway target device failed to respond)."""
        points = points & self.points
        for name in points - self._lost:
            self.server.fail(name, int(ExcCodes.GATEWAY_NO_RESPONSE))
        for name in self._lost - points:
            self.server.fail(name, None)
        self._lost = points

    async def set_online(self, online: bool) -> None:
        """Stop listening (the poller cannot connect: its points turn stale) or listen again on the same port."""
        if online and not self.online:
            await self.server.start()
        elif not online and self.online:
            await self.server.stop()
        self.online = online


class MqttFieldServer:
    """Publishes one point-map source to an MQTT broker: one JSON message per topic and publish.

    Options: ``broker_url`` (default ``OPENDSO_MQTT_URL`` or the local Mosquitto) and
    ``topic_prefix`` (default the source's). Lost points are left out of the messages; an
    offline source publishes nothing. MQTT here carries measurements only, no commands.
    """

    def __init__(
        self, point_map: PointMap, source: Connection, on_command: CommandCallback, options: Mapping[str, Any]
    ) -> None:
        self.name = f"mqtt:{source.name}"
        prefix = options.get("topic_prefix", source.topic_prefix)
        self.publisher = MqttPublisher(options.get("broker_url"), topic_prefix=prefix, qos=int(options.get("qos", 1)))
        self._where = {p.name: (p.topic or "", p.key or p.quantity) for p in point_map.points_of(source.name)}
        self.points = frozenset(self._where)
        self._lost: frozenset[str] = frozenset()
        self.online = True
        self._connected = False
        self.messages = 0

    async def start(self) -> None:
        """Connect to the broker."""
        await self.publisher.__aenter__()
        self._connected = True

    async def stop(self) -> None:
        """Disconnect from the broker."""
        if self._connected:
            self._connected = False
            await self.publisher.__aexit__(None, None, None)

    async def publish(self, values: Mapping[str, tuple[float, Quality]], *, at: datetime) -> None:
        """Publish the values grouped by topic (points marked invalid are left out)."""
        if not self.online or not self._connected:
            return
        by_topic: dict[str, dict[str, float]] = {}
        for name, (value, quality) in values.items():
            where = self._where.get(name)
            if where is None or name in self._lost or quality & Quality.IV:
                continue
            by_topic.setdefault(where[0], {})[where[1]] = value
        for topic, body in by_topic.items():
            await self.publisher.publish(topic, body, at=at)
            self.messages += 1

    async def set_lost(self, points: frozenset[str]) -> None:
        """Leave these points out of the messages from now on."""
        self._lost = points & self.points

    async def set_online(self, online: bool) -> None:
        """Stop (False) or resume (True) publishing."""
        self.online = online


class Iec104FieldServer:
    """An IEC 60870-5-104 RTU (:class:`~opendso.telemetry.iec104.Iec104Server`) serving one source's points.

    Values go out spontaneously on change; lost points are served with quality NT|IV; going
    offline stops the server (clients see the link drop) and coming back starts it on the same
    port. Single and double commands on switch points and set-points on generator ``p`` points
    become simulator commands; a select is checked against the twin too (a select of a point
    the twin would refuse is confirmed negatively). A command the twin refuses is confirmed
    negatively (P/N = 1) and nothing is echoed. Options: those of ``Iec104Server``
    (``select_timeout_s``, ``command_modes``, ``link``, ...).
    """

    def __init__(
        self, point_map: PointMap, source: Connection, on_command: CommandCallback, options: Mapping[str, Any]
    ) -> None:
        from opendso.telemetry.iec104 import Iec104Server

        self.name = f"iec104:{source.name}"

        async def command(point: str, value: float) -> bool:
            try:
                result = on_command(point, value)
                if result is not None:
                    await result
            except CommandError:
                return False
            return True

        async def check(point: str, value: float) -> bool:
            try:
                result = on_command(point, value, dry_run=True)
                if result is not None:
                    await result
            except CommandError:
                return False
            return True

        self.server = Iec104Server.for_source(
            point_map, source.name, on_command=command, check_command=check, **dict(options)
        )
        self.points = frozenset(self.server.points)
        self._lost: frozenset[str] = frozenset()
        self.online = True

    async def start(self) -> None:
        """Start the RTU."""
        await self.server.start()
        self.online = True

    async def stop(self) -> None:
        """Stop the RTU."""
        await self.server.stop()

    async def publish(self, values: Mapping[str, tuple[float, Quality]], *, at: datetime) -> None:
        """Serve the values (lost points with quality not topical and invalid)."""
        if not self.online:
            return
        mine = {
            name: (value, (quality | Quality.NT | Quality.IV) if name in self._lost else quality)
            for name, (value, quality) in values.items()
            if name in self.points
        }
        self.server.set_values(mine)

    async def set_lost(self, points: frozenset[str]) -> None:
        """Serve these points as not topical and invalid from now on."""
        self._lost = points & self.points

    async def set_online(self, online: bool) -> None:
        """Stop (False) or restart (True) the RTU on the same port."""
        if online and not self.online:
            await self.server.start()
        elif not online and self.online:
            await self.server.stop()
        self.online = online


def default_server_factories() -> dict[str, ServerFactory]:
    """Return the built-in server factories by protocol: ``modbus``, ``mqtt`` and ``iec104``."""
    return {"modbus": ModbusFieldServer, "mqtt": MqttFieldServer, "iec104": Iec104FieldServer}
