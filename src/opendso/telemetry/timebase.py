"""The time base of a simulated clock: which simulated time each wall-clock instant had.

Everything OpenDSO stores carries the wall-clock time (UTC): measurements, alarms, events and the
audit trail need real time. In simulation the operator's world runs on the field simulator's clock
instead, which starts at a profile time, runs ``speed`` times real time, and is paused, sped up or
jumped forward by a trainer. :class:`TimeBase` records that clock as a list of
:class:`TimeAnchor` (wall, simulated, speed), one appended at every start, pause, resume, speed
change and jump. From an anchor's wall-clock instant until the next anchor, the simulated time is
``simulated + (wall_now - wall) * speed`` (speed 0 while paused), so any stored time since the start
maps to exactly one simulated time, and every screen shows the same clock (see ``static/js/time.js``,
which does the same mapping in the browser). The simulated clock never runs backwards.

Anchors come at human rate (trainer actions), so the list stays short; it is capped at
:data:`MAX_ANCHORS` all the same, dropping the oldest (their instants then map to nothing).
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opendso.errors import InputError

__all__ = ["MAX_ANCHORS", "MAX_SPEED", "TimeAnchor", "TimeBase", "check_speed"]

#: Fastest simulated clock: one simulated hour per real second (a day in 24 s). Faster, the
#: real-time cycle (every 2 s) would see whole hours pass between two estimates.
MAX_SPEED = 3600.0
#: Most anchors kept.
MAX_ANCHORS = 10_000


def check_speed(speed: float, *, where: str = "speed") -> float:
    """Return ``speed`` as a float; raise :class:`InputError` unless 0 < speed <= :data:`MAX_SPEED` and finite."""
    if isinstance(speed, bool) or not isinstance(speed, int | float):
        raise InputError(f"{where} must be a number, got {speed!r}")
    value = float(speed)
    if not math.isfinite(value) or not 0 < value <= MAX_SPEED:
        raise InputError(
            f"{where} must be a finite number > 0 and <= {MAX_SPEED:g} simulated seconds per real second, got {speed!r}"
        )
    return value


@dataclass(frozen=True)
class TimeAnchor:
    """From ``wall`` (UTC) on, the simulated clock reads ``simulated + (t - wall) * speed`` (0: paused)."""

    wall: datetime
    simulated: datetime
    speed: float

    def simulated_at(self, wall: datetime) -> datetime:
        """Return the simulated time at ``wall`` (at or after this anchor's wall-clock instant)."""
        return self.simulated + (wall - self.wall) * self.speed

    def to_dict(self) -> dict[str, Any]:
        """Return the anchor as JSON-ready data (ISO 8601 UTC times)."""
        return {"wall": self.wall.isoformat(), "simulated": self.simulated.isoformat(), "speed": self.speed}


class TimeBase:
    """The anchors of one simulated clock, oldest first (see the module docstring)."""

    def __init__(self) -> None:
        self._anchors: list[TimeAnchor] = []
        self._walls: list[datetime] = []
        # the clock's loop appends while the web service and the cycle read from other threads
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._anchors)

    @property
    def anchors(self) -> tuple[TimeAnchor, ...]:
        """Every anchor, oldest first."""
        with self._lock:
            return tuple(self._anchors)

    def add(self, wall: datetime, simulated: datetime, speed: float) -> TimeAnchor:
        """Append an anchor and return it; neither clock moves backwards (each is held at the last anchor's)."""
        if wall.tzinfo is None or simulated.tzinfo is None:
            raise ValueError("time base anchors need timezone-aware times")
        if not math.isfinite(speed) or speed < 0:
            raise ValueError(f"a time base speed is finite and >= 0, got {speed!r}")
        with self._lock:
            if self._anchors:
                last = self._anchors[-1]
                # a wall clock stepped back (NTP) must not reorder the anchors
                wall = max(wall, last.wall)
                # a clock that ran a little ahead of the twin between publishes is held, not moved back
                simulated = max(simulated, last.simulated_at(wall))
            anchor = TimeAnchor(wall, simulated, float(speed))
            self._anchors.append(anchor)
            self._walls.append(wall)
            if len(self._anchors) > MAX_ANCHORS:
                del self._anchors[0], self._walls[0]
        return anchor

    def simulated_at(self, wall: datetime) -> datetime | None:
        """Return the simulated time at a wall-clock instant; None before the first anchor."""
        with self._lock:
            k = bisect.bisect_right(self._walls, wall) - 1
            anchor = self._anchors[k] if k >= 0 else None
        return None if anchor is None else anchor.simulated_at(wall)

    def wall_at(self, simulated: datetime) -> datetime | None:
        """Return the first wall-clock instant whose simulated time is at or after ``simulated`` (None: not yet)."""
        anchors = self.anchors
        for k, anchor in enumerate(anchors):
            if simulated <= anchor.simulated:
                return anchor.wall
            following = anchors[k + 1] if k + 1 < len(anchors) else None
            if anchor.speed > 0:
                candidate = anchor.wall + (simulated - anchor.simulated) / anchor.speed
                if following is None or candidate <= following.wall:
                    return candidate
        return None

    def to_dict(self) -> list[dict[str, Any]]:
        """Return the anchors as JSON-ready data."""
        return [a.to_dict() for a in self.anchors]
