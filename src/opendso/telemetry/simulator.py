"""The field simulator: a digital twin of a grid that serves what field devices would report.

:class:`FieldSimulator` steps through the grid's SimBench profiles on a simulated clock that
runs ``speed`` times real time. Profile steps (quarter-hours) are *held*, not interpolated:
SimBench values are quarter-hour averages, holding them reproduces exactly the case a planner
or pandapower solves for that step, and it bounds the work to one power flow per simulated
step and per change (a command or an event), whatever the publish rate. Between power flows
every publish draws fresh measurement noise around the held values, as real transducers do.

Each point of the point map is computed from the twin's power flow (power-grid-model through
:func:`~opendso.calc.powerflow.run_power_flow`):

- a sensor placement's points (``u``, ``p``, ``q``, ``i``) as
  :func:`~opendso.calc.estimation.measurements_from_power_flow` measures them, with noise
  ``noise * sigma * N(0, 1)`` (the placement's sigma, else the accuracy class); de-energised
  magnitudes read exactly 0;
- a node's ``u``, an appliance's (load, generator, source) ``p``/``q``, a branch's ``p``/``q``/``i``
  at its from end, for points that name those elements directly;
- a switch's ``switch`` point: 1.0 closed, 0.0 open;
- fault-passage indicators (quantity ``fpi``, see :func:`with_fault_indicators`): 1.0 while
  the indicator has picked up.

Protocol servers plug in through :class:`FieldServer`; :class:`ModbusFieldServer` and
:class:`MqttFieldServer` are built in, one per point-map source of that protocol. Commands
come back through the servers as (point, value): a ``switch`` point opens (0) or closes (1)
its switch, a ``p`` point naming a generator sets its active power (NaN releases it to the
profile). A command on a point of another kind is refused (:class:`CommandError`).

Scripted events (:mod:`opendso.telemetry.scenario`) run at their simulated times.
Communication loss takes a whole source off the air (:meth:`FieldServer.set_online`) or marks
points lost (:meth:`FieldServer.set_lost`): MQTT stops sending them, Modbus answers reads of
them with exception 0x0B (gateway target failed to respond), so the adapters see them turn
stale (source) or invalid (points behind a gateway). Measurement telegrams carry the wall-clock
time; the simulated time is for the status bar and the scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt
from pymodbus.constants import ExcCodes

from opendso.calc.estimation import DEFAULT_ACCURACY, Accuracy, measurements_from_power_flow
from opendso.calc.powerflow import PowerFlowResult, run_power_flow
from opendso.errors import InputError
from opendso.grid.model import BRANCH_COMPONENTS, Grid
from opendso.grid.topology import analyse_topology, path_from_source
from opendso.telemetry.base import utc_now
from opendso.telemetry.modbus import ModbusPointServer
from opendso.telemetry.mqtt import MqttPublisher
from opendso.telemetry.points import Point, PointMap, Source, assert_valid_against_grid
from opendso.telemetry.quality import Quality
from opendso.telemetry.scenario import Scenario, ScenarioEvent, event_points, validate_scenario
from opendso.telemetry.timebase import TimeBase, check_speed

__all__ = [
    "CommandCallback",
    "CommandError",
    "CommandValueError",
    "FieldServer",
    "FieldSimulator",
    "ModbusFieldServer",
    "MqttFieldServer",
    "NotCommandableError",
    "ServerFactory",
    "SimulatorCounters",
    "default_server_factories",
    "with_fault_indicators",
]

log = logging.getLogger(__name__)


class CommandCallback(Protocol):
    """What a server calls with (point name, engineering value) when the field side receives a command.

    It raises :class:`CommandError` to refuse: :class:`NotCommandableError` for a point that takes
    no commands, :class:`CommandValueError` for a value the point does not take. With
    ``dry_run=True`` it only checks: it raises what the command would raise and changes nothing,
    so a server can check every part of a request before it applies any.
    """

    def __call__(self, point: str, value: float, *, dry_run: bool = False) -> Awaitable[None] | None:
        """Apply (or with ``dry_run`` only check) one command; raise :class:`CommandError` to refuse."""
        ...


#: Quantity of a fault-passage indicator point (1.0 picked up, 0.0 not).
FPI = "fpi"

#: A branch sensor's terminal types (branch_from, branch_to) in power-grid-model.
_BRANCH_TERMINALS = (0, 1)


class CommandError(InputError):
    """A command the twin cannot apply (see the subclasses); nothing of it was applied."""


class NotCommandableError(CommandError):
    """The point is unknown, or takes no commands (a measurement, an indicator)."""


class CommandValueError(CommandError):
    """The point takes commands, but not this value (a switch takes 0 or 1)."""


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


#: Builds the server of one source: (point map, source, command callback, options) -> server.
ServerFactory = Callable[[PointMap, Source, CommandCallback, Mapping[str, Any]], FieldServer]


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
        self, point_map: PointMap, source: Source, on_command: CommandCallback, options: Mapping[str, Any]
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
        self, point_map: PointMap, source: Source, on_command: CommandCallback, options: Mapping[str, Any]
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
        self, point_map: PointMap, source: Source, on_command: CommandCallback, options: Mapping[str, Any]
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


@dataclass
class SimulatorCounters:
    """What the simulator has done since it was built."""

    power_flows: int = 0
    not_converged: int = 0
    publishes: int = 0
    commands: int = 0
    refused_commands: int = 0
    events: int = 0
    power_flow_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """Return the counters as a plain dict (for logs and the API)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class _Action:
    at_s: float
    order: int
    event: ScenarioEvent
    undo: bool = False


