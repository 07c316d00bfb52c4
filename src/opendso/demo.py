"""The scripted day of `opendso run`: its timetable as data, and the scenario, breaker and start it gives a grid.

:data:`DEMO_DAY` is the timetable; :func:`demo_scenario` turns it into the field simulator's
scenario on a grid (the breaker it trips is :func:`feeder_breaker`'s choice) and
:func:`demo_start_step` finds the morning it starts on. ``opendso run --help`` and the README print
it with :func:`describe_demo_day`, so the three never disagree. Light to import (``--help`` shows
the timetable): numpy, the grid's topology and the scenario are imported when a grid is given.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from opendso.settings import RunConfig

if TYPE_CHECKING:
    from opendso.grid import Grid
    from opendso.telemetry.scenario import Scenario

__all__ = [
    "DEFAULT_SPEED",
    "DEMO_DAY",
    "DEMO_LOAD_RAMP_FACTOR",
    "DEMO_PV_PEAK_FACTOR",
    "DEMO_START_HOUR",
    "demo_fault",
    "demo_scenario",
    "demo_start_step",
    "describe_demo_day",
    "feeder_breaker",
]

#: Simulated seconds per real second of `opendso run` unless configured (``OPENDSO_RUN_SPEED``, ``--speed``):
#: a simulated day in 24 real minutes. The default of :class:`opendso.settings.RunConfig`.
DEFAULT_SPEED: float = RunConfig.model_fields["speed"].default
#: The scripted day starts at this simulated hour (on 21 June of the profiles' year).
DEMO_START_HOUR = 5
#: Every load at the morning ramp, times its profile.
DEMO_LOAD_RAMP_FACTOR = 1.3
#: PV at the midday peak, times its profile. The demo grid's profiles of 21 June are overcast (PV
#: at 10-60 % of its yearly peak): six times them loaded no line above 81 % and raised no loading
#: alarm. Eleven times them is a clear-sky midday: the medium-voltage cable at the head of the
#: feeder with most PV (MV2.101 Line 1, measured at its substation) carries 108-112 % from 11:00
#: to 12:30, the first low-voltage cable of LV5.220 about 145 %, and voltages pass 1.10 p.u.
DEMO_PV_PEAK_FACTOR = 11.0
#: The scripted day of `opendso run` as (simulated hours after the start, what happens). One
#: table for :func:`demo_scenario`, ``opendso run --help`` and the README.
DEMO_DAY: tuple[tuple[float, str], ...] = (
    (1.0, f"morning load ramp: every load at {DEMO_LOAD_RAMP_FACTOR:g} times its profile"),
    (3.0, "loads back to their profiles"),
    (
        6.0,
        f"clear-sky PV peak (PV at {DEMO_PV_PEAK_FACTOR:g} times the day's overcast profile): a feeder "
        "cable above 100 % (loading alarm), voltages above 1.10 p.u. (voltage alarms)",
    ),
    (9.0, "PV back to its profile"),
    (10.0, "a feeder breaker trips (uncommanded switch change, loss of supply)"),
    (11.0, "the breaker recloses: supply restored"),
    (
        12.0,
        "a permanent cable fault on a medium-voltage feeder with ties: its breaker trips and the "
        "fault-passage indicators pick up; FLISR locates the faulted section and proposes isolating it "
        "and restoring the rest through a tie (an operator approves it on the FLISR page; "
        "OPENDSO_RUN_FLISR=automatic acts at once); an outage is recorded and restored in steps",
    ),
    (14.0, "the cable is repaired: the fault is cleared and the section can be switched back in"),
)


def feeder_breaker(grid: Grid, *, min_voltage_v: float = 1000.0) -> str | None:
    """Name of a closed medium-voltage switch whose opening de-energises part of exactly one feeder (None: none)."""
    import numpy as np

    from opendso.grid import analyse_topology

    topo = analyse_topology(grid)
    if not grid.switches.size:
        return None
    u_rated = grid.component("node")["u_rated"][grid.node_positions(grid.switches["node"])]
    for row in np.flatnonzero((grid.switches["closed"] == 1) & (u_rated >= min_voltage_v)):
        closed = grid.switches["closed"].copy()
        closed[row] = 0
        dead = ~analyse_topology(grid.with_switch_states(closed)).node_energised
        if dead.sum() > 3 and len(set(topo.node_feeder[dead].tolist())) == 1:
            return str(grid.switch_names[row])
    return None


def demo_start_step(grid: Grid, *, month: int = 6, day: int = 21, hour: int = DEMO_START_HOUR) -> int:
    """Profile step of a summer morning (the scripted day starts there); 0 when the grid has no profiles."""
    import numpy as np

    if grid.profiles is None:
        return 0
    times = grid.profiles.time.astype("datetime64[m]")
    target = np.datetime64(
        f"{int(times[0].astype('datetime64[Y]').astype(int)) + 1970}-{month:02d}-{day:02d}T{hour:02d}:00"
    )
    return int(np.clip(np.searchsorted(times, target), 0, grid.profiles.steps - 1))


def demo_scenario(grid: Grid) -> Scenario:
    """A scripted day from 05:00 (:data:`DEMO_DAY`): load ramp, a midday PV peak that overloads a line, a breaker
    trip and reclose (the trip only when the grid has a feeder breaker, :func:`feeder_breaker`)."""
    from opendso.telemetry.scenario import ScenarioEvent, scenario_of

    hour = 3600.0
    (ramp, _), (ramp_end, _), (peak, _), (peak_end, _), (trip, _), (reclose, _), (cable, _), (repair, _) = DEMO_DAY
    events = [
        ScenarioEvent(ramp * hour, "load_scale", factor=DEMO_LOAD_RAMP_FACTOR),
        ScenarioEvent(ramp_end * hour, "load_scale", factor=1.0),
        ScenarioEvent(peak * hour, "pv_scale", factor=DEMO_PV_PEAK_FACTOR),
        ScenarioEvent(peak_end * hour, "pv_scale", factor=1.0),
    ]
    breaker = feeder_breaker(grid)
    if breaker is not None:
        events += [
            ScenarioEvent(trip * hour, "breaker_trip", switch=breaker),
            ScenarioEvent(reclose * hour, "switch_close", switch=breaker),
        ]
    fault = demo_fault(grid)
    if fault is not None:
        fault_breaker, node = fault
        events += [
            ScenarioEvent(cable * hour, "breaker_trip", switch=fault_breaker, fault=node, permanent=True),
            ScenarioEvent(repair * hour, "fault_clear"),
        ]
    return scenario_of(events, name="demo day")


_FAULTS: dict[tuple[str, bytes], tuple[str, str] | None] = {}


def demo_fault(grid: Grid) -> tuple[str, str] | None:
    """(breaker, node) of the demo's cable fault: the first MV node whose fault FLISR restores through a tie.

    None when the grid has no such node (no ties, or no feeder breaker). The search plans FLISR
    for candidate nodes in grid order (a fraction of a second each) and is done once per grid and
    switch states.
    """
    import numpy as np

    from opendso.errors import InputError
    from opendso.operations.flisr import simulate_fault_and_plan

    key = (grid.name, grid.switches["closed"].tobytes())
    if key in _FAULTS:
        return _FAULTS[key]
    found: tuple[str, str] | None = None
    u_rated = grid.component("node")["u_rated"]
    names = grid.names_of("node")
    for row in np.flatnonzero((u_rated >= 1000.0) & (u_rated < 60_000.0))[1::2][:60]:
        try:
            plan = simulate_fault_and_plan(grid, str(names[row]))
        except InputError:
            continue
        ties = [s for s, a in plan.restore if a == "close" and s != plan.tripped]
        if ties and plan.customers_restored > 0:
            found = (plan.tripped, str(names[row]))
            break
    _FAULTS[key] = found
    return found


def describe_demo_day(speed: float = DEFAULT_SPEED) -> str:
    """The scripted day as a timetable: simulated time, real time after the start at ``speed``, what happens."""
    lines = [f"The scripted day (simulated clock from {DEMO_START_HOUR:02d}:00 on 21 June, real time at {speed:g}x):"]
    for hours, what in DEMO_DAY:
        at = DEMO_START_HOUR + hours
        head = f"  {int(at):02d}:{round(at % 1 * 60):02d}  after {_duration(hours * 3600.0 / speed):>7} real  "
        lines.append(textwrap.fill(what, width=100, initial_indent=head, subsequent_indent=" " * len(head)))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    """A real duration as people say it: 45 s, 6 min, 1 h 30 min."""
    minutes = round(seconds / 60)
    if seconds < 60 or (seconds < 300 and abs(seconds - 60 * minutes) >= 1):
        return f"{seconds:.0f} s"
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"
