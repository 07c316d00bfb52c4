"""The scripted day of `opendso run`: its timetable, as data (light to import: ``--help`` shows it).

:func:`opendso.runtime.demo_scenario` turns :data:`DEMO_DAY` into the field simulator's scenario;
``opendso run --help`` and the README print it with :func:`describe_demo_day`, so the three never
disagree.
"""

from __future__ import annotations

import textwrap

__all__ = [
    "DEFAULT_SPEED",
    "DEMO_DAY",
    "DEMO_LOAD_RAMP_FACTOR",
    "DEMO_PV_PEAK_FACTOR",
    "DEMO_START_HOUR",
    "describe_demo_day",
]

#: Simulated seconds per real second of `opendso run`: a simulated day in 24 real minutes.
DEFAULT_SPEED = 60.0
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
#: table for :func:`opendso.runtime.demo_scenario`, ``opendso run --help`` and the README.
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
)


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