# how each point gets its exact value: a table and a field, gathered by row
_SENSOR_FIELDS = {
    ("sym_voltage_sensor", "u"): ("u_measured", "u_sigma"),
    ("sym_power_sensor", "p"): ("p_measured", "p_sigma"),
    ("sym_power_sensor", "q"): ("q_measured", "q_sigma"),
    ("sym_current_sensor", "i"): ("i_measured", "i_sigma"),
}
_APPLIANCES = ("sym_load", "sym_gen", "source")
_MAGNITUDES = frozenset({"u", "i"})


class FieldSimulator:
    """A digital twin of ``grid`` serving the points of ``point_map``; see the module docstring.

    ``speed``: simulated seconds per real second. ``start_step``: the profile step the
    simulation starts at. ``noise``: measurement noise in sigmas (0 or None: exact values).
    ``seed``: seeds the noise. ``scenario``: scripted events (validated against the grid and the
    point map here). ``servers``: the protocol servers to use; by default one per source, built
    by ``server_factories`` (merged over :func:`default_server_factories`) with
    ``server_options[source name]``; sources whose protocol has no factory are not served (a
    warning names them). ``publish_period_s``: real seconds between publishes in :meth:`run`.
    """

    def __init__(
        self,
        grid: Grid,
        point_map: PointMap,
        *,
        speed: float = 60.0,
        start_step: int = 0,
        noise: float | None = 1.0,
        seed: int | None = None,
        scenario: Scenario | None = None,
        servers: Sequence[FieldServer] | None = None,
        server_factories: Mapping[str, ServerFactory] | None = None,
        server_options: Mapping[str, Mapping[str, Any]] | None = None,
        publish_period_s: float = 1.0,
        accuracy: Accuracy = DEFAULT_ACCURACY,
    ) -> None:
        speed = check_speed(speed, where="field simulator: speed")
        if not publish_period_s > 0:
            raise InputError(f"field simulator: publish_period_s must be > 0, got {publish_period_s!r}")
        # fault-passage indicators sit on switches too, which the generic check reads as elements
        plain = tuple(p for p in point_map.points if p.quantity != FPI)
        assert_valid_against_grid(replace(point_map, points=plain), grid)
        profiles = grid.profiles
        steps = profiles.steps if profiles is not None else 1
        if not 0 <= start_step < steps:
            raise InputError(f"field simulator: start_step must be 0..{steps - 1}, got {start_step}")
        self.grid, self.point_map = grid, point_map
        self.speed, self.noise, self.accuracy = float(speed), float(noise or 0.0), accuracy
        self.publish_period_s = float(publish_period_s)
        self.start_step = int(start_step)
        self.counters = SimulatorCounters()
        self._rng = np.random.default_rng(seed)
        if profiles is not None and profiles.steps > 1:
            times = profiles.time.astype("datetime64[s]").astype(np.int64)
            self.step_s = float(times[1] - times[0])
            self.start_time = datetime.fromtimestamp(int(times[start_step]), UTC)
        else:
            self.step_s = math.inf
            self.start_time = utc_now().replace(microsecond=0)
        self._elapsed_s = 0.0
        # the running clock (see run): elapsed_s = anchor elapsed + (monotonic - anchor monotonic) * rate
        self._paused = False
        self._anchor_mono: float | None = None
        self._anchor_elapsed = 0.0
        self.time_base = TimeBase()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._input_ids = {c: a["id"] for c, a in grid.input.items() if a.size}

        # the twin's state: what commands and events change
        self._closed = grid.switches["closed"].astype(np.int8).copy()
        self._switch_row = {str(n): i for i, n in enumerate(grid.switch_names)}
        gens = grid.component("sym_gen")
        self._gen_row = {str(n): i for i, n in enumerate(grid.names_of("sym_gen"))}
        self._gen_on = gens["status"].astype(np.int8).copy()
        self._gen_p_set = np.full(gens.size, np.nan)
        self._solar = _solar_generators(grid)
        self._load_factor = 1.0
        self._pv_factor = 1.0
        self._fpi_switch = np.zeros(self._closed.size, dtype=bool)
        self._fpi_sensor: set[int] = set()  # sensor ids whose indicator picked up
        self._fault_switch: int | None = None

        # points: how each one is computed
        self._points = point_map.points
        self._index = {p.name: k for k, p in enumerate(self._points)}
        self._plan = _plan_points(grid, self._points)
        n = len(self._points)
        self._exact = np.full(n, np.nan)
        self._sigma = np.zeros(n)
        self._noisy = np.array([p.quantity in ("u", "p", "q", "i") for p in self._points], dtype=bool)
        self._magnitude = np.array([p.quantity in _MAGNITUDES for p in self._points], dtype=bool)
        self._noise_factor = np.ones(n)
        self._frozen: dict[int, float] = {}
        self._last_sent = np.full(n, np.nan)
        self._quality = np.zeros(n, dtype=np.int64)
        self._lost: set[str] = set()
        self._offline: set[str] = set()

        self._result: PowerFlowResult | None = None
        self._computed_step: int | None = None
        self._dirty = True

        # scenario
        self.scenario = scenario or Scenario()
        validate_scenario(self.scenario, grid, point_map)
        actions: list[_Action] = []
        for order, event in enumerate(self.scenario.events):
            actions.append(_Action(event.at_s, order, event))
            if event.duration_s is not None:
                actions.append(_Action(event.at_s + event.duration_s, order, event, undo=True))
        self._actions = sorted(actions, key=lambda a: (a.at_s, a.order, a.undo))
        self._next_action = 0

        # servers
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        if servers is None:
            factories = default_server_factories()
            factories.update(server_factories or {})
            built: list[FieldServer] = []
            for source in point_map.sources.values():
                factory = factories.get(source.protocol)
                if factory is None:
                    log.warning("event=sim_source_not_served source=%s protocol=%s", source.name, source.protocol)
                    continue
                options = (server_options or {}).get(source.name, {})
                built.append(factory(point_map, source, self._on_command, options))
            servers = built
        self.servers: tuple[FieldServer, ...] = tuple(servers)
        self._source_points = {s: frozenset(p.name for p in point_map.points_of(s)) for s in point_map.sources}
        self._server_of_source = {
            s: [srv for srv in self.servers if srv.points & pts] for s, pts in self._source_points.items()
        }

    # -- clock ---------------------------------------------------------------------------------
    def simulated_clock(self) -> datetime:
        """Return the twin's simulated time (timezone-aware UTC): where the last advance left the clock."""
        return self.start_time + timedelta(seconds=self._elapsed_s)

    def simulated_time_at(self, wall: datetime) -> datetime | None:
        """Return the simulated time of a wall-clock instant (UTC); None before the clock first ran.

        Screens use it (through :attr:`time_base`) to show every stored time on the simulated clock.
        """
        return self.time_base.simulated_at(wall)

    @property
    def paused(self) -> bool:
        """True while a trainer holds the clock (the field still reports, at a standstill in time)."""
        return self._paused

    @property
    def running(self) -> bool:
        """True while :meth:`run` moves the clock with the wall clock."""
        return self._anchor_mono is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the clock runs in (None when it does not run): call the clock's methods there."""
        return self._loop if self.running else None

    def pause(self) -> bool:
        """Hold the simulated clock (events stop falling due); return False when it was already paused."""
        if self._paused:
            return False
        self._catch_up()
        self._paused = True
        self._reanchor()
        log.info("event=sim_clock_paused sim_time=%s", self.simulated_clock().isoformat())
        return True

    def resume(self) -> bool:
        """Let the simulated clock run on at :attr:`speed`; return False when it was not paused."""
        if not self._paused:
            return False
        self._paused = False
        self._reanchor()
        log.info("event=sim_clock_resumed sim_time=%s speed=%g", self.simulated_clock().isoformat(), self.speed)
        return True

    def set_speed(self, speed: float) -> None:
        """Run the clock at ``speed`` simulated seconds per real second from now on (a paused clock stays paused).

        Raises :class:`~opendso.errors.InputError` unless 0 < speed <= :data:`~opendso.telemetry.timebase.MAX_SPEED`.
        """
        value = check_speed(speed)
        self._catch_up()
        self.speed = value
        self._reanchor()
        log.info("event=sim_clock_speed sim_time=%s speed=%g", self.simulated_clock().isoformat(), value)

    def timetable(self) -> list[tuple[float, ScenarioEvent, bool, bool]]:
        """Every scripted action in order: (seconds after the start, event, is-undo, has run).

        An undo is the end of an event with ``duration_s`` (communication returns, a freeze ends).
        """
        self._catch_up()
        return [(a.at_s, a.event, a.undo, k < self._next_action) for k, a in enumerate(self._actions)]

    def _rate(self) -> float:
        return 0.0 if self._paused else self.speed

    def _catch_up(self) -> None:
        """Bring the twin's clock to where the running clock is now (events falling due run)."""
        if self._anchor_mono is not None:
            target = self._anchor_elapsed + (time.monotonic() - self._anchor_mono) * self._rate()
            self._advance_to(max(self._elapsed_s, target))

    def _start_clock(self) -> None:
        """Let the clock run with the wall clock from the twin's present time (the first anchor of a run)."""
        self._loop = asyncio.get_running_loop()
        self._anchor_mono = time.monotonic()
        self._reanchor()

    def _reanchor(self) -> None:
        """Restart the running clock from the twin's present time, and record it in the time base."""
        if self._anchor_mono is None:
            return
        self._anchor_mono, self._anchor_elapsed = time.monotonic(), self._elapsed_s
        self.time_base.add(utc_now(), self.simulated_clock(), self._rate())
        self._wake.set()  # publish at once: screens see the new time base with the next cycle

    @property
    def elapsed_s(self) -> float:
        """Simulated seconds since the start."""
        return self._elapsed_s

    @property
    def step(self) -> int:
        """The profile step the twin is at (held for the whole step)."""
        profiles = self.grid.profiles
        if profiles is None or not math.isfinite(self.step_s):
            return 0
        return (self.start_step + int(self._elapsed_s // self.step_s)) % profiles.steps

    def advance(self, seconds: float) -> None:
        """Move the simulated clock forward by ``seconds``, running the events that fall due."""
        self.advance_to(self._elapsed_s + seconds)

    def advance_to(self, elapsed_s: float) -> None:
        """Move the simulated clock to ``elapsed_s`` seconds after the start (never backwards).

        On a running clock this is a jump: the clock runs on from there (see :meth:`jump_to`).
        """
        self._advance_to(elapsed_s)
        self._reanchor()

    def _advance_to(self, elapsed_s: float) -> None:
        if not elapsed_s >= self._elapsed_s:  # NaN too
            raise ValueError(f"the simulated clock does not run backwards ({elapsed_s} < {self._elapsed_s})")
        while self._next_action < len(self._actions) and self._actions[self._next_action].at_s <= elapsed_s:
            action = self._actions[self._next_action]
            self._next_action += 1
            self._elapsed_s = max(self._elapsed_s, action.at_s)
            self._apply(action)
        self._elapsed_s = elapsed_s

    # -- state -----------------------------------------------------------------------------------
    def jump_to(self, elapsed_s: float) -> None:
        """Fast-forward the running clock to ``elapsed_s`` (events falling due run) and publish at once.

        Call it in the simulator's event loop; the clock then runs on from there at ``speed`` (or
        stays paused). A time before the clock's present time is refused
        (:class:`~opendso.errors.InputError`): the simulated clock never runs backwards.
        """
        self._catch_up()
        if not (math.isfinite(elapsed_s) and elapsed_s >= self._elapsed_s):
            raise InputError(
                f"field simulator: cannot jump to {elapsed_s!r} s after the start: the clock is at "
                f"{self._elapsed_s:.0f} s and never runs backwards"
            )
        self.advance_to(elapsed_s)
        self._wake.set()
        log.info("event=sim_clock_jump sim_time=%s", self.simulated_clock().isoformat())

    @property
    def result(self) -> PowerFlowResult:
        """The power flow of the twin's present state (run now if anything changed)."""
        self._refresh()
        assert self._result is not None
        return self._result

    def twin_grid(self) -> Grid:
        """Return the grid as the twin holds it now: profile step, factors, set-points, switch states."""
        inputs = dict(self.grid.input)
        profiles = self.grid.profiles
        if profiles is not None:
            step = self.step
            update = profiles.update_data(step, step + 1, input_ids=self._input_ids)
            for component, columns in update.items():
                array = inputs[component].copy()
                rows: Any = slice(None)
                if "id" in columns:
                    order = np.argsort(array["id"])
                    rows = order[np.searchsorted(array["id"], columns["id"][0], sorter=order)]
                for attribute, values in columns.items():
                    if attribute != "id":
                        array[attribute][rows] = values[0]
                inputs[component] = array
        loads = inputs.get("sym_load")
        if loads is not None and loads.size and self._load_factor != 1.0:
            loads = loads.copy()
            loads["p_specified"] *= self._load_factor
            loads["q_specified"] *= self._load_factor
            inputs["sym_load"] = loads
        gens = inputs.get("sym_gen")
        if gens is not None and gens.size:
            gens = gens.copy()
            if self._pv_factor != 1.0:
                gens["p_specified"][self._solar] *= self._pv_factor
            held = np.isfinite(self._gen_p_set)
            gens["p_specified"][held] = self._gen_p_set[held]
            gens["status"] = self._gen_on
            inputs["sym_gen"] = gens
        return replace(self.grid, input=inputs).with_switch_states(self._closed)

    def switch_closed(self, name: str) -> bool:
        """True when the twin's switch ``name`` is closed."""
        return bool(self._closed[self._switch(name)])

    def _refresh(self) -> None:
        step = self.step
        if not self._dirty and step == self._computed_step and self._result is not None:
            return
        twin = self.twin_grid()
        t0 = time.perf_counter()
        result = run_power_flow(twin)
        self.counters.power_flow_s += time.perf_counter() - t0
        self.counters.power_flows += 1
        self._result, self._computed_step, self._dirty = result, step, False
        if not result.converged:
            self.counters.not_converged += 1
            log.warning("event=sim_power_flow_failed step=%d error=%r", step, result.error)
            self._exact[:] = np.nan
            self._quality[:] = int(Quality.IV)
        else:
            self._fill_exact(twin, result)
            self._quality[:] = 0
        self._fill_discrete()

    def _fill_exact(self, twin: Grid, result: PowerFlowResult) -> None:
        sensors = measurements_from_power_flow(twin, result, noise=None, pseudo_loads=False, accuracy=self.accuracy)
        output = result.output
        acc = self.accuracy
        for (table, quantity), (idx, rows) in self._plan.gathers.items():
            if table in _SENSOR_COMPONENTS:
                value_field, sigma_field = _SENSOR_FIELDS[(table, quantity)]
                self._exact[idx] = sensors[table][value_field][rows]
                self._sigma[idx] = sensors[table][sigma_field][rows]
                continue
            res = output[table]
            if table == "node":
                self._exact[idx] = res["u"][rows]
                self._sigma[idx] = acc.voltage_rel * twin.component("node")["u_rated"][rows]
                continue
            suffix = "" if table in _APPLIANCES else "_from"
            if quantity == "i":
                self._exact[idx] = res["i" + suffix][rows]
                self._sigma[idx] = acc.current_rel * self._exact[idx] + acc.current_abs_a
            else:
                self._exact[idx] = res[quantity + suffix][rows]
                s = np.hypot(res["p" + suffix][rows], res["q" + suffix][rows])
                self._sigma[idx] = acc.power_rel * s + acc.power_abs_w

    def _fill_discrete(self) -> None:
        idx, rows = self._plan.switches
        self._exact[idx] = self._closed[rows].astype(float)
        idx, rows = self._plan.fpi_switches
        self._exact[idx] = self._fpi_switch[rows].astype(float)
        for k, sensor_id in zip(*self._plan.fpi_sensors, strict=True):
            self._exact[k] = 1.0 if int(sensor_id) in self._fpi_sensor else 0.0

    def values(self) -> dict[str, tuple[float, Quality]]:
        """Return what the field reports now for every point on the air: (value, quality), noise drawn.

        Frozen points repeat the value they had when frozen; lost points and points of offline
        sources are left out.
        """
        self._refresh()
        values = self._exact.copy()
        if self.noise:
            draw = self._rng.standard_normal(values.size)
            live = self._noisy & np.isfinite(values) & ~(self._magnitude & (values == 0.0))
            values = np.where(live, values + self.noise * self._noise_factor * self._sigma * draw, values)
            values = np.where(self._magnitude & live, np.abs(values), values)
        for k, frozen in self._frozen.items():
            values[k] = frozen
        self._last_sent = values
        off = self._lost.union(*(self._source_points[s] for s in self._offline)) if self._offline else self._lost
        return {
            p.name: (float(values[k]), Quality(int(self._quality[k])))
            for k, p in enumerate(self._points)
            if p.name not in off
        }

    def exact_values(self) -> dict[str, float]:
        """Return every point's value without noise, freezing or loss (the twin's truth)."""
        self._refresh()
        return {p.name: float(self._exact[k]) for k, p in enumerate(self._points)}

    # -- commands ----------------------------------------------------------------------------------
    def set_switch(self, name: str, closed: bool) -> None:
        """Open or close the twin's switch ``name``; the next power flow reflects it."""
        row = self._switch(name)
        if bool(self._closed[row]) != closed:
            self._closed[row] = 1 if closed else 0
            self._dirty = True
            if closed and self._fault_switch == row:
                self._clear_fault()
        self._wake.set()  # publish the change at once, not at the next period
        log.info("event=sim_switch switch=%s closed=%s", name, closed)

    def set_generator_p(self, name: str, p_w: float | None) -> None:
        """Hold generator ``name`` at ``p_w`` watts (None or NaN: follow the profile again)."""
        row = self._generator(name)
        self._gen_p_set[row] = np.nan if p_w is None else float(p_w)
        self._dirty = True
        self._wake.set()
        log.info("event=sim_generator_setpoint generator=%s p_w=%s", name, p_w)

    def set_generator_status(self, name: str, on: bool) -> None:
        """Switch generator ``name`` on or off (a DER trip)."""
        self._gen_on[self._generator(name)] = 1 if on else 0
        self._dirty = True
        self._wake.set()

    def check_command(self, point: str, value: float) -> Point:
        """Return the point a command on ``point`` with ``value`` would act on; change nothing.

        Raise :class:`NotCommandableError` for an unknown point or one that takes no commands
        (only a switch's ``switch`` point and a generator's ``p`` point do), and
        :class:`CommandValueError` for a value the point does not take (a switch: 0 open or 1
        close; a generator: a finite set-point in W, or NaN to release it to its profile).
        """
        try:
            p = self.point_map.point(point)
        except KeyError:
            raise NotCommandableError(f"command on unknown point {point!r}") from None
        if p.quantity == "switch" and p.element in self._switch_row:
            if value not in (0.0, 1.0):
                raise CommandValueError(f"command on {point!r}: a switch takes 0 (open) or 1 (close), got {value!r}")
        elif p.quantity == "p" and p.element in self._gen_row:
            if math.isinf(value):
                raise CommandValueError(f"command on {point!r}: a set-point is finite (NaN releases), got {value!r}")
        else:
            raise NotCommandableError(f"point {point!r} ({p.quantity} of {p.element!r}) takes no commands")
        return p

    def apply_command(self, point: str, value: float) -> None:
        """Apply a command received on ``point``: a switch (0 open, 1 close) or a generator's ``p`` set-point.

        A refused command (see :meth:`check_command`) raises and changes nothing.
        """
        self.counters.commands += 1
        try:
            p = self.check_command(point, value)
        except CommandError:
            self.counters.refused_commands += 1
            raise
        if p.quantity == "switch":
            self.set_switch(p.element, value == 1.0)
        else:
            self.set_generator_p(p.element, None if math.isnan(value) else value)
        self._wake.set()

    def _on_command(self, point: str, value: float, *, dry_run: bool = False) -> None:
        """The servers' :class:`CommandCallback`: check or apply; a refusal is logged and raised to the server."""
        if dry_run:
            self.check_command(point, value)
            return
        try:
            self.apply_command(point, value)
        except CommandError as exc:
            log.warning("event=sim_command_refused point=%s value=%r reason=%r", point, value, str(exc))
            raise

    def _switch(self, name: str) -> int:
        row = self._switch_row.get(name)
        if row is None:
            raise CommandError(f"no switch {name!r} in grid {self.grid.name}")
        return row

    def _generator(self, name: str) -> int:
        row = self._gen_row.get(name)
        if row is None:
            raise CommandError(f"no generator {name!r} in grid {self.grid.name}")
        return row

    # -- events ------------------------------------------------------------------------------------
    def _apply(self, action: _Action) -> None:
        event = action.event
        self.counters.events += 1
        log.info(
            "event=sim_scenario_event kind=%s undo=%s at_s=%g sim_time=%s",
            event.kind,
            action.undo,
            action.at_s,
            self.simulated_clock().isoformat(),
        )
        kind = event.kind
        if kind == "breaker_trip":
            assert event.switch is not None
            if event.fault is not None:
                self._pick_up_indicators(event.fault)
                self._fault_switch = self._switch(event.switch)
            self.set_switch(event.switch, False)
        elif kind == "switch_close":
            assert event.switch is not None
            self.set_switch(event.switch, True)
        elif kind == "fault_clear":
            self._clear_fault()
        elif kind in ("der_trip", "der_restore"):
            assert event.generator is not None
            self.set_generator_status(event.generator, kind == "der_restore")
        elif kind == "load_scale":
            self._load_factor = float(event.factor if event.factor is not None else 1.0)
            self._dirty = True
        elif kind == "pv_scale":
            self._pv_factor = float(event.factor if event.factor is not None else 1.0)
            self._dirty = True
        elif kind in ("comms_loss", "comms_restore"):
            lose = (kind == "comms_loss") != action.undo
            names = set(event_points(replace(event, source=None), self.point_map))
            if event.source is not None:
                (self._offline.add if lose else self._offline.discard)(event.source)
            if lose:
                self._lost |= names
            else:
                self._lost -= names
        elif kind == "freeze":
            for name in event_points(event, self.point_map):
                k = self._index[name]
                if action.undo:
                    self._frozen.pop(k, None)
                else:
                    last = self._last_sent[k]
                    self._frozen[k] = float(last if math.isfinite(last) else self._exact_now(k))
        elif kind == "noisy":
            factor = 1.0 if action.undo else float(event.factor if event.factor is not None else 10.0)
            for name in event_points(event, self.point_map):
                self._noise_factor[self._index[name]] = factor
        self._wake.set()

    def _exact_now(self, k: int) -> float:
        self._refresh()
        return float(self._exact[k])

    def _pick_up_indicators(self, fault_node: str) -> None:
        """Indicators on the branches between the source and the fault, on the faulted feeder, pick up."""
        twin = self.twin_grid()
        topology = analyse_topology(twin)
        node_id = int(twin.component("node")["id"][np.flatnonzero(twin.names_of("node") == fault_node)[0]])
        path = path_from_source(topology, node_id)
        if path is None:
            log.warning("event=sim_fault_not_energised node=%s", fault_node)
            return
        row = int(np.flatnonzero(topology.node_id == node_id)[0])
        feeder = int(topology.node_feeder[row])
        on_path: set[int] = set()
        for component, ids in topology.element_id.items():
            feeders = topology.branch_feeder.get(component)
            if feeders is None:
                continue
            hit = np.isin(ids, path.branches) & ((feeders == feeder) | (feeder < 0))
            on_path.update(int(i) for i in ids[hit])
        self._fpi_switch |= np.isin(self.grid.switches["element"], list(on_path))
        for component in ("sym_power_sensor", "sym_current_sensor"):
            sensors = self.grid.sensors.get(component)
            if sensors is None or not sensors.size:
                continue
            hit = np.isin(sensors["measured_object"], list(on_path)) & np.isin(
                sensors["measured_terminal_type"], _BRANCH_TERMINALS
            )
            self._fpi_sensor.update(int(i) for i in sensors["id"][hit])
        log.info(
            "event=sim_fault node=%s feeder=%d indicators=%d",
            fault_node,
            feeder,
            int(self._fpi_switch.sum()) + len(self._fpi_sensor),
        )
        self._dirty = True

    def _clear_fault(self) -> None:
        self._fpi_switch[:] = False
        self._fpi_sensor.clear()
        self._fault_switch = None
        self._dirty = True

    # -- serving -------------------------------------------------------------------------------------
    async def publish_once(self) -> dict[str, tuple[float, Quality]]:
        """Publish the present values through every server once; return what was published."""
        values = self.values()
        at = utc_now()
        lost = frozenset(self._lost)
        for source, servers in self._server_of_source.items():
            for server in servers:
                await server.set_online(source not in self._offline)
                await server.set_lost(lost & server.points)
        for server in self.servers:
            await server.publish({k: v for k, v in values.items() if k in server.points}, at=at)
        self.counters.publishes += 1
        return values

    async def start(self) -> None:
        """Start the servers, publish once, and run the clock in the background (see :meth:`run`)."""
        started: list[FieldServer] = []
        try:
            for server in self.servers:
                await server.start()
                started.append(server)
        except BaseException:
            for server in reversed(started):
                await server.stop()
            raise
        await self.publish_once()
        self._start_clock()  # the clock runs from here: trainer actions work as soon as start returns
        self._task = asyncio.create_task(self.run(), name="field-simulator")
        log.info(
            "event=sim_start grid=%s points=%d servers=%d speed=%g start=%s",
            self.grid.name,
            len(self._points),
            len(self.servers),
            self.speed,
            self.simulated_clock().isoformat(),
        )

    async def stop(self) -> None:
        """Stop the clock and the servers; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in self.servers:
            await server.stop()
        log.info(
            "event=sim_stop grid=%s %s",
            self.grid.name,
            " ".join(f"{k}={v}" for k, v in self.counters.as_dict().items()),
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Run the simulated clock at ``speed`` times the wall clock (held while paused); publish every period.

        A command, an event or a trainer action (pause, resume, speed, jump) publishes at once
        instead of waiting for the next period. Every start, and the stop, is an anchor of
        :attr:`time_base`.
        """
        if self._anchor_mono is None:
            self._start_clock()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.publish_period_s)
                self._wake.clear()
                try:
                    self._catch_up()
                    await self.publish_once()
                except Exception:
                    # a dead twin must be visible, not a silently frozen field
                    log.exception(
                        "event=sim_crash grid=%s sim_time=%s", self.grid.name, self.simulated_clock().isoformat()
                    )
                    raise
        finally:
            # the clock stops: later instants keep the simulated time it stopped at
            self.time_base.add(utc_now(), self.simulated_clock(), 0.0)
            self._anchor_mono = None


# -- planning which value each point carries ---------------------------------------------------------
_SENSOR_COMPONENTS = ("sym_voltage_sensor", "sym_power_sensor", "sym_current_sensor")
_Gather = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]


