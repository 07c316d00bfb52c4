"""`opendso run`: the whole control room on embedded defaults, in one process.

It starts, in one asyncio loop:

- the field simulator on the grid (the demo grid by default) at an accelerated clock, with a
  scripted day unless another scenario is given (:mod:`opendso.demo`: a morning load ramp, a
  midday PV peak that overloads a feeder cable and lifts voltages, and a feeder breaker
  trip that is later reclosed). A trainer pauses, speeds up or fast-forwards that clock
  (:mod:`opendso.service.routes.trainer`, ``opendso trainer``);
- the telemetry adapters reading it over a real protocol on loopback (Modbus TCP by default, or
  MQTT through ``--broker``; a program that embeds it may give its own point map, whose sources'
  protocols, IEC 104 included, choose the adapters);
- the historian (SQLite in the data folder unless ``--database-url`` names another database),
  the real-time cycle and the alarms (:class:`~opendso.operations.monitor.Monitor`; a switch
  change in the field runs a cycle at once unless ``event_driven`` is off);
- the web service (:mod:`opendso.service`) on http://127.0.0.1:8000 (:class:`opendso.settings.RunConfig`:
  host, port, speed and cycle period default to the settings): the REST and WebSocket API
  and the web UI, fed by every cycle. The first start on an empty database creates the
  administrator (:func:`~opendso.service.security.ensure_admin`).
- the switching dispatcher (:mod:`opendso.operations.switching.dispatch`) in the web service's
  ``app.state.switching``: every open/close from the API, the UI, FLISR or a plan passes the
  safety gate, deciding on the latest telemetry's qualities, and goes to the field over the
  adapter that reads the switch's status point;
- FLISR (:class:`~opendso.operations.fault_response.FaultResponder`, ``app.state.flisr``): a
  protection trip seen in the cycle (the breaker opens with its fault-passage indicator picked
  up) is located, flagged, recorded as an outage, and isolated and restored through the same
  dispatcher, after an operator's approval (``advisory``, the default) or at once
  (``automatic``; :attr:`ControlRoomProcess.flisr`, ``OPENDSO_RUN_FLISR``). The default point
  maps carry a fault-passage indicator per switch and branch sensor (the field simulator picks
  them up on a scripted fault).
- active network management (:class:`~opendso.der.anm.AnmController`, ``app.state.anm``) when
  :attr:`ControlRoomProcess.anm` (``OPENDSO_RUN_ANM``) is on: the generators of the DER
  registry's connected flexible assets get export-limit points (``p_limit``, ``p_available``)
  with their agreement's fail-safe limit and a watchdog in the simulator, and the controller,
  a cycle subscriber, sends their limits through a set-point arbiter and the dispatcher.
- demand response (:class:`~opendso.der.openadr.DemandResponseVtn`, ``app.state.dr``) when
  :attr:`ControlRoomProcess.openadr` has the VTN's certificate, key and the VENs' CA
  (``OPENDSO_OPENADR_*``): an OpenADR 2.0b VTN over mutual TLS on the DER registry, started
  before the web service and stopped after it. With ANM's set-point arbiter, each cycle
  (:func:`apply_dr_events`) submits the ``dr`` requests of every level interval that has begun
  by the monitor's clock (wall-clock UTC, the clock of the VENs and of the event's OpenADR
  status) for the assets of the VENs that did not opt out, and releases them when the event
  ends or is cancelled.

``link_delay_s`` delays every frame between the adapters and the simulator's servers (Modbus TCP,
IEC 104) by that long in each direction, through a loopback proxy: a slow radio or WAN link for
training, tests and the FLISR benchmark.

The port is bound before anything starts, so a port in use is one clear error. Ctrl-C stops
everything in order: web service, adapters, monitor (which flushes the historian), simulator;
nothing is left half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from opendso.demo import demo_scenario, demo_start_step
from opendso.der import DerRegistry
from opendso.der.anm import AnmController, AnmSettings, anm_ders, flexible_generators
from opendso.der.openadr import DemandResponseVtn, SetpointSink, VtnTls, release_event, submit_interval
from opendso.grid import Grid
from opendso.measurement import Measurement
from opendso.operations.cycle import CycleResult, CycleSettings
from opendso.operations.fault_response import FaultResponder, FlisrConfig, FlisrMode, indicators_from_latest
from opendso.operations.monitor import Monitor
from opendso.operations.outage_tracker import OutageTracker
from opendso.operations.setpoints import FlexibleDer, SetpointArbiter, SetpointGate
from opendso.operations.switching import (
    measured_nodes,
    qualities_from_latest,
    read_gate_config,
    route_by_point_map,
)
from opendso.operations.switching.dispatch import route_setpoints_by_point_map
from opendso.quality import Quality
from opendso.service import ControlRoom, ServiceSettings, create_app, ensure_admin
from opendso.service.routes.switching import Switching, switching_for_room
from opendso.service.server import WebServer, bind_socket, plain_http_warning, url_of
from opendso.service.syslog import SyslogSettings, start_forwarding
from opendso.settings import OpenAdrConfig, get_settings
from opendso.store import Historian
from opendso.store.der import DerStore
from opendso.store.integrity import KEY_FILE, private_folder
from opendso.store.outages import OutageStore
from opendso.store.testing import TcpProxy
from opendso.telemetry import FieldSimulator, TelemetryAdapter, modbus_pollers, mqtt_subscribers, point_map_for_grid
from opendso.telemetry.points import PointMap
from opendso.telemetry.scenario import Scenario
from opendso.telemetry.simulator import with_fault_indicators
from opendso.telemetry.simulator.der import DerSettings, der_points

__all__ = ["ControlRoomProcess", "apply_dr_events", "free_port"]

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral TCP port free right now on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class ControlRoomProcess:
    """Everything `opendso run` starts, wired together (see the module docstring)."""

    grid: Grid
    data_dir: Path
    database_url: str | None = None
    broker_url: str | None = None
    speed: float = field(default_factory=lambda: get_settings().run.speed)
    period_s: float = field(default_factory=lambda: get_settings().run.period_s)
    scenario: Scenario | None = None  # None: the demo's scripted day
    start_step: int | None = None  # None: the demo's summer morning
    on_cycle: Callable[[CycleResult], None] | None = None
    host: str = field(default_factory=lambda: get_settings().run.host)
    #: None: no web service; 0: any free port
    port: int | None = field(default_factory=lambda: get_settings().run.port)
    service_settings: ServiceSettings | None = None
    on_ready: Callable[[], None] | None = None  # called once everything runs and the service accepts connections
    admin_password: str | None = None  # for a new database; else OPENDSO_ADMIN_PASSWORD or a random one
    tls_cert: Path | None = None  # serve https with this certificate and key
    tls_key: Path | None = None
    syslog: SyslogSettings | None = None  # forward the audit trail (default: OPENDSO_SYSLOG_URL, if set)
    #: the field's point map (None: the grid's placements and switches over Modbus, or MQTT with a broker);
    #: its sources' protocols choose the adapters, the simulator serves it
    points: PointMap | None = None
    event_driven: bool = True  # a switch change in the field runs a cycle at once (CycleSettings.event_driven)
    #: FLISR after a protection trip: off, advisory (an operator approves each plan) or automatic
    flisr: FlisrMode = field(default_factory=lambda: FlisrMode(get_settings().run.flisr))
    #: seconds every frame between adapters and the simulator takes, each way (Modbus TCP and IEC 104)
    link_delay_s: float = 0.0
    #: active network management of the registry's flexible DER on the cycle (OPENDSO_RUN_ANM)
    anm: bool = field(default_factory=lambda: get_settings().run.anm)
    #: the safety gate's configuration file (None: the defaults; no critical switches, no parallel pairs)
    gate_config: Path | None = field(default_factory=lambda: get_settings().run.gate_config)
    #: demand response: the OpenADR VTN's TLS files, host, port and poll interval (OPENDSO_OPENADR_*; off unset)
    openadr: OpenAdrConfig = field(default_factory=lambda: get_settings().openadr)
    point_map: PointMap = field(init=False)
    #: the administrator's one-time password when this start created it (None on later starts)
    created_admin_password: str | None = field(init=False, default=None)
    #: set once everything runs and the web service accepts connections
    ready: threading.Event = field(init=False, default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = field(init=False, default=None, repr=False)
    _stop: asyncio.Event = field(init=False, default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        private_folder(self.data_dir)  # database, integrity key and anchors: the owner's only (700)
        self._socket = bind_socket(self.host, self.port) if self.port is not None else None
        try:
            self._build()
        except BaseException:
            if self._socket is not None:
                self._socket.close()
            raise

    def _build(self) -> None:
        if self.points is not None:
            self.point_map = self.points
        elif self.broker_url:
            self.point_map = with_fault_indicators(
                point_map_for_grid(self.grid, protocol="mqtt", topic_prefix="opendso/run/"), self.grid
            )
        else:
            self.point_map = with_fault_indicators(
                point_map_for_grid(self.grid, protocol="modbus", port=free_port()), self.grid
            )
        self.historian = Historian.open(
            self.database_url or f"sqlite:///{self.data_dir / 'opendso.db'}",
            key_path=None if get_settings().database.integrity_key is not None else self.data_dir / KEY_FILE,
        )
        der_settings = self._anm_field() if self.anm else None
        self._proxies: list[TcpProxy] = []
        self.client_map = self._through_links(self.point_map)
        options = (
            {source.name: {"broker_url": self.broker_url} for source in self.point_map.sources_of("mqtt")}
            if self.broker_url
            else None
        )
        self.simulator = FieldSimulator(
            self.grid,
            self.point_map,
            speed=self.speed,
            start_step=demo_start_step(self.grid) if self.start_step is None else self.start_step,
            scenario=self.scenario if self.scenario is not None else demo_scenario(self.grid),
            server_options=options,
            der=der_settings,
        )
        self.monitor = Monitor(
            self.grid,
            self.client_map,
            self.historian,
            self._adapters(),
            settings=CycleSettings(period_s=self.period_s, event_driven=self.event_driven),
            on_cycle=[self._cycle_done, *([self.on_cycle] if self.on_cycle is not None else [])],
        )
        self.room = ControlRoom(self.grid, self.historian, monitor=self.monitor, simulator=self.simulator)
        self.app = create_app(self.room, self.service_settings or ServiceSettings.from_env())
        switching = self.app.state.switching = self._switching()
        self.outage_tracker = OutageTracker(
            OutageStore(self.historian.engine), lambda: self.monitor.cycle.grid, fault_current=self._fault_current
        )
        self.monitor.subscribe(self.outage_tracker.on_cycle)
        self.flisr_responder = self.app.state.flisr = self._flisr(switching, self.outage_tracker)
        self.monitor.subscribe(self.flisr_responder.on_cycle)
        self.anm_controller = self.app.state.anm = self._anm(switching) if self.anm else None
        if self.anm_controller is not None:
            self.monitor.subscribe(self.anm_controller.on_cycle)
        self.dr_vtn = self.app.state.dr = self._dr()
        self._dr_applied: dict[str, int] = {}
        self._dr_task: asyncio.Task[None] | None = None
        if self.dr_vtn is not None and self.anm_controller is not None:
            self.monitor.subscribe(self._dr_on_cycle)
        self._web = (
            WebServer(self.app, self._socket, tls_cert=self.tls_cert, tls_key=self.tls_key)
            if self._socket is not None
            else None
        )
        warning = plain_http_warning(self.host, self.tls_cert is not None) if self._socket is not None else None
        if warning is not None:
            log.warning("event=plain_http_on_network host=%s", self.host)
            sys.stderr.write(f"\n{'!' * 100}\n{warning}\n{'!' * 100}\n\n")
        self.created_admin_password = ensure_admin(self.historian, self.admin_password)
        self.forwarder = start_forwarding(self.historian.engine, self.syslog)

    def _through_links(self, point_map: PointMap) -> PointMap:
        """The point map the adapters read: each TCP source through a delaying proxy when ``link_delay_s``."""
        if self.link_delay_s <= 0:
            return point_map
        sources = dict(point_map.sources)
        for name, connection in point_map.sources.items():
            if connection.protocol in ("modbus", "iec104"):
                proxy = TcpProxy(connection.host, connection.port, delay_s=self.link_delay_s)
                proxy.start()
                self._proxies.append(proxy)
                sources[name] = replace(connection, host="127.0.0.1", port=proxy.port)
        return replace(point_map, sources=sources)

    def _adapters(self) -> list[TelemetryAdapter]:
        """The adapters that read the point map: one per source, by its protocol."""
        client_map = self.client_map
        adapters: list[TelemetryAdapter] = [*modbus_pollers(client_map)]
        if client_map.sources_of("mqtt"):
            broker: dict[str, Any] = {"broker_url": self.broker_url} if self.broker_url else {}
            adapters += mqtt_subscribers(client_map, **broker)
        if client_map.sources_of("iec104"):
            from opendso.telemetry.iec104 import iec104_clients  # c104 is an optional extra

            adapters += iec104_clients(client_map)
        return adapters

    def _fault_current(self, switch: str) -> bool:
        """Whether the switch's own indicator (protection pick-up) saw fault current, in the latest values."""
        point = f"{switch}/fpi"
        return indicators_from_latest(self.monitor.latest, [point]).get(point, False)

    def _flisr(self, switching: Switching, tracker: OutageTracker) -> FaultResponder:
        """FLISR on the cycle: faulted nodes flagged in the register, steps through the dispatcher."""

        def flag(nodes: Sequence[str], reason: str, at: datetime) -> None:
            known = {f.node for f in switching.register.store.load().faults}
            for node in nodes:
                if node not in known:
                    switching.register.flag_faulted(node, reason, actor="flisr")

        fpi = [p.name for p in self.client_map.points if p.quantity == "fpi"]
        return FaultResponder(
            switching.dispatcher,
            latest=lambda: self.monitor.latest,
            fpi_points=fpi,
            config=FlisrConfig(mode=self.flisr, settle_s=2 * self.period_s + 4 * self.link_delay_s),
            events=self.historian.events,
            flag_faulted=flag,
            outage_of=tracker.outage_of,
            clock=self.monitor.clock,
        )

    def _anm_field(self) -> dict[str, DerSettings]:
        """Export-limit points for the flexible DER's generators; their fail-safe limit and a watchdog of 10 cycles."""
        assets = flexible_generators(DerRegistry(DerStore(self.historian.engine), self.grid), self.grid)
        if not assets or not any(s.protocol in ("modbus", "iec104") for s in self.point_map.sources.values()):
            log.warning("event=anm_no_der flexible_generators=%d", len(assets))
            return {}
        self.point_map = der_points(self.point_map, list(assets))
        watchdog_s = 10.0 * self.period_s * self.speed  # simulated seconds: ten cycles without a write
        return {
            gen: DerSettings(
                watchdog_s=watchdog_s,
                fail_safe_w=(a.agreement.export_limit_kw or 0.0) * 1e3,
                rating_w=a.export_kw * 1e3,
            )
            for gen, a in assets.items()
        }

    def _anm(self, switching: Switching) -> AnmController:
        """ANM on the cycle: the registry's flexible DER, their limits through an arbiter and the dispatcher."""
        ders = anm_ders(DerRegistry(DerStore(self.historian.engine), self.grid), self.client_map, self.grid)

        def latest_of(name: str) -> Measurement | None:  # the monitor's latest values at the time asked
            return self.monitor.latest.get(name)

        gate = SetpointGate(
            [
                FlexibleDer(d.point, d.rating_w, tuple(p for p in (d.point, d.available_point) if p), d.asset.id)
                for d in ders
            ],
            latest=latest_of,
        )
        arbiter = SetpointArbiter(switching.dispatcher, gate, refresh_s=self.period_s, clock=self.monitor.clock)
        return AnmController(
            arbiter,
            ders,
            settings=AnmSettings(max_gap_s=5.0 * self.period_s * self.speed),
            latest=lambda: self.monitor.latest,
            events=self.historian.events,
            clock=self.monitor.clock,
            energy_time=lambda t: self.simulator.simulated_time_at(t) or t,
        )

    def _dr(self) -> DemandResponseVtn | None:
        """The OpenADR VTN on the DER registry when its TLS files are configured (None: demand response off)."""
        config = self.openadr
        cert, key, ca = config.cert, config.key, config.ca
        if cert is None or key is None or ca is None:
            return None
        return DemandResponseVtn(
            "OPENDSO-VTN",
            DerRegistry(DerStore(self.historian.engine), self.grid),
            tls=VtnTls(cert, key, ca),
            host=config.host,
            port=config.port,
            poll_interval=timedelta(seconds=config.poll_s),
        )

    def _dr_on_cycle(self, result: CycleResult) -> None:
        """Cycle subscriber: apply the DR events' intervals through ANM's arbiter (one pass at a time)."""
        if self._dr_task is not None and not self._dr_task.done():
            return
        self._dr_task = asyncio.get_running_loop().create_task(self._dr_pass())

    async def _dr_pass(self) -> None:
        vtn, anm = self.dr_vtn, self.anm_controller
        if vtn is None or anm is None:
            return
        ders = {d.name: d for d in anm.arbiter.gate.ders.values()}
        try:
            await apply_dr_events(vtn, anm.arbiter, ders, self.monitor.clock(), self._dr_applied)
        except Exception:  # one failed pass must not stop the next cycle's
            log.exception("event=dr_pass_failed")

    def _switching(self) -> Switching:
        """The safety gate's dispatcher, routed to the adapters, deciding on the latest telemetry."""
        nodes = measured_nodes(self.grid, self.client_map)
        status_points = {p.element: p.name for p in self.client_map.points if p.quantity == "switch"}

        def qualities() -> dict[str, Quality]:
            found = qualities_from_latest(self.monitor.latest, self.client_map, nodes=nodes)
            for switch in self.monitor.cycle.manually_entered:  # a crew's confirmed manual step
                found[switch] = found.get(switch, Quality.GOOD) | Quality.SUBSTITUTED
            return found

        def status(switch: str) -> tuple[float, int] | None:
            point = status_points.get(switch)
            m = self.monitor.latest.get(point) if point is not None else None
            return None if m is None else (m.value, int(m.quality))

        return switching_for_room(
            self.room,
            config=read_gate_config(self.gate_config, self.grid) if self.gate_config is not None else None,
            route=route_by_point_map(self.monitor.adapters, self.client_map),
            setpoint_route=route_setpoints_by_point_map(self.monitor.adapters, self.client_map),
            qualities=qualities,
            status=status,
        )

    def _cycle_done(self, result: CycleResult) -> None:
        self.room.publish(result)

    @property
    def url(self) -> str | None:
        """The web service's base URL (None without one)."""
        return url_of(self._socket, tls=self.tls_cert is not None) if self._socket is not None else None

    @contextlib.contextmanager
    def in_thread(self, *, timeout_s: float = 60.0) -> Iterator[ControlRoomProcess]:
        """Run in a background thread (its own event loop) until the block ends; yield once it is ready.

        For programs that embed the control room, and for tests and benchmarks. Raises what
        stopped it when it fails while starting.
        """
        failure: list[BaseException] = []

        def main() -> None:
            try:
                asyncio.run(self.run(install_signals=False))
            except BaseException as exc:
                failure.append(exc)
                self.ready.set()

        thread = threading.Thread(target=main, name="opendso-control-room", daemon=True)
        thread.start()
        if not self.ready.wait(timeout_s):
            raise TimeoutError(f"the control room did not start within {timeout_s} s")
        if failure:
            raise failure[0]
        try:
            yield self
        finally:
            self.request_stop()
            thread.join(timeout_s)
            if failure:
                raise failure[0]

    def jump_to(self, elapsed_s: float) -> None:
        """Fast-forward the simulated clock to ``elapsed_s`` seconds after the start, from any thread.

        The scripted events up to then run in order; a trainer (or a test) uses it to reach the
        next event of the scripted day without waiting for it.
        """
        if self._loop is None:
            raise RuntimeError("the control room is not running")
        self._loop.call_soon_threadsafe(self.simulator.jump_to, elapsed_s)

    def set_switch(self, name: str, closed: bool) -> None:
        """Open or close a switch in the simulated field, from any thread (as protection or a crew would).

        Nothing in the control room is told: it sees the change through telemetry, as an
        uncommanded switch change.
        """
        if self._loop is None:
            raise RuntimeError("the control room is not running")

        # set_switch wakes the clock: the change is published at once
        self._loop.call_soon_threadsafe(self.simulator.set_switch, name, closed)

    def call[T](self, function: Callable[..., T], *args: Any, timeout_s: float = 30.0) -> T:
        """Call ``function(*args)`` in the control room's event loop (where the simulator's clock runs) and
        return its result or raise what it raised, from any other thread."""
        if self._loop is None:
            raise RuntimeError("the control room is not running")

        async def in_loop() -> T:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(in_loop(), self._loop).result(timeout_s)

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop, from any thread (what Ctrl-C does)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self, *, duration_s: float | None = None, install_signals: bool = True) -> None:
        """Run until Ctrl-C (or ``duration_s``), then stop everything in order."""
        stop = self._stop = asyncio.Event()
        loop = self._loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        try:
            async with self.simulator:
                monitor_task = asyncio.create_task(self.monitor.run(), name="monitor")
                try:
                    if self.dr_vtn is not None:
                        await self.dr_vtn.start()
                    async with self._web or contextlib.nullcontext():
                        self.ready.set()
                        if self.on_ready is not None:
                            self.on_ready()
                        if duration_s is None:
                            await stop.wait()
                        else:
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(stop.wait(), timeout=duration_s)
                finally:  # the web service has stopped: no request sees a closed historian
                    if self.dr_vtn is not None:
                        await self.dr_vtn.stop()
                    if self._dr_task is not None:
                        with contextlib.suppress(Exception):
                            await self._dr_task
                    self.monitor.stop()
                    await monitor_task
        finally:
            for proxy in self._proxies:
                await asyncio.to_thread(proxy.stop)
            if self._socket is not None:
                self._socket.close()
            if self.forwarder is not None:
                await asyncio.to_thread(self.forwarder.stop)
            self.historian.close()
            log.info("event=control_room_stopped data_dir=%s", self.data_dir)


