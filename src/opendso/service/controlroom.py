"""The control room's runtime: the grid, the latest estimated state, alarms and live subscribers.

:class:`ControlRoom` is what the web service talks to. It holds the grid and its drawing
coordinates, the real-time cycle's alarm monitors (from a :class:`Monitor`, or a bare
:class:`RealTimeCycle` in tests), the historian and its event log, the audit trail and,
optionally, the field simulator whose clock the status bar shows. Every cycle result goes to
:meth:`ControlRoom.publish` (the monitor's ``on_cycle`` callback), which keeps it as the latest
state and pushes a ``state``, ``alarm`` and ``status`` message to every WebSocket subscriber.
Operator actions (acknowledge, shelve, unshelve, shift notes) and engineer actions (alarms out
of service, areas suppressed by design) go through it to the alarm monitors; each is appended to
the event log and the audit trail, and the alarm state is saved (:mod:`opendso.operations.alarm_store`).

Alarm messages carry the alarm's list entry after the transition (``alarm``, None when it left
the list) and the alarm-list version ``v``; ``GET /api/alarms`` gives the version of its list
(``X-Alarm-Version``), so a screen that reloads the list after a reconnect applies only the
messages newer than its list and ends up with exactly the server's list. The counts every
display shows come from one function (:func:`~opendso.operations.alarms.count_alarms`).

Grids without geography are drawn as a layered schematic (:func:`schematic_layout`): the depth
from the source along the topology's source tree is ``-y`` and leaves are spread along ``x`` in
depth-first order, each parent centred over its children; numpy only, one loop per depth level.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import sqlalchemy as sa
from scipy.sparse import csgraph

from opendso.errors import InputError
from opendso.grid.model import BRANCH_COMPONENTS, SENSOR_COMPONENTS, Grid
from opendso.grid.topology import analyse_topology
from opendso.operations import alarm_performance
from opendso.operations.alarm_store import AlarmStore
from opendso.operations.alarms import AlarmEvent, AlarmMonitor, AlarmState, AlarmStateError, count_alarms
from opendso.operations.cycle import CycleResult, Reading, RealTimeCycle
from opendso.operations.monitor import Monitor, alarm_event_payload, log_alarm_events
from opendso.service.audit import AuditTrail
from opendso.service.text import check_text
from opendso.store.historian import Historian
from opendso.store.schema import events as events_table
from opendso.telemetry.points import QUANTITIES

log = logging.getLogger(__name__)

SHIFT_NOTE = "shift.note"
_SUBSCRIBER_QUEUE = 256
#: Decimals of the state a display gets: 1e-5 p.u. and 0.001 % loading, well under any measurement's accuracy.
_U_DECIMALS = 5
_LOADING_DECIMALS = 5
#: Message kinds where only the newest matters: a client that falls behind gets the latest, not a backlog.
_CONFLATED = frozenset({"state", "status"})
#: Longest free-text reason (shelving, out of service, suppression).
MAX_REASON = 1000
#: Most events the alarm journal and the performance summary read from the event log per request.
MAX_JOURNAL_SCAN = 200_000
_ALARM_KINDS = ("alarm.",)


class Outbox:
    """What one WebSocket client has still to receive (used in the client's event loop).

    Alarm messages queue in order (the oldest is dropped past ``limit``); a state or status
    message replaces the one of its kind still waiting, so a slow client is shown the newest
    state rather than a growing backlog of old ones (conflation, as in SCADA display servers).
    """

    def __init__(self, limit: int = _SUBSCRIBER_QUEUE) -> None:
        self.limit = limit
        self._items: collections.deque[tuple[str, str]] = collections.deque()
        self._ready = asyncio.Event()
        self.conflated = 0  # messages replaced by a newer one before they were sent
        self.dropped = 0  # alarm messages lost because the client fell too far behind

    def offer(self, kind: str, text: str) -> None:
        """Add a message (JSON text) of a kind (``state``, ``status``, ``alarm``)."""
        if kind in _CONFLATED:
            for k, (waiting, _) in enumerate(self._items):
                if waiting == kind:
                    del self._items[k]
                    self.conflated += 1
                    break
        self._items.append((kind, text))
        if len(self._items) > self.limit:
            self._items.popleft()
            self.dropped += 1
        self._ready.set()

    def __len__(self) -> int:
        return len(self._items)

    async def get(self) -> str:
        """The next message to send (waits for one)."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()[1]


class NotFoundError(InputError):
    """An id, alarm key or point the control room does not know (HTTP 404)."""


class ConflictError(InputError):
    """The request is well formed but does not fit the present state (HTTP 409)."""


@dataclass
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: Outbox


def _finite(value: Any) -> Any:
    """Return a JSON-safe scalar: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def schematic_layout(grid: Grid, pred_node: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.float64]:
    """Return (n, 2) schematic coordinates: x spreads the tree's leaves, y = -depth from the source.

    ``pred_node`` is the row of each node's predecessor towards the source (-1 for roots), as in
    :attr:`Topology.pred_node`; nodes the source tree does not reach are roots of their own.
    """
    n = grid.count("node")
    if n == 0:
        return np.zeros((0, 2))
    pred = analyse_topology(grid).pred_node if pred_node is None else np.asarray(pred_node, dtype=np.int64)
    pred = np.where((pred >= 0) & (pred < n), pred, -1)
    # depth level by level from the roots: one sparse row gather per level
    depth = np.full(n, -1, dtype=np.int64)
    depth[pred < 0] = 0
    frontier = np.flatnonzero(pred < 0)
    children_of = sp.csr_array((np.ones(int((pred >= 0).sum())), (pred[pred >= 0], np.flatnonzero(pred >= 0))), (n, n))
    level = 0
    levels: list[npt.NDArray[np.int64]] = []
    while frontier.size:
        levels.append(frontier)
        level += 1
        nxt = np.unique(children_of[frontier].indices) if frontier.size else np.zeros(0, np.int64)
        nxt = nxt[depth[nxt] < 0]
        depth[nxt] = level
        frontier = nxt.astype(np.int64)
    depth[depth < 0] = 0
    # depth-first order from a virtual super-root over all roots
    roots = np.flatnonzero(pred < 0)
    rows = np.concatenate([np.full(roots.size, n), pred[pred >= 0]])
    cols = np.concatenate([roots, np.flatnonzero(pred >= 0)])
    tree = sp.csr_array((np.ones(rows.size), (rows, cols)), shape=(n + 1, n + 1))
    order = csgraph.depth_first_order(tree, n, directed=True, return_predecessors=False)
    order = order[order < n]
    n_children = np.bincount(pred[pred >= 0], minlength=n)
    x = np.full(n, np.nan)
    leaves = order[n_children[order] == 0]
    x[leaves] = np.arange(leaves.size, dtype=float)
    for lvl in reversed(levels[1:]):
        # parents of this level take the mean x of their children
        has = lvl[~np.isnan(x[lvl])]
        parents = pred[has]
        sums = np.bincount(parents, weights=x[has], minlength=n)
        counts = np.bincount(parents, minlength=n)
        done = np.flatnonzero(counts)
        x[done] = sums[done] / counts[done]
    x[np.isnan(x)] = 0.0
    return np.column_stack([x, -depth.astype(float)])


class ControlRoom:
    """The runtime behind the web service (see the module docstring)."""

    def __init__(
        self,
        grid: Grid,
        historian: Historian,
        *,
        monitor: Monitor | None = None,
        cycle: RealTimeCycle | None = None,
        points: Mapping[str, tuple[str, str]] | None = None,
        simulator: Any | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Serve ``grid`` from ``historian``; alarms come from ``monitor.cycle`` or ``cycle``.

        ``points`` (point name -> (element, quantity)) lists the measurement points (taken from
        the monitor's point map when a monitor is given). ``simulator`` (a FieldSimulator) gives
        the simulated clock. ``clock`` is the wall clock (UTC).
        """
        if monitor is not None:
            cycle = monitor.cycle
            points = {p.name: (p.element, p.quantity) for p in monitor.point_map.points}
        self.grid = grid
        self.historian = historian
        self.monitor = monitor
        self.cycle = cycle
        self.points: dict[str, tuple[str, str]] = dict(points or {})
        self.simulator = simulator
        self.clock = clock or (lambda: datetime.now(UTC))
        self.audit = AuditTrail(historian.engine)
        self.latest: CycleResult | None = None
        self._readings: dict[str, Reading] = {}
        self._state: dict[str, Any] | None = None
        self._state_json: tuple[bytes, str] | None = None
        self._alarms: list[dict[str, Any]] | None = None  # the alarm list, built once per change
        self._alarm_version = 0
        self._version = 0  # counts published states: the entity tag of /api/state
        self._subscribers: list[_Subscriber] = []
        # one lock with the monitor's cycle: acknowledging never races a cycle updating the alarms
        self._lock = monitor.lock if monitor is not None else threading.RLock()
        # the monitor restores the alarm state when it starts; a bare cycle's state is restored here
        self.alarm_store = monitor.alarm_store if monitor is not None else AlarmStore(historian.engine)
        if monitor is None and cycle is not None:
            with self._lock:
                self.alarm_store.restore(cycle.monitors)
                cycle.restore_areas(self.alarm_store.load_areas())
        topo = analyse_topology(grid)
        self._feeder_of_node = topo.node_feeder
        self._grid_view = self._build_grid_view(grid, topo.pred_node)
        self._element_index = self._build_element_index(grid)

    # -- alarm monitors ----------------------------------------------------------------------------------
    @property
    def monitors(self) -> tuple[AlarmMonitor, ...]:
        """The alarm monitors of the real-time cycle (none without a cycle)."""
        return self.cycle.monitors if self.cycle is not None else ()

    def _monitor_and_channel(self, key: str) -> tuple[AlarmMonitor, str]:
        name, sep, channel = key.partition(":")
        for monitor in self.monitors:
            if monitor.name == name and sep:
                if not monitor.has_channel(channel):
                    break
                return monitor, channel
        raise NotFoundError(f"no alarm with key {key!r} (keys are '<monitor>:<channel>')")

    def alarm_time(self) -> datetime:
        """The alarms' clock: the monitor's (the time its cycles run on), else the control room's."""
        return self.monitor.clock() if self.monitor is not None else self.clock()

    def _require_cycle(self) -> RealTimeCycle:
        if self.cycle is None:
            raise ConflictError("the control room has no real-time cycle")
        return self.cycle

    # -- the cycle ---------------------------------------------------------------------------------------
    def run_cycle(self, readings: Mapping[str, Reading], now: datetime | None = None) -> CycleResult:
        """Run one cycle of the bare :class:`RealTimeCycle` on ``readings``, log its alarms and publish it."""
        if self.cycle is None:
            raise ConflictError("the control room has no real-time cycle")
        now = now or self.clock()
        self._readings = dict(readings)
        with self._lock:
            result = self.cycle.run(self._readings, now)
        log_alarm_events(self.historian.events, result.alarm_events)
        self.alarm_store.persist(self.cycle.monitors, self._lock)
        self.publish(result)
        return result

    def publish(self, result: CycleResult) -> None:
        """Keep a cycle result as the latest state and push it to every subscriber (thread-safe)."""
        self._alarms_changed()
        with self._lock:
            self.latest = result
            self._state = None
            self._state_json = None
            self._version += 1
        # one serialisation per cycle, shared by /api/state and every WebSocket client;
        # published_at (epoch seconds) lets a client measure state-change-to-screen latency
        published = time.time()
        body, _ = self.state_json()
        self._broadcast_text("state", f'{{"type":"state","published_at":{published:.6f},'.encode() + body[1:])
        self._broadcast_alarms(result.alarm_events)
        self._broadcast({"type": "status", **self.status()})

    def _broadcast_alarms(self, events: list[AlarmEvent]) -> None:
        """Push alarm transitions, each with its alarm's list entry after the change and the list version."""
        if not events or not self._subscribers:
            return
        version, listed = self.alarm_list()
        entries = {a["key"]: a for a in listed}
        for event in events:
            self._broadcast({"type": "alarm", "event": event.to_dict(), "alarm": entries.get(event.key), "v": version})

    # -- subscribers -------------------------------------------------------------------------------------
    def subscribe(self) -> Outbox:
        """Return an outbox that receives every message from now on (call from the subscriber's event loop)."""
        queue = Outbox()
        with self._lock:
            self._subscribers.append(_Subscriber(asyncio.get_running_loop(), queue))
        log.info("event=subscriber_added subscribers=%d", len(self._subscribers))
        return queue

    def unsubscribe(self, queue: Outbox) -> None:
        """Stop sending to a queue."""
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s.queue is not queue]

    @property
    def subscriber_count(self) -> int:
        """How many WebSocket clients listen."""
        return len(self._subscribers)

    def _broadcast(self, message: dict[str, Any]) -> None:
        self._broadcast_text(message["type"], json.dumps(message, separators=(",", ":"), allow_nan=False).encode())

    def _broadcast_text(self, kind: str, payload: bytes) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        if not subscribers:
            return
        text = payload.decode()
        for sub in subscribers:
            if sub.loop.is_closed():
                self.unsubscribe(sub.queue)
                continue
            sub.loop.call_soon_threadsafe(sub.queue.offer, kind, text)

    # -- views -------------------------------------------------------------------------------------------
    def grid_view(self) -> dict[str, Any]:
        """The grid for drawing: nodes with coordinates, branches and switches (see the API contract)."""
        view = dict(self._grid_view)
        grid = self.cycle.grid if self.cycle is not None else self.grid
        view["switches"] = [
            {**s, "closed": bool(c)} for s, c in zip(view["switches"], grid.switches["closed"].tolist(), strict=True)
        ]
        return view

    def _build_grid_view(self, grid: Grid, pred_node: npt.NDArray[np.int64]) -> dict[str, Any]:
        node = grid.component("node")
        xy = np.asarray(grid.node_xy, dtype=float)
        geographic = bool(xy.shape == (node.size, 2) and node.size and np.isfinite(xy).all())
        if not geographic:
            xy = schematic_layout(grid, pred_node)
        names = grid.names_of("node")
        feeders = self._feeder_of_node
        nodes = [
            {
                "id": int(i),
                "name": str(nm),
                "x": float(x),
                "y": float(y),
                "u_rated_kv": float(u) / 1e3,
                "feeder": int(f),
            }
            for i, nm, x, y, u, f in zip(
                node["id"].tolist(),
                names,
                xy[:, 0].tolist(),
                xy[:, 1].tolist(),
                node["u_rated"].tolist(),
                feeders.tolist(),
                strict=True,
            )
        ]
        branches: list[dict[str, Any]] = []
        for component, array in grid.iter_branches():
            kinds = grid.column(component, "kind", component)
            for i, nm, k, a, b in zip(
                array["id"].tolist(),
                grid.names_of(component),
                kinds,
                array["from_node"].tolist(),
                array["to_node"].tolist(),
                strict=True,
            ):
                branches.append(
                    {"id": int(i), "name": str(nm), "kind": str(k or component), "from_node": a, "to_node": b}
                )
        switches = [
            {"id": int(i), "name": str(nm), "node": int(n), "element": int(e)}
            for i, nm, n, e in zip(
                grid.switches["id"].tolist(),
                grid.switch_names,
                grid.switches["node"].tolist(),
                grid.switches["element"].tolist(),
                strict=True,
            )
        ]
        return {"name": grid.name, "geographic": geographic, "nodes": nodes, "branches": branches, "switches": switches}

    @staticmethod
    def _build_element_index(grid: Grid) -> dict[int, tuple[str, int]]:
        index: dict[int, tuple[str, int]] = {}
        for component, array in list(grid.input.items()) + list(grid.sensors.items()):
            for row, i in enumerate(array["id"].tolist()):
                index[int(i)] = (component, row)
        for row, i in enumerate(grid.switches["id"].tolist()):
            index[int(i)] = ("switch", row)
        return index

    def element(self, element_id: int) -> dict[str, Any]:
        """Return one element: component, name, kind, its fields and the points measuring it."""
        hit = self._element_index.get(int(element_id))
        if hit is None:
            raise NotFoundError(f"{self.grid.name}: no element with id {element_id}")
        component, row = hit
        grid = self.cycle.grid if self.cycle is not None else self.grid
        if component == "switch":
            array = grid.switches
            name = str(grid.switch_names[row])
            kind = str(grid.switch_kinds[row]) if grid.switch_kinds.size else "switch"
            extra: dict[str, Any] = {}
        else:
            array = grid.component(component)
            name = str(grid.names_of(component)[row])
            extra = {k: _finite(v[row]) for k, v in grid.extra.get(component, {}).items() if len(v) > row}
            kind = str(extra.get("kind") or component)
        fields = {f: _finite(array[f][row]) for f in array.dtype.names or ()}
        for k, v in extra.items():
            fields.setdefault(k, v if isinstance(v, str | int | float | bool | type(None)) else str(v))
        wanted = {name}
        if component in BRANCH_COMPONENTS:
            wanted.add(f"{component}:{name}")
        points = sorted(p for p, (el, _q) in self.points.items() if el in wanted)
        if component not in SENSOR_COMPONENTS:
            for sensor in SENSOR_COMPONENTS:
                placed = grid.sensors.get(sensor)
                if placed is None or not placed.size:
                    continue
                own = np.flatnonzero(placed["measured_object"] == element_id)
                sensor_names = {str(grid.names_of(sensor)[i]) for i in own} if own.size else set()
                points += sorted(p for p, (el, _q) in self.points.items() if el in sensor_names)
        return {
            "id": int(element_id),
            "component": component,
            "name": name,
            "kind": kind,
            "fields": fields,
            "points": points,
            "point_info": {p: self._point_info(p) for p in points},
        }

    def _point_info(self, point: str) -> dict[str, str]:
        """A point's quantity and unit (from the point map when there is one), for labels and axes."""
        quantity = self.points[point][1]
        unit = self.monitor.point_map.point(point).unit if self.monitor is not None else None
        return {"quantity": quantity, "unit": QUANTITIES.get(quantity, "") if unit is None else unit}

    def state_json(self) -> tuple[bytes, str]:
        """The latest state as JSON bytes and its entity tag, serialised once per cycle for every reader."""
        with self._lock:
            if self._state_json is None:
                body = json.dumps(self.state(), separators=(",", ":"), allow_nan=False).encode()
                self._state_json = (body, f'"{self._version}"')
            return self._state_json

    def state(self) -> dict[str, Any]:
        """The latest estimated state (see the API contract); empty maps before the first cycle."""
        with self._lock:
            if self._state is not None:
                return self._state
            result = self.latest
            grid = self.cycle.grid if self.cycle is not None else self.grid
            switches = dict(
                zip(map(str, grid.switches["id"].tolist()), map(bool, grid.switches["closed"].tolist()), strict=True)
            )
            if result is None:
                return {
                    "time": None,
                    "observable": False,
                    "converged": False,
                    "cycle_ms": None,
                    "u_pu": {},
                    "energised": {},
                    "loading": {},
                    "switches": switches,
                }
            est = result.estimation
            ids = [str(i) for i in grid.component("node")["id"].tolist()]
            u_pu: dict[str, float | None] = {}
            loading: dict[str, float | None] = {}
            if est.converged and "node" in est.output:
                u = np.round(est.output["node"]["u_pu"], _U_DECIMALS)
                u_pu = dict(zip(ids, map(_finite, u.tolist()), strict=True))
                for component in BRANCH_COMPONENTS:
                    out = est.output.get(component)
                    if out is not None and out.size and "loading" in (out.dtype.names or ()):
                        rounded = np.round(out["loading"], _LOADING_DECIMALS).tolist()
                        loading.update(zip(map(str, out["id"].tolist()), map(_finite, rounded), strict=True))
            self._state = {
                "time": result.time.isoformat(),
                "observable": bool(result.observable),
                "converged": bool(est.converged),
                "cycle_ms": round(result.timings_ms.get("cycle", 0.0), 3),
                "u_pu": u_pu,
                "energised": dict(zip(ids, map(bool, result.energised.tolist()), strict=True)),
                "loading": loading,
                "switches": switches,
            }
            return self._state

    def _latest_readings(self) -> Mapping[str, Reading]:
        return self.monitor.latest if self.monitor is not None else self._readings

    def status(self) -> dict[str, Any]:
        """Cycle time, observability, telemetry health, alarm counts and the clocks."""
        result = self.latest
        readings = self._latest_readings()
        good = sum(1 for r in list(readings.values()) if r.quality == 0)
        now, simulator = self.clock(), self.simulator
        # one time base for every screen: the simulated time of this instant, and the anchors that map any other
        simulated = None if simulator is None else simulator.simulated_time_at(now) or simulator.simulated_clock()
        return {
            "time": now.isoformat(),
            "simulated_time": simulated.isoformat() if simulated is not None else None,
            "time_base": None
            if simulator is None
            else {"speed": simulator.speed, "paused": simulator.paused, "anchors": simulator.time_base.to_dict()},
            "cycle_ms": round(result.timings_ms.get("cycle", 0.0), 3) if result is not None else None,
            "observable": bool(result.observable) if result is not None else False,
            "telemetry": {"points": len(self.points), "good": good, "bad": len(readings) - good},
            "alarms": self.alarm_counts(),
        }

    def alarm_counts(self) -> dict[str, int]:
        """The alarm counts (standing, unacknowledged, shelved, out of service, suppressed): one definition."""
        with self._lock:
            return count_alarms(self.monitors).to_dict()

    def alarms(self) -> list[dict[str, Any]]:
        """The alarm list: standing, shelved, out-of-service and suppressed alarms, most urgent first."""
        return self.alarm_list()[1]

    def alarm_list(self) -> tuple[int, list[dict[str, Any]]]:
        """The alarm list with its version (it grows with every change of any alarm)."""
        with self._lock:
            version = self._alarm_version
            cached = self._alarms
            if cached is not None:
                return version, cached
            listed = [(monitor, monitor.listed()) for monitor in self.monitors]
        out: list[dict[str, Any]] = []
        for monitor, alarms in listed:
            for a in alarms:
                out.append(
                    {
                        "key": a.key,
                        "monitor": monitor.name,
                        "channel": a.channel,
                        "condition": a.condition,
                        "severity": a.severity,
                        "priority": a.priority.name.lower(),
                        "priority_rank": int(a.priority),
                        "value": _finite(a.value),
                        "group": a.group,
                        "since": a.since.isoformat(),
                        "acknowledged": a.acknowledged,
                        "state": a.state.value,
                        "chattering": a.chattering,
                        "cause": a.cause,
                        "shelved_until": _iso(a.shelved_until),
                        "shelved_at": _iso(a.shelved_at),
                        "shelved_by": a.shelved_by,
                        "shelve_reason": a.shelve_reason,
                        "out_of_service": a.out_of_service,
                        "out_of_service_since": _iso(a.out_of_service_since),
                        "out_of_service_by": a.out_of_service_by,
                        "out_of_service_reason": a.out_of_service_reason,
                        "suppressed": a.suppressed,
                        "suppressed_reason": a.suppressed_reason,
                    }
                )
        out.sort(key=lambda a: (a["priority_rank"], a["since"], a["key"]))
        with self._lock:
            if version == self._alarm_version:  # nothing changed the alarms meanwhile
                self._alarms = out
        return version, out

    def select_alarms(
        self,
        *,
        priorities: Collection[str] = (),
        areas: Collection[str] = (),
        states: Collection[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """The alarm list filtered by priority, area (group), state and time raised (``start <= since < end``)."""
        _check_choices("priority", priorities, PRIORITIES)
        _check_choices("state", states, [s.value for s in AlarmState if s is not AlarmState.NORMAL])
        version, listed = self.alarm_list()
        out = []
        for a in listed:
            if priorities and a["priority"] not in priorities:
                continue
            if areas and a["group"] not in areas:
                continue
            if states and a["state"] not in states:
                continue
            since = datetime.fromisoformat(a["since"])
            if (start is not None and since < start) or (end is not None and since >= end):
                continue
            out.append(a)
        return version, out

    def _alarms_changed(self) -> None:
        with self._lock:
            self._alarms = None
            self._alarm_version += 1

    # -- operator actions --------------------------------------------------------------------------------
    def acknowledge(self, key: str, *, actor: str, source_ip: str | None = None) -> AlarmEvent:
        """Acknowledge an alarm in the list; log it in the event log and the audit trail."""
        monitor, channel = self._monitor_and_channel(key)
        with self._lock:
            if not monitor.in_list(channel):
                raise ConflictError(f"alarm {key!r} is not in the alarm list")
            event = monitor.acknowledge(self.alarm_time(), channel, actor=actor)
        self._record([event], actor, source_ip, "alarm.acknowledge")
        return event

    def acknowledge_many(
        self, keys: list[str], *, actor: str, source_ip: str | None = None
    ) -> tuple[list[AlarmEvent], list[str]]:
        """Acknowledge the alarms ``keys`` (those the operator sees); return the events and the keys skipped.

        Every key must name an alarm (else nothing is acknowledged, 404); alarms that are not in
        the list or acknowledged already (by someone else meanwhile) are skipped, not refused.
        """
        if len(set(keys)) != len(keys):
            raise InputError("acknowledge: the same alarm is named twice")
        targets = [(key, *self._monitor_and_channel(key)) for key in keys]
        events: list[AlarmEvent] = []
        skipped: list[str] = []
        with self._lock:
            now = self.alarm_time()
            for key, monitor, channel in targets:
                if not monitor.needs_acknowledgement(channel):
                    skipped.append(key)
                    continue
                events.append(monitor.acknowledge(now, channel, actor=actor))
        for event in events:
            self._record([event], actor, source_ip, "alarm.acknowledge", broadcast=False)
        self._after_change(events)
        return events, skipped

    def shelve(
        self,
        key: str,
        *,
        until: datetime | None = None,
        duration_s: float | None = None,
        reason: str,
        actor: str,
        source_ip: str | None = None,
    ) -> AlarmEvent:
        """Shelve an alarm that is active or unacknowledged, until a time or for a duration, with a reason.

        The shelf lasts at most the cycle's ``shelve_max_s`` (8 h by default, 400 beyond); a normal
        or out-of-service alarm is not shelved (409).
        """
        monitor, channel = self._monitor_and_channel(key)
        text = check_text("reason", reason, max_len=MAX_REASON)
        if (until is None) == (duration_s is None):
            raise InputError("shelve: give either 'until' or 'duration_s'")
        if until is not None and until.tzinfo is None:
            raise InputError("shelve: 'until' needs a timezone (e.g. 2026-11-23T12:00:00Z)")
        with self._lock:
            now = self.alarm_time()
            end = until.astimezone(UTC) if until is not None else now + timedelta(seconds=float(duration_s or 0))
            event = self._guard(lambda: monitor.shelve(now, channel, until=end, reason=text, actor=actor))
        self._record([event], actor, source_ip, "alarm.shelve", reason=text, details={"until": end.isoformat()})
        return event

    def unshelve(
        self, key: str, *, actor: str, reason: str | None = None, source_ip: str | None = None
    ) -> list[AlarmEvent]:
        """Take an alarm off the shelf (409 when it is not shelved); it is announced again if still active."""
        monitor, channel = self._monitor_and_channel(key)
        text = check_text("reason", reason, max_len=MAX_REASON) if reason else None
        with self._lock:
            events = self._guard(lambda: monitor.unshelve(self.alarm_time(), channel, actor=actor, reason=text))
        self._record(events, actor, source_ip, "alarm.unshelve", reason=text)
        return events

    def remove_from_service(self, key: str, *, reason: str, actor: str, source_ip: str | None = None) -> AlarmEvent:
        """Take an alarm out of service for maintenance, with a reason (engineer role; 409 when it is already)."""
        monitor, channel = self._monitor_and_channel(key)
        text = check_text("reason", reason, max_len=MAX_REASON)
        with self._lock:
            event = self._guard(
                lambda: monitor.remove_from_service(self.alarm_time(), channel, reason=text, actor=actor)
            )
        self._record([event], actor, source_ip, "alarm.out_of_service", reason=text)
        return event

    def return_to_service(
        self, key: str, *, actor: str, reason: str | None = None, source_ip: str | None = None
    ) -> list[AlarmEvent]:
        """Return an alarm to service (409 when it is not out of service); announced again if active."""
        monitor, channel = self._monitor_and_channel(key)
        text = check_text("reason", reason, max_len=MAX_REASON) if reason else None
        with self._lock:
            events = self._guard(
                lambda: monitor.return_to_service(self.alarm_time(), channel, actor=actor, reason=text)
            )
        self._record(events, actor, source_ip, "alarm.return_to_service", reason=text)
        return events

    # -- designed suppression of areas (the hook a work permit uses) --------------------------------------
    def alarm_areas(self) -> list[dict[str, Any]]:
        """Every alarm area (group) with its designed suppression, if any."""
        cycle = self._require_cycle()
        with self._lock:
            areas, suppressed = cycle.areas(), cycle.suppressed_areas
        return [
            {"area": a, "suppressed": a in suppressed, **({} if a not in suppressed else suppressed[a].to_dict())}
            for a in areas
        ]

    def suppress_area(self, area: str, *, reason: str, actor: str, source_ip: str | None = None) -> dict[str, Any]:
        """Suppress by design every alarm of an area, with a reason (engineer role); return the suppression."""
        cycle = self._require_cycle()
        text = check_text("reason", reason, max_len=MAX_REASON)
        if area not in cycle.areas():
            raise NotFoundError(f"no alarm area {area!r} (GET /api/alarms/areas lists them)")
        with self._lock:
            now = self.alarm_time()
            events = self._guard(lambda: cycle.suppress_area(area, reason=text, actor=actor, time=now))
            suppression = cycle.suppressed_areas[area]
        self.alarm_store.save_area(suppression)
        self.historian.events.append(
            "alarm.area_suppressed", actor=actor, element=f"area:{area}", payload={"area": area, "reason": text}, ts=now
        )
        self.audit.append("alarm.suppress", actor=actor, element=f"area:{area}", source_ip=source_ip, reason=text)
        log_alarm_events(self.historian.events, events)
        self._after_change(events)
        return suppression.to_dict()

    def release_area(self, area: str, *, actor: str, source_ip: str | None = None) -> list[AlarmEvent]:
        """Lift an area's designed suppression (engineer role; 409 when it is not suppressed)."""
        cycle = self._require_cycle()
        if area not in cycle.areas():
            raise NotFoundError(f"no alarm area {area!r} (GET /api/alarms/areas lists them)")
        with self._lock:
            now = self.alarm_time()
            events = self._guard(lambda: cycle.release_area(area, time=now))
        self.alarm_store.delete_area(area)
        self.historian.events.append(
            "alarm.area_released", actor=actor, element=f"area:{area}", payload={"area": area}, ts=now
        )
        self.audit.append("alarm.release", actor=actor, element=f"area:{area}", source_ip=source_ip)
        log_alarm_events(self.historian.events, events)
        self._after_change(events)
        return events

    @staticmethod
    def _guard(action: Callable[[], _T]) -> _T:
        """Run an alarm action; an action that does not fit the alarm's state is a conflict (409)."""
        try:
            return action()
        except AlarmStateError as exc:
            raise ConflictError(str(exc)) from None

    def _record(
        self,
        events: list[AlarmEvent],
        actor: str,
        source_ip: str | None,
        action: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        broadcast: bool = True,
    ) -> None:
        """Log a person's action: its events (a re-announcement it causes is the alarm system's), audit, save."""
        first, *rest = events
        self.historian.events.append(
            f"alarm.{first.transition.value}",
            actor=actor,
            element=first.key,
            payload=alarm_event_payload(first),
            ts=first.time,
        )
        log_alarm_events(self.historian.events, rest)
        self.audit.append(
            action, actor=actor, element=first.key, source_ip=source_ip, reason=reason, details=details or {}
        )
        if broadcast:
            self._after_change(events)

    def _after_change(self, events: list[AlarmEvent]) -> None:
        """Save the changed alarm state and push the transitions and the new counts to every screen."""
        self.alarm_store.persist(self.monitors, self._lock)
        self._alarms_changed()
        self._broadcast_alarms(events)
        self._broadcast({"type": "status", **self.status()})

    # -- alarm journal and performance ---------------------------------------------------------------------
    def _alarm_events(
        self, start: datetime, end: datetime, *, before: int | None = None, newest_first: bool = False
    ) -> list[tuple[int, datetime, str, str, str | None, dict[str, Any]]]:
        t = events_table
        query = sa.select(t).where(t.c.kind.like("alarm.%"), t.c.ts_us >= _to_us(start), t.c.ts_us < _to_us(end))
        if before is not None:
            query = query.where(t.c.seq < before)
        query = query.order_by(t.c.seq.desc() if newest_first else t.c.seq).limit(MAX_JOURNAL_SCAN)
        with self.historian.engine.connect() as conn:
            rows = conn.execute(query).all()
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return [
            (int(r.seq), epoch + timedelta(microseconds=int(r.ts_us)), r.actor, r.kind, r.element, dict(r.payload))
            for r in rows
        ]

    def alarm_journal(
        self,
        *,
        start: datetime,
        end: datetime,
        priorities: Collection[str] = (),
        areas: Collection[str] = (),
        transitions: Collection[str] = (),
        key: str | None = None,
        before: int | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """The alarm history from the event log, newest first: transitions and actions, filtered.

        ``before`` pages back (events with a smaller sequence number).
        """
        if end <= start:
            raise InputError(f"'to' ({end.isoformat()}) must be after 'from' ({start.isoformat()})")
        _check_choices("priority", priorities, PRIORITIES)
        _check_choices("transition", transitions, TRANSITIONS)
        out: list[dict[str, Any]] = []
        for seq, ts, actor, kind, element, payload in self._alarm_events(start, end, before=before, newest_first=True):
            transition = payload.get("transition") or kind.removeprefix("alarm.")
            if priorities and payload.get("priority") not in priorities:
                continue
            if areas and payload.get("group", payload.get("area")) not in areas:
                continue
            if transitions and transition not in transitions:
                continue
            if key is not None and element != key:
                continue
            out.append(
                {
                    "seq": seq,
                    "ts": ts.isoformat(),
                    "actor": actor,
                    "kind": kind,
                    "transition": transition,
                    "key": element,
                    "condition": payload.get("condition"),
                    "priority": payload.get("priority"),
                    "severity": payload.get("severity"),
                    "value": payload.get("value"),
                    "group": payload.get("group", payload.get("area")),
                    "cause": payload.get("cause"),
                    "reason": payload.get("reason"),
                    "shelved": bool(payload.get("shelved", False)),
                    "suppressed": bool(payload.get("suppressed", False)),
                    "out_of_service": bool(payload.get("out_of_service", False)),
                    "announced": alarm_performance.journal_entry(ts, payload).announced,
                }
            )
            if len(out) >= limit:
                break
        return out

    def alarm_summary(self, *, start: datetime, end: datetime, positions: int = 1) -> dict[str, Any]:
        """The ISA-18.2 performance figures of the window (see :mod:`opendso.operations.alarm_performance`)."""
        if end <= start:
            raise InputError(f"'to' ({end.isoformat()}) must be after 'from' ({start.isoformat()})")
        entries = [
            alarm_performance.journal_entry(ts, payload)
            for _seq, ts, _actor, _kind, _element, payload in self._alarm_events(start, end)
        ]
        with self._lock:
            standing = [a for m in self.monitors for a in m.active()]
            counts = count_alarms(self.monitors).to_dict()
        since = {a.key: a.since for a in standing if a.severity != 0}
        summary = alarm_performance.performance(
            entries, start=start, end=end, standing_since=since, positions=positions
        )
        summary["counts"] = counts
        return summary

    def add_shift_note(self, text: str, *, actor: str, source_ip: str | None = None) -> dict[str, Any]:
        """Append an operator note for the shift handover (an event of kind ``shift.note``); return it."""
        from opendso.service.text import check_text

        body = check_text("a shift note", text, max_len=10_000)
        event = self.historian.events.append(SHIFT_NOTE, actor=actor, payload={"text": body})
        self.audit.append(SHIFT_NOTE, actor=actor, element=f"event:{event.seq}", source_ip=source_ip)
        return _event_dict(event.seq, event.ts, event.actor, event.kind, event.element, event.payload)

    def shift_notes(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest shift notes, oldest first."""
        t = events_table
        query = sa.select(t).where(t.c.kind == SHIFT_NOTE).order_by(t.c.seq.desc()).limit(limit)
        with self.historian.engine.connect() as conn:
            rows = conn.execute(query).all()
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return [
            _event_dict(
                int(r.seq), epoch + timedelta(microseconds=int(r.ts_us)), r.actor, r.kind, r.element, dict(r.payload)
            )
            for r in reversed(rows)
        ]

    def events(self, after: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        """Events of the event log with ``seq > after``, in order."""
        return [
            _event_dict(e.seq, e.ts, e.actor, e.kind, e.element, e.payload)
            for e in self.historian.events.read(after + 1, limit=limit)
        ]

    def measurements(
        self, point: str, start: datetime, end: datetime, interval: timedelta | None = None
    ) -> list[dict[str, Any]]:
        """Measurements of a point (``[{ts, value, quality}]``) or, with ``interval``, aggregates."""
        if point not in self.historian.point_ids():
            raise NotFoundError(f"no measurement point named {point!r}")
        if end <= start:
            raise InputError(f"'to' ({end.isoformat()}) must be after 'from' ({start.isoformat()})")
        if interval is not None:
            frame = self.historian.aggregate(point, start, end, interval)
            return [
                {"ts": ts.isoformat(), "min": _finite(lo), "max": _finite(hi), "mean": _finite(mu), "count": int(c)}
                for ts, lo, hi, mu, c in zip(
                    frame["start"], frame["min"], frame["max"], frame["mean"], frame["count"], strict=True
                )
            ]
        frame = self.historian.read_range(point, start, end)
        return [
            {"ts": ts.isoformat(), "value": _finite(v), "quality": int(q)}
            for ts, v, q in zip(frame["ts"], frame["value"], frame["quality"], strict=True)
        ]


PRIORITIES = ("critical", "high", "medium", "low")
TRANSITIONS = tuple(
    sorted(
        {
            "raised",
            "escalated",
            "deescalated",
            "cleared",
            "acknowledged",
            "shelved",
            "unshelved",
            "chattering",
            "chattering_ended",
            "out_of_service",
            "returned_to_service",
            "suppressed",
            "unsuppressed",
            "area_suppressed",
            "area_released",
        }
    )
)
_T = TypeVar("_T")


def _check_choices(name: str, given: Collection[str], allowed: Collection[str]) -> None:
    bad = sorted(set(given) - set(allowed))
    if bad:
        raise InputError(f"unknown {name} {', '.join(map(repr, bad))}: choose from {', '.join(allowed)}")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _to_us(ts: datetime) -> int:
    return (ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _event_dict(
    seq: int, ts: datetime, actor: str, kind: str, element: str | None, payload: dict[str, Any]
) -> dict[str, Any]:
    return {"seq": seq, "ts": ts.isoformat(), "actor": actor, "kind": kind, "element": element, "payload": payload}


__all__ = ["ConflictError", "ControlRoom", "NotFoundError", "schematic_layout"]