@dataclass(frozen=True)
class _Plan:
    gathers: dict[tuple[str, str], _Gather]  # (table, quantity) -> (point indices, rows)
    switches: _Gather
    fpi_switches: _Gather
    fpi_sensors: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]  # (point indices, sensor ids)


def _plan_points(grid: Grid, points: Sequence[Point]) -> _Plan:
    """Resolve every point to the table and row its value comes from; InputError naming any that cannot be served."""
    by_name: dict[str, tuple[str, int]] = {}
    for component in (*_SENSOR_COMPONENTS, "node", *_APPLIANCES, *BRANCH_COMPONENTS):
        table = grid.sensors.get(component) if component in _SENSOR_COMPONENTS else grid.input.get(component)
        if table is None or not table.size:
            continue
        for row, name in enumerate(grid.names_of(component)):
            by_name.setdefault(str(name), (component, row))
    switch_row = {str(n): i for i, n in enumerate(grid.switch_names)}
    gathers: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    switches: tuple[list[int], list[int]] = ([], [])
    fpi_sw: tuple[list[int], list[int]] = ([], [])
    fpi_sensor: tuple[list[int], list[int]] = ([], [])
    problems: list[str] = []
    for k, p in enumerate(points):
        if p.quantity == "switch" and p.element in switch_row:
            switches[0].append(k)
            switches[1].append(switch_row[p.element])
            continue
        if p.quantity == FPI:
            if p.element in switch_row:
                fpi_sw[0].append(k)
                fpi_sw[1].append(switch_row[p.element])
                continue
            where = by_name.get(p.element)
            if where is not None and where[0] in _SENSOR_COMPONENTS:
                fpi_sensor[0].append(k)
                fpi_sensor[1].append(int(grid.sensors[where[0]]["id"][where[1]]))
                continue
            problems.append(f"point {p.name!r}: a fault-passage indicator sits on a switch or a sensor")
            continue
        where = by_name.get(p.element)
        ok = where is not None and (
            (where[0] in _SENSOR_COMPONENTS and (where[0], p.quantity) in _SENSOR_FIELDS)
            or (where[0] == "node" and p.quantity == "u")
            or (where[0] in _APPLIANCES and p.quantity in ("p", "q"))
            or (where[0] in BRANCH_COMPONENTS and where[0] != "link" and p.quantity in ("p", "q", "i"))
        )
        if not ok or where is None:
            kind = where[0] if where is not None else "unknown element"
            problems.append(f"point {p.name!r}: the simulator cannot compute {p.quantity!r} of {p.element!r} ({kind})")
            continue
        entry = gathers.setdefault((where[0], p.quantity), ([], []))
        entry[0].append(k)
        entry[1].append(where[1])
    if problems:
        raise InputError("field simulator: " + "; ".join(problems))

    def arr(pair: tuple[list[int], list[int]]) -> _Gather:
        return np.asarray(pair[0], dtype=np.int64), np.asarray(pair[1], dtype=np.int64)

    return _Plan({key: arr(v) for key, v in gathers.items()}, arr(switches), arr(fpi_sw), arr(fpi_sensor))


