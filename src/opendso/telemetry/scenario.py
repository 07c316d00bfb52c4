"""Scripted events for the field simulator: what happens to the twin, and when.

A scenario is a list of :class:`ScenarioEvent` at simulated times (seconds after the start of
the simulation), in Python or as TOML::

    name = "morning storm"

    [[events]]
    at = "00:30"                        # HH:MM[:SS] after the start, or a number of seconds
    kind = "breaker_trip"
    switch = "MV3.101 BS-Feeder1_line CB"
    fault = "MV3.101 Bus 12"            # optional: fault location (a node) -> fault-passage indicators
    permanent = true                    # optional: the fault stays until fault_clear (default: transient)

    [[events]]
    at = 3600
    kind = "comms_loss"
    source = "field"                    # a point-map source ... or points = ["a/u", "b/p"]
    duration_s = 600                    # optional: communication returns after this long

Event kinds (:data:`EVENT_KINDS`) and their fields:

==================  =====================================================================
kind                fields
==================  =====================================================================
``breaker_trip``    ``switch`` (opens); ``fault`` (optional node): fault-passage
                    indicators pick up on the switches and branch sensors between the
                    source and the fault on the faulted feeder; ``permanent`` (optional
                    boolean, default false): a transient fault is gone when the breaker
                    closes again; a permanent one stays until ``fault_clear``, and any
                    close that energises its node trips the nearest breaker upstream of
                    it again (closing onto a fault), indicators picking up anew
``switch_close``    ``switch`` (closes; also resets the indicators of a transient fault it
                    cleared)
``fault_clear``     (none): the fault is repaired, the indicators reset
``der_trip``        ``generator`` (status 0)
``der_restore``     ``generator`` (status 1 again)
``load_scale``      ``factor`` >= 0 on every load's p and q (1 = the profile)
``pv_scale``        ``factor`` >= 0 on every solar generator's p (see the simulator)
``comms_loss``      ``source`` or ``points``/``element``; optional ``duration_s``
``comms_restore``   ``source`` or ``points``/``element``
``freeze``          ``points``/``element`` (the value stops changing); optional ``duration_s``
``noisy``           ``points``/``element``; ``factor`` (default 10) on the noise; optional
                    ``duration_s``
==================  =====================================================================

``element`` names a sensor (or switch, or any element the point map refers to) and stands
for all of its points. Events must come in time order (equal times are allowed and applied
in file order). :func:`validate_scenario` checks every name against a grid and a point map;
every problem is reported in one :class:`ScenarioError` (an :class:`~opendso.errors.InputError`)
naming the event (number and kind) and the field.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opendso.errors import ScenarioError

if TYPE_CHECKING:
    from opendso.grid.model import Grid
    from opendso.telemetry.points import PointMap

__all__ = [
    "EVENT_KINDS",
    "Scenario",
    "ScenarioError",
    "ScenarioEvent",
    "ScenarioFinding",
    "describe_event",
    "event_points",
    "parse_scenario",
    "read_scenario",
    "scenario_of",
    "validate_scenario",
]

#: Every event kind, with the fields it requires and the fields it accepts besides ``at`` and ``kind``.
EVENT_KINDS: Mapping[str, tuple[frozenset[str], frozenset[str]]] = {
    "breaker_trip": (frozenset({"switch"}), frozenset({"switch", "fault", "permanent"})),
    "switch_close": (frozenset({"switch"}), frozenset({"switch"})),
    "fault_clear": (frozenset(), frozenset()),
    "der_trip": (frozenset({"generator"}), frozenset({"generator"})),
    "der_restore": (frozenset({"generator"}), frozenset({"generator"})),
    "load_scale": (frozenset({"factor"}), frozenset({"factor"})),
    "pv_scale": (frozenset({"factor"}), frozenset({"factor"})),
    "comms_loss": (frozenset(), frozenset({"source", "points", "element", "duration_s"})),
    "comms_restore": (frozenset(), frozenset({"source", "points", "element"})),
    "freeze": (frozenset(), frozenset({"points", "element", "duration_s"})),
    "noisy": (frozenset(), frozenset({"points", "element", "factor", "duration_s"})),
}

#: Kinds that act on points (given by ``points`` and/or ``element``, or a ``source`` for comms).
_POINT_KINDS = frozenset({"comms_loss", "comms_restore", "freeze", "noisy"})
_FIELDS = frozenset(
    {"at", "kind", "switch", "fault", "permanent", "generator", "factor", "source", "points", "element", "duration_s"}
)
_CLOCK = re.compile(r"^(\d+):([0-5]\d)(?::([0-5]\d(?:\.\d+)?))?$")


@dataclass(frozen=True)
class ScenarioEvent:
    """One scripted event at ``at_s`` simulated seconds after the start (see the module docstring)."""

    at_s: float
    kind: str
    switch: str | None = None
    fault: str | None = None
    permanent: bool = False
    generator: str | None = None
    factor: float | None = None
    source: str | None = None
    points: tuple[str, ...] = ()
    element: str | None = None
    duration_s: float | None = None


@dataclass(frozen=True)
class Scenario:
    """A named, time-ordered list of events."""

    events: tuple[ScenarioEvent, ...] = ()
    name: str = "scenario"
    file: str = "<scenario>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "events", tuple(self.events))


@dataclass(frozen=True)
class ScenarioFinding:
    """One problem in a scenario: which event (1-based number and kind), which field, what."""

    file: str
    event: int | None
    kind: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.event is not None:
            where += f", event #{self.event}" + (f" ({self.kind})" if self.kind else "")
        if self.field is not None:
            where += f", field {self.field}"
        return f"{where}: {self.message}"


@dataclass
class _Findings:
    file: str
    items: list[ScenarioFinding] = field(default_factory=list)

    def add(self, index: int | None, kind: str | None, fld: str | None, message: str) -> None:
        self.items.append(ScenarioFinding(self.file, None if index is None else index + 1, kind, fld, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise ScenarioError(self.file, self.items)


# -- reading ----------------------------------------------------------------------------------
def read_scenario(path: str | Path) -> Scenario:
    """Return the scenario in a TOML file; raise :class:`ScenarioError` listing every problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(str(path), [ScenarioFinding(str(path), None, None, None, f"cannot read: {exc}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(
            str(path), [ScenarioFinding(str(path), None, None, None, f"not valid TOML: {exc}")]
        ) from exc
    return parse_scenario(data, file=str(path))


def parse_scenario(data: Mapping[str, Any], *, file: str = "<scenario>") -> Scenario:
    """Return the scenario of already parsed TOML data (shape and types only; see :func:`validate_scenario`)."""
    found = _Findings(file)
    for key in data:
        if key not in ("name", "events"):
            found.add(None, None, key, "unknown top-level key")
    name = data.get("name", "scenario")
    if not isinstance(name, str):
        found.add(None, None, "name", f"must be a string, got {name!r}")
        name = "scenario"
    raw_events = data.get("events", [])
    if not isinstance(raw_events, list):
        found.add(None, None, "events", "must be an array of tables ([[events]])")
        raw_events = []
    indexed: list[tuple[int, ScenarioEvent]] = []
    for index, raw in enumerate(raw_events):
        if not isinstance(raw, dict):
            found.add(index, None, None, "must be a table")
            continue
        event = _parse_event(index, raw, found)
        if event is not None:
            indexed.append((index, event))
    _check_shape(indexed, found)
    found.raise_if_any()
    return Scenario(tuple(e for _, e in indexed), name=name, file=file)


def _parse_event(index: int, raw: Mapping[str, Any], found: _Findings) -> ScenarioEvent | None:
    before = len(found.items)
    kind = raw.get("kind")
    label = kind if isinstance(kind, str) else None
    for key in raw:
        if key not in _FIELDS:
            found.add(index, label, key, "unknown field")
    at = _seconds(raw.get("at"))
    if "at" not in raw:
        found.add(index, label, "at", "missing")
    elif at is None:
        found.add(index, label, "at", f"must be seconds >= 0 or 'HH:MM[:SS]', got {raw['at']!r}")
    values: dict[str, Any] = {}
    for key in ("switch", "fault", "generator", "source", "element"):
        if key in raw:
            if isinstance(raw[key], str) and raw[key]:
                values[key] = raw[key]
            else:
                found.add(index, label, key, f"must be a non-empty string, got {raw[key]!r}")
    if "permanent" in raw:
        if isinstance(raw["permanent"], bool):
            values["permanent"] = raw["permanent"]
        else:
            found.add(index, label, "permanent", f"must be true or false, got {raw['permanent']!r}")
    for key in ("factor", "duration_s"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                found.add(index, label, key, f"must be a finite number, got {value!r}")
            else:
                values[key] = float(value)
    if "points" in raw:
        pts = raw["points"]
        if isinstance(pts, list) and pts and all(isinstance(p, str) and p for p in pts):
            values["points"] = tuple(pts)
        else:
            found.add(index, label, "points", f"must be a non-empty list of point names, got {pts!r}")
    if not isinstance(kind, str):
        found.add(index, None, "kind", "missing" if kind is None else f"must be a string, got {kind!r}")
    if len(found.items) > before or not isinstance(kind, str) or at is None:
        return None
    return ScenarioEvent(at_s=at, kind=kind, **values)


def _seconds(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw) if math.isfinite(raw) and raw >= 0 else None
    if isinstance(raw, str):
        match = _CLOCK.match(raw.strip())
        if match:
            return int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3] or 0)
    return None


#: Field name -> whether an event gives that field.
_PRESENT: Mapping[str, Callable[[ScenarioEvent], bool]] = {
    "switch": lambda e: e.switch is not None,
    "fault": lambda e: e.fault is not None,
    "permanent": lambda e: e.permanent,
    "generator": lambda e: e.generator is not None,
    "factor": lambda e: e.factor is not None,
    "source": lambda e: e.source is not None,
    "points": lambda e: bool(e.points),
    "element": lambda e: e.element is not None,
    "duration_s": lambda e: e.duration_s is not None,
}


def _check_shape(indexed: Iterable[tuple[int, ScenarioEvent]], found: _Findings) -> None:
    """Kinds, required and allowed fields, value ranges and time order (no grid needed)."""
    previous: tuple[int, float] | None = None
    for index, event in indexed:
        kind = event.kind
        if not math.isfinite(event.at_s) or event.at_s < 0:
            found.add(index, kind, "at", f"must be >= 0 seconds after the start, got {event.at_s!r}")
        elif previous is not None and event.at_s < previous[1]:
            found.add(
                index,
                kind,
                "at",
                f"time {event.at_s:g} s goes back before event #{previous[0] + 1} at {previous[1]:g} s "
                "(events must be in time order)",
            )
        else:
            previous = (index, event.at_s)
        spec = EVENT_KINDS.get(kind)
        if spec is None:
            found.add(index, None, "kind", f"unknown event kind {kind!r} (one of {', '.join(EVENT_KINDS)})")
            continue
        required, allowed = spec
        present = {name for name, test in _PRESENT.items() if test(event)}
        for name in sorted(required - present):
            found.add(index, kind, name, "missing")
        for name in sorted(present - allowed):
            found.add(index, kind, name, f"not a field of {kind}")
        if kind in _POINT_KINDS and not present & {"source", "points", "element"}:
            found.add(
                index, kind, "points", "missing: give points, element" + (" or source" if "source" in allowed else "")
            )
        if event.factor is not None and event.factor < 0:
            found.add(index, kind, "factor", f"must be >= 0, got {event.factor:g}")
        if event.duration_s is not None and event.duration_s <= 0:
            found.add(index, kind, "duration_s", f"must be > 0, got {event.duration_s:g}")


# -- against a grid and a point map -------------------------------------------------------------
def validate_scenario(scenario: Scenario, grid: Grid, point_map: PointMap | None = None) -> None:
    """Raise :class:`ScenarioError` unless every event is well formed and names what exists.

    Switches are looked up in ``grid.switch_names``, generators in the ``sym_gen`` names, fault
    locations in the node names; sources, points and elements in ``point_map``.
    """
    found = _Findings(scenario.file)
    _check_shape(enumerate(scenario.events), found)
    switches = {str(n) for n in grid.switch_names}
    generators = {str(n) for n in grid.names_of("sym_gen")}
    nodes = {str(n) for n in grid.names_of("node")}
    sources: set[str] = set(point_map.sources) if point_map is not None else set()
    point_names: set[str] = {p.name for p in point_map.points} if point_map is not None else set()
    elements: set[str] = {p.element for p in point_map.points} if point_map is not None else set()
    for index, event in enumerate(scenario.events):
        kind = event.kind if event.kind in EVENT_KINDS else None
        if event.switch is not None and event.switch not in switches:
            found.add(index, kind, "switch", f"no switch {event.switch!r} in grid {grid.name}")
        if event.fault is not None and event.fault not in nodes:
            found.add(index, kind, "fault", f"no node {event.fault!r} in grid {grid.name}")
        if event.generator is not None and event.generator not in generators:
            found.add(index, kind, "generator", f"no generator (sym_gen) {event.generator!r} in grid {grid.name}")
        if event.source is not None and event.source not in sources:
            found.add(index, kind, "source", f"no source {event.source!r} in the point map")
        for name in event.points:
            if name not in point_names:
                found.add(index, kind, "points", f"no point {name!r} in the point map")
        if event.element is not None and event.element not in elements:
            found.add(index, kind, "element", f"no point of element {event.element!r} in the point map")
    found.raise_if_any()


def event_points(event: ScenarioEvent, point_map: PointMap) -> tuple[str, ...]:
    """Return the names of the points an event acts on (its ``points``, ``element`` and ``source``)."""
    names: list[str] = list(event.points)
    if event.element is not None:
        names += [p.name for p in point_map.points if p.element == event.element]
    if event.source is not None:
        names += [p.name for p in point_map.points_of(event.source)]
    return tuple(dict.fromkeys(names))


def describe_event(event: ScenarioEvent, *, undo: bool = False) -> str:
    """Return one line saying what an event does, for a trainer's timetable and the event log.

    ``undo`` describes the end of an event with ``duration_s`` (communication returns, a freeze ends).
    """
    kind = event.kind
    if undo:
        return {
            "comms_loss": "communication returns",
            "freeze": "values move again",
            "noisy": "noise back to normal",
        }.get(kind, f"end of {kind}") + _target(event)
    text = {
        "breaker_trip": f"breaker {event.switch} trips" + (f" (fault at {event.fault})" if event.fault else ""),
        "switch_close": f"switch {event.switch} closes",
        "fault_clear": "the fault is repaired",
        "der_trip": f"generator {event.generator} trips",
        "der_restore": f"generator {event.generator} back in service",
        "load_scale": f"every load at {event.factor:g} times its profile" if event.factor is not None else "",
        "pv_scale": f"solar generation at {event.factor:g} times its profile" if event.factor is not None else "",
        "comms_loss": "communication lost",
        "comms_restore": "communication restored",
        "freeze": "values freeze",
        "noisy": f"noise times {event.factor if event.factor is not None else 10:g}",
    }.get(kind, kind)
    if kind in _POINT_KINDS:
        text += _target(event)
    if event.duration_s is not None:
        text += f" for {event.duration_s:g} s"
    return text


def _target(event: ScenarioEvent) -> str:
    names = [n for n in (event.source, event.element) if n] + list(event.points)
    return f": {', '.join(names)}" if names else ""


def scenario_of(events: Sequence[ScenarioEvent], *, name: str = "scenario") -> Scenario:
    """Return a scenario of events given in Python, checked for shape and time order."""
    scenario = Scenario(tuple(events), name=name)
    found = _Findings(scenario.file)
    _check_shape(enumerate(scenario.events), found)
    found.raise_if_any()
    return scenario
