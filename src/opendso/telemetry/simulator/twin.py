"""The field simulator's digital twin: a simulated clock, the grid's state, one power flow per change.

:class:`FieldSimulator` steps through the grid's SimBench profiles on a simulated clock that
runs ``speed`` times real time. Profile steps (quarter-hours) are *held*, not interpolated:
SimBench values are quarter-hour averages, holding them reproduces exactly the case a planner
or pandapower solves for that step, and it bounds the work to one power flow per simulated
step and per change (a command or an event), whatever the publish rate. Between power flows
every publish draws fresh measurement noise around the held values, as real transducers do.

The twin's state is what commands and events change: switch states, generator status and
set-points, load and PV factors, picked-up fault-passage indicators
(:mod:`~opendso.telemetry.simulator.indicators`). Each point's value is gathered from the power
flow by the plan made once at construction (:mod:`~opendso.telemetry.simulator.planning`).
Commands come back through the servers (:mod:`~opendso.telemetry.simulator.servers`) as
(point, value): a ``switch`` point opens (0) or closes (1) its switch, a ``p`` point naming a
generator sets its active power (NaN releases it to the profile), a ``p_limit`` point naming a
generator sets its export limit (the DER model of :mod:`~opendso.telemetry.simulator.der`:
output = min(available, limit), a watchdog and a fail-safe limit); anything else is refused
(:class:`~opendso.telemetry.simulator.errors.CommandError`). Scripted events
(:mod:`opendso.telemetry.scenario`) run at their simulated times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from opendso.calc import DEFAULT_ACCURACY, Accuracy, PowerFlowResult, run_power_flow
from opendso.errors import CommandError, CommandValueError, InputError, NotCommandableError
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology, path_from_source
from opendso.telemetry.base import utc_now
from opendso.telemetry.binding import PointBinding, Target, bind_points
from opendso.telemetry.points import Point, PointMap
from opendso.telemetry.quality import Quality
from opendso.telemetry.scenario import Scenario, ScenarioEvent, event_points, validate_scenario
from opendso.telemetry.simulator.der import DerControls, DerSettings, DerState
from opendso.telemetry.simulator.indicators import indicators_on_fault_path
from opendso.telemetry.simulator.planning import plan_points
from opendso.telemetry.simulator.servers import FieldServer, ServerFactory, default_server_factories
from opendso.telemetry.timebase import TimeBase, check_speed
from opendso.timeutil import from_epoch_us

__all__ = ["FieldSimulator", "SimulatorCounters"]

log = logging.getLogger(__name__)

_US_PER_S = 1_000_000


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


class FieldSimulator:
    """A digital twin of ``grid`` serving the points of ``point_map``; see the module docstring.

    ``speed``: simulated seconds per real second. ``start_step``: the profile step the
    simulation starts at. ``noise``: measurement noise in sigmas (0 or None: exact values).
    ``seed``: seeds the noise. ``scenario``: scripted events (validated against the grid and the
    point map here). ``servers``: the protocol servers to use; by default one per source, built
    by ``server_factories`` (merged over :func:`default_server_factories`) with
    ``server_options[source name]``; sources whose protocol has no factory are not served (a
    warning names them). ``publish_period_s``: real seconds between publishes in :meth:`run`.
    ``der``: the watchdog, fail-safe export limit and rating per generator name (others get
    ``der_default``; see :mod:`~opendso.telemetry.simulator.der`).

    :attr:`binding` holds the points bound to the grid (one
    :class:`~opendso.telemetry.binding.PointBinding`, made here); a point without a place in the
    grid is refused with one :class:`~opendso.telemetry.points.PointMapError` listing them all.
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
        der: Mapping[str, DerSettings] | None = None,
        der_default: DerSettings | None = None,
    ) -> None:
        speed = check_speed(speed, where="field simulator: speed")
        if not publish_period_s > 0:
            raise InputError(f"field simulator: publish_period_s must be > 0, got {publish_period_s!r}")
        # the one binding of the points to the grid: the simulator serves every point, so any
        # point without a place in the grid is refused here, all of them in one error
        binding = bind_points(grid, point_map)
        plan = plan_points(binding)
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
            times = profiles.time.astype("datetime64[s]").astype(np.int64)  # whole seconds since the epoch
            self.step_s = float(times[1] - times[0])
            self.start_time = from_epoch_us(int(times[start_step]) * _US_PER_S)
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
        self.der = DerControls(grid, der, der_default)
        self._available = np.zeros(gens.size)  # W per generator before its export limit (set by twin_grid)
        self._solar = _solar_generators(grid)
        self._load_factor = 1.0
        self._pv_factor = 1.0
        self._fpi_switch = np.zeros(self._closed.size, dtype=bool)
        self._fpi_sensor: set[int] = set()  # sensor ids whose indicator picked up
        self._fault_switch: int | None = None
        self._fault_node: str | None = None  # a permanent fault: stays until fault_clear

        # points: how each one is computed
        self.binding: PointBinding = binding
        self._index = binding.index
        self._plan = plan
        self._der_limit_points = binding.gather(Target.DER, quantities={"p_limit"})
        self._der_available_points = binding.gather(Target.DER, quantities={"p_available"})
        n = len(binding)
        self._exact = np.full(n, np.nan)
        self._sigma = np.zeros(n)
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
        if self.der.update(elapsed_s):
            self._dirty = True
            self._wake.set()

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
            self._available = gens["p_specified"].astype(float)
            gens["p_specified"] = self.der.apply(self._available)
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
            self._quality[:] = int(Quality.IV)
        else:
            self._quality[:] = 0
        values = self._plan.evaluate(
            twin,
            result if result.converged else None,
            self.accuracy,
            closed=self._closed,
            fpi_switches=self._fpi_switch,
            fpi_sensors=self._fpi_sensor,
        )
        self._exact, self._sigma = values.exact, values.sigma
        points, rows = self._der_limit_points
        self._exact[points] = self.der.in_force()[rows]
        points, rows = self._der_available_points
        self._exact[points] = self._available[rows]

    def values(self) -> dict[str, tuple[float, Quality]]:
        """Return what the field reports now for every point on the air: (value, quality), noise drawn.

        Frozen points repeat the value they had when frozen; lost points and points of offline
        sources are left out.
        """
        self._refresh()
        values = self._exact.copy()
        if self.noise:
            draw = self._rng.standard_normal(values.size)
            magnitude = self._plan.magnitude
            live = self._plan.noisy & np.isfinite(values) & ~(magnitude & (values == 0.0))
            values = np.where(live, values + self.noise * self._noise_factor * self._sigma * draw, values)
            values = np.where(magnitude & live, np.abs(values), values)
        for k, frozen in self._frozen.items():
            values[k] = frozen
        self._last_sent = values
        off = self._lost.union(*(self._source_points[s] for s in self._offline)) if self._offline else self._lost
        codes = self._quality.tolist()
        flags = {code: Quality(code) for code in set(codes)}  # one flag object per distinct code, not per point
        pairs = zip(values.tolist(), [flags[code] for code in codes], strict=True)
        if not off:
            return dict(zip(self.binding.names, pairs, strict=True))
        return {name: pair for name, pair in zip(self.binding.names, pairs, strict=True) if name not in off}

    def exact_values(self) -> dict[str, float]:
        """Return every point's value without noise, freezing or loss (the twin's truth)."""
        self._refresh()
        return dict(zip(self.binding.names, self._exact.tolist(), strict=True))

    # -- commands ----------------------------------------------------------------------------------
    def set_switch(self, name: str, closed: bool) -> None:
        """Open or close the twin's switch ``name``; the next power flow reflects it."""
        row = self._switch(name)
        if bool(self._closed[row]) != closed:
            self._closed[row] = 1 if closed else 0
            self._dirty = True
            if closed and self._fault_node is not None:
                self._close_onto_fault(row)
            elif closed and self._fault_switch == row:
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

    def set_export_limit(self, name: str, limit_w: float) -> None:
        """Write generator ``name``'s export limit (or its heartbeat) now, as a command would.

        Raises :class:`~opendso.errors.CommandValueError` for a limit outside 0..its rating.
        """
        self._generator(name)
        self._catch_up()
        self.der.write(name, limit_w, self._elapsed_s)
        self._dirty = True
        self._wake.set()
        log.info("event=sim_export_limit generator=%s limit_w=%g", name, limit_w)

    def der_state(self, name: str) -> DerState:
        """Generator ``name``'s export limit, watchdog and fail-safe state now."""
        self._generator(name)
        return self.der.state(name)

    def generator_power(self, name: str) -> tuple[float, float]:
        """Generator ``name``'s (available, output) active power in W now (output after its export limit, 0 off)."""
        self._refresh()
        row = self._generator(name)
        output = float(self.der.apply(self._available)[row]) if self._gen_on[row] else 0.0
        return float(self._available[row]), output

    def set_generator_status(self, name: str, on: bool) -> None:
        """Switch generator ``name`` on or off (a DER trip)."""
        self._gen_on[self._generator(name)] = 1 if on else 0
        self._dirty = True
        self._wake.set()

    def check_command(self, point: str, value: float) -> Point:
        """Return the point a command on ``point`` with ``value`` would act on; change nothing.

        Raise :class:`NotCommandableError` for an unknown point or one that takes no commands
        (only a switch's ``switch`` point and a generator's ``p`` and ``p_limit`` points do), and
        :class:`CommandValueError` for a value the point does not take (a switch: 0 open or 1
        close; a generator: a finite set-point in W, or NaN to release it to its profile; an
        export limit: finite, in 0..the generator's rating).
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
        elif p.quantity == "p_limit" and p.element in self._gen_row:
            try:
                self.der.check(p.element, value)
            except CommandValueError as exc:
                raise CommandValueError(f"command on {point!r}: {exc}") from None
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
        elif p.quantity == "p_limit":
            self.set_export_limit(p.element, value)
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
                self._fault_node = event.fault if event.permanent else None
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
        path = indicators_on_fault_path(self.twin_grid(), fault_node)
        if path is None:
            log.warning("event=sim_fault_not_energised node=%s", fault_node)
            return
        self._fpi_switch |= path.switches
        self._fpi_sensor.update(path.sensors)
        log.info(
            "event=sim_fault node=%s feeder=%d indicators=%d",
            fault_node,
            path.feeder,
            int(self._fpi_switch.sum()) + len(self._fpi_sensor),
        )
        self._dirty = True

    def _close_onto_fault(self, row: int) -> None:
        """A close that energises a permanent fault: the nearest breaker upstream of it trips again.

        The breaker is the last switch of kind CB on the path from the source to the fault node (the
        closed switch itself when none is): its protection sees the fault current and opens. The
        indicators on the new fault path pick up (they were reset by the operator, or still are).
        """
        assert self._fault_node is not None
        grid = self.twin_grid()
        node_row = int(np.flatnonzero(grid.names_of("node") == self._fault_node)[0])
        topology = analyse_topology(grid)
        if not topology.node_energised[node_row]:
            return
        path = path_from_source(topology, int(grid.component("node")["id"][node_row]))
        trip = row
        if path is not None and grid.switch_kinds.size == grid.switches.size:
            on_path = np.isin(grid.switches["element"], path.branches) & (grid.switches["closed"] == 1)
            breakers = np.flatnonzero(on_path & (grid.switch_kinds.astype(str) == "CB"))
            if breakers.size:
                order = {int(b): i for i, b in enumerate(path.branches.tolist())}
                trip = int(max(breakers, key=lambda b: order.get(int(grid.switches["element"][b]), -1)))
        self._pick_up_indicators(self._fault_node)
        self._fault_switch = trip
        self._closed[trip] = 0
        self._dirty = True
        names = self.grid.switch_names
        log.info("event=sim_close_onto_fault closed=%s tripped=%s node=%s", names[row], names[trip], self._fault_node)

    def _clear_fault(self) -> None:
        self._fpi_switch[:] = False
        self._fpi_sensor.clear()
        self._fault_switch = None
        self._fault_node = None
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
            len(self.binding),
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