def _solar_generators(grid: Grid) -> npt.NDArray[np.bool_]:
    """Generators that follow the sun: kind ``pv``, or a profile named PV*, or SimBench's aggregated
    low-voltage RES (kind ``res`` with an ``lv_*`` profile, mostly rooftop PV)."""
    n = grid.count("sym_gen")
    kinds = np.asarray(grid.column("sym_gen", "kind", ""), dtype=object)
    profiles = np.asarray(grid.column("sym_gen", "profile", ""), dtype=object)
    out = np.zeros(n, dtype=bool)
    for row in range(n):
        kind = str(kinds[row] or "").lower()
        profile = str(profiles[row] or "").lower()
        out[row] = kind == "pv" or profile.startswith("pv") or (kind == "res" and profile.startswith("lv_"))
    return out


def with_fault_indicators(point_map: PointMap, grid: Grid, *, source: str | None = None) -> PointMap:
    """Return ``point_map`` with a fault-passage indicator point (``<element>/fpi``) per switch and branch sensor.

    The points go to ``source`` (default: the first source), after its last address: Modbus
    uint16 registers, MQTT key ``fpi`` on the element's topic, IEC 104 single points
    (M_SP_NA_1) from IOA 3001. Their quantity is ``fpi`` (1.0 picked up, 0.0 not).
    """
    if not point_map.sources:
        raise InputError(f"{point_map.file}: no source to put fault-passage indicators on")
    src = point_map.sources[source or next(iter(point_map.sources))]
    mine = point_map.points_of(src.name)
    elements = [str(n) for n in grid.switch_names]
    for component in ("sym_power_sensor", "sym_current_sensor"):
        sensors = grid.sensors.get(component)
        if sensors is not None and sensors.size:
            on_branch = np.isin(sensors["measured_terminal_type"], _BRANCH_TERMINALS)
            elements += [str(n) for n in grid.names_of(component)[on_branch]]
    register = max((p.register + p.register_count for p in mine if p.register is not None), default=0)
    ioa = max([3000] + [p.ioa for p in mine if p.ioa is not None and p.type == "M_SP_NA_1"]) + 1
    topics = {p.element: p.topic for p in mine if p.topic is not None}
    added: list[Point] = []
    for element in dict.fromkeys(elements):
        kw: dict[str, Any]
        if src.protocol == "modbus":
            kw = {"register": register, "data_type": "uint16", "poll_group": next(iter(src.poll_groups), "default")}
            register += 1
        elif src.protocol == "mqtt":
            kw = {"topic": topics.get(element) or _topic_part(element), "key": FPI}
        else:
            kw = {"common_address": src.common_address, "ioa": ioa, "type": "M_SP_NA_1"}
            ioa += 1
        added.append(Point(f"{element}/{FPI}", element, FPI, "", src.name, **kw))
    return PointMap(file=point_map.file, sources=point_map.sources, points=point_map.points + tuple(added))


def _topic_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "element"