async def apply_dr_events(
    vtn: DemandResponseVtn,
    sink: SetpointSink,
    ders: Mapping[str, FlexibleDer],
    now: datetime,
    applied: MutableMapping[str, int],
) -> None:
    """Bring the arbiter's ``dr`` requests in line with the VTN's events at ``now``.

    ``ders``: asset id -> its export-limit point; ``applied``: event id -> the interval whose
    requests were submitted last (kept between calls). An interval that has begun and was not
    submitted yet is submitted (:meth:`DemandResponseVtn.setpoint_requests`), leaving out the
    assets of VENs that opted out; an event that has ended or was cancelled is released on every
    point it reached (:func:`release_event`) and forgotten. Price events ask nothing of the arbiter.
    """
    for event_id in vtn.event_ids():
        event = vtn.event(event_id)
        status = vtn.event_status(event_id)
        if status == "cancelled" or now >= event.end:
            if applied.pop(event_id, None) is not None:
                why = "cancelled" if status == "cancelled" else "ended"
                await release_event(sink, event, ders, assets=vtn.event_assets(event_id), reason=why)
            continue
        index = next((k for k, iv in enumerate(event.intervals) if iv.start <= now < iv.end), None)
        if index is None or applied.get(event_id) == index:
            continue
        opted_out = [
            vtn.enrollments.get(ven).assets
            for ven, record in vtn.opts(event_id).items()
            if record.opt_type == "optOut" and vtn.enrollments.find(ven) is not None
        ]
        skipped = {ders[a].point for assets in opted_out for a in assets if a in ders}
        requests = [r for r in vtn.setpoint_requests(event_id, index, ders) if r.point not in skipped]
        await submit_interval(sink, requests)
        applied[event_id] = index
        log.info("event=dr_interval_applied event_id=%s interval=%d requests=%d", event_id, index, len(requests))
