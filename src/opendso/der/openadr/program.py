"""Demand-response events as immutable records, and the set-point requests an event interval asks for.

An event (:class:`DrEvent`) carries one signal (:class:`DrSignal`) over consecutive intervals
(:class:`DrInterval`: start, duration, value), is targeted at VENs (by enrolled name) and/or at
resources (DER registry asset ids), and names where it came from (``origin``: the operator,
active network management or a flexibility order: :class:`~opendso.operations.setpoints.model.SetpointSource`
``OPERATOR``, ``ANM`` or ``MARKET``).

The two signals follow the OpenADR 2.0b Profile Specification (B profile, EiEvent service,
``eiEventSignal``; the enumerations of ``oadr_20b.xsd``/``oadr_ei_20b.xsd``):

- ``level``: signal name ``SIMPLE``, signal type ``level``, payload 0 (normal), 1 (moderate),
  2 (high) or 3 (special) -- the four simple levels every 2.0b VEN must understand;
- ``price``: signal name ``ELECTRICITY_PRICE``, signal type ``price``, payload a price per kWh.

The intervals of one signal are consecutive (each starts where the previous ends), as the
profile's ``strm:intervals`` sequence lays them out from the event's ``dtstart``; times are
timezone-aware (the profile's ``dtstart`` is a UTC date-time).

Where a targeted asset also has an export-limit point, the program does not write the limit
itself: :func:`setpoint_requests` turns one interval into
:class:`~opendso.operations.setpoints.model.SetpointRequest` s of source ``DR`` for the set-point
arbiter, which merges them with every other source's (FLISR > ANM > operator > DR > market) and
checks them through its gate. A level maps to a share of the asset's export rating
(:class:`DrProgram.level_export_share`; level 0 asks for no limit: a release); a price signal asks
for no limit (the VEN answers a price on its own).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from opendso.der.model import check_id
from opendso.errors import InputError
from opendso.operations.setpoints.model import FlexibleDer, SetpointOutcome, SetpointRequest, SetpointSource
from opendso.text import check_text
from opendso.timeutil import require_aware

__all__ = [
    "EVENT_ORIGINS",
    "SIMPLE_LEVELS",
    "DrEvent",
    "DrInterval",
    "DrProgram",
    "DrSignal",
    "SetpointSink",
    "release_event",
    "setpoint_requests",
    "submit_interval",
]

#: The sources an event may come from (the request that made it).
EVENT_ORIGINS: frozenset[SetpointSource] = frozenset(
    {SetpointSource.OPERATOR, SetpointSource.ANM, SetpointSource.MARKET}
)
#: The levels of the OpenADR SIMPLE signal: normal, moderate, high, special.
SIMPLE_LEVELS: tuple[int, ...] = (0, 1, 2, 3)
#: The longest event accepted: a week (a demand-response event is hours, a price schedule a day or two).
_MAX_SPAN = timedelta(days=7)
_MAX_INTERVALS = 1000
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s]{1,200}$")


class DrSignal(StrEnum):
    """The event's signal: ``level`` (OpenADR SIMPLE, levels 0-3) or ``price`` (ELECTRICITY_PRICE)."""

    LEVEL = "level"
    PRICE = "price"

    @property
    def openadr_name(self) -> str:
        """The OpenADR ``signalName``."""
        return "SIMPLE" if self is DrSignal.LEVEL else "ELECTRICITY_PRICE"

    @property
    def openadr_type(self) -> str:
        """The OpenADR ``signalType``."""
        return "level" if self is DrSignal.LEVEL else "price"


@dataclass(frozen=True, slots=True)
class DrInterval:
    """One interval of an event's signal: a timezone-aware start, a duration and the signal's value."""

    start: datetime
    duration: timedelta
    value: float

    @property
    def end(self) -> datetime:
        """When the interval ends."""
        return self.start + self.duration

    def to_json(self) -> dict[str, Any]:
        """The interval as JSON."""
        return {"start": self.start.isoformat(), "duration_s": self.duration.total_seconds(), "value": self.value}


@dataclass(frozen=True, slots=True)
class DrEvent:
    """A demand-response event (see the module docstring); bad input raises :class:`InputError` naming it.

    ``vens``: the enrolled VEN names it goes to; ``resources``: the registry asset ids it targets
    (the VTN sends it to the VENs that control them, targeted at those resources). At least one
    of the two is given. ``origin``: the source of the request that made the event (operator,
    ANM or a flexibility order: ``market``).
    """

    id: str
    signal: DrSignal
    intervals: tuple[DrInterval, ...]
    origin: SetpointSource
    vens: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    reason: str = "demand response"
    market_context: str = "oadr://opendso/dr"

    def __post_init__(self) -> None:
        what = f"DR event {self.id!r}"
        check_id("DR event id", self.id)
        try:
            object.__setattr__(self, "signal", DrSignal(self.signal))
        except ValueError:
            raise InputError(f"{what}: signal {self.signal!r} is not one of level, price") from None
        try:
            origin = SetpointSource(self.origin)
        except ValueError:
            origin = None
        if origin not in EVENT_ORIGINS:
            known = ", ".join(sorted(s.value for s in EVENT_ORIGINS))
            raise InputError(f"{what}: origin {self.origin!r} is not one of {known}")
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "intervals", _checked_intervals(what, self.signal, self.intervals))
        vens = tuple(check_text(f"{what}: VEN name", v, max_len=200) for v in self.vens)
        resources = tuple(check_id(f"{what}: resource", r) for r in self.resources)
        if not vens and not resources:
            raise InputError(f"{what}: no target: name VENs or resources (registry asset ids)")
        for name, values in (("VEN", vens), ("resource", resources)):
            if len(set(values)) != len(values):
                raise InputError(f"{what}: a {name} is named twice")
        object.__setattr__(self, "vens", vens)
        object.__setattr__(self, "resources", resources)
        object.__setattr__(self, "reason", check_text(f"{what}: reason", self.reason, max_len=500))
        if not isinstance(self.market_context, str) or not _URI.match(self.market_context):
            raise InputError(f"{what}: market context {self.market_context!r} is not a URI")

    @property
    def start(self) -> datetime:
        """When the first interval starts."""
        return self.intervals[0].start

    @property
    def end(self) -> datetime:
        """When the last interval ends."""
        return self.intervals[-1].end

    def to_json(self) -> dict[str, Any]:
        """The event as JSON."""
        return {
            "id": self.id,
            "signal": self.signal.value,
            "intervals": [i.to_json() for i in self.intervals],
            "origin": self.origin.value,
            "vens": list(self.vens),
            "resources": list(self.resources),
            "reason": self.reason,
            "market_context": self.market_context,
        }


def _checked_intervals(what: str, signal: DrSignal, intervals: object) -> tuple[DrInterval, ...]:
    if not isinstance(intervals, Sequence) or isinstance(intervals, str):
        raise InputError(f"{what}: intervals must be a list of intervals, got {type(intervals).__name__}")
    if not intervals:
        raise InputError(f"{what}: no intervals: an event needs at least one (start, duration, value)")
    if len(intervals) > _MAX_INTERVALS:
        raise InputError(f"{what}: {len(intervals)} intervals, at most {_MAX_INTERVALS}")
    out: list[DrInterval] = []
    for k, iv in enumerate(intervals):
        where = f"{what}: interval {k}"
        if not isinstance(iv, DrInterval):
            raise InputError(f"{where}: not an interval ({type(iv).__name__})")
        if not isinstance(iv.start, datetime):
            raise InputError(f"{where}: start is not a time")
        start = require_aware(iv.start, f"{where} start")
        if not isinstance(iv.duration, timedelta) or iv.duration <= timedelta(0):
            raise InputError(f"{where}: duration must be a positive time span, got {iv.duration!r}")
        if iv.duration.microseconds or iv.duration.total_seconds() != int(iv.duration.total_seconds()):
            raise InputError(f"{where}: duration must be whole seconds (OpenADR durations), got {iv.duration}")
        value = iv.value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InputError(f"{where}: value {value!r} is not a finite number")
        if signal is DrSignal.LEVEL and value not in SIMPLE_LEVELS:
            raise InputError(f"{where}: level {value!r} is not one of the SIMPLE levels 0, 1, 2, 3")
        if out and start != out[-1].end:
            raise InputError(
                f"{where}: starts at {start.isoformat()}, not where interval {k - 1} ends "
                f"({out[-1].end.isoformat()}): intervals are consecutive"
            )
        out.append(DrInterval(start, iv.duration, float(value)))
    if out[-1].end - out[0].start > _MAX_SPAN:
        raise InputError(f"{what}: spans {out[-1].end - out[0].start}, more than {_MAX_SPAN}")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class DrProgram:
    """A demand-response program: its OpenADR market context and what each SIMPLE level asks of export.

    ``level_export_share``: per level, the export limit as a share of the asset's export rating
    (None: no limit). The default: normal no limit, moderate 50 %, high 25 %, special 0 %.
    """

    name: str = "opendso-dr"
    market_context: str = "oadr://opendso/dr"
    level_export_share: Mapping[int, float | None] = field(default_factory=lambda: {0: None, 1: 0.5, 2: 0.25, 3: 0.0})

    def __post_init__(self) -> None:
        check_text("DR program name", self.name, max_len=200)
        if set(self.level_export_share) != set(SIMPLE_LEVELS):
            raise InputError(f"DR program {self.name!r}: level_export_share must name exactly the levels 0-3")
        for level, share in self.level_export_share.items():
            if share is not None and not (isinstance(share, int | float) and 0.0 <= share <= 1.0):
                raise InputError(f"DR program {self.name!r}: level {level} share {share!r} is not in 0..1")


class SetpointSink(Protocol):
    """Where set-point requests go (:class:`~opendso.operations.setpoints.arbiter.SetpointArbiter` fits)."""

    async def submit(self, request: SetpointRequest) -> SetpointOutcome: ...

    async def release(self, source: SetpointSource, point: str, *, reason: str) -> SetpointOutcome: ...


def setpoint_requests(
    event: DrEvent,
    index: int,
    ders: Mapping[str, FlexibleDer],
    *,
    assets: Iterable[str] | None = None,
    program: DrProgram | None = None,
) -> list[SetpointRequest]:
    """The set-point requests (source ``DR``) interval ``index`` of ``event`` asks of the arbiter.

    ``ders``: asset id -> the asset's export-limit point (only assets that have one get a request);
    ``assets``: the assets the event reaches (default ``event.resources``; the VTN passes the
    assets of the targeted VENs for an event addressed to VENs). A level interval asks for
    ``share x rating`` (level 0: ``limit_w=None``, which the arbiter takes as a release); a
    price interval asks nothing. The reason names the event, the interval, the value and the
    origin; the actor is ``dr:<origin>``. A bad index raises :class:`InputError`.
    """
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(event.intervals):
        raise InputError(f"DR event {event.id!r}: interval {index!r} is not one of 0..{len(event.intervals) - 1}")
    if event.signal is not DrSignal.LEVEL:
        return []
    program = program or DrProgram()
    interval = event.intervals[index]
    level = int(interval.value)
    share = program.level_export_share[level]
    targets = event.resources if assets is None else tuple(assets)
    out: list[SetpointRequest] = []
    for asset_id in sorted(set(targets)):
        der = ders.get(asset_id)
        if der is None:
            continue
        limit = None if share is None else share * der.rating_w
        out.append(
            SetpointRequest(
                source=SetpointSource.DR,
                point=der.point,
                limit_w=limit,
                reason=(
                    f"DR event {event.id} interval {index} ({interval.start.isoformat()}) level {level} "
                    f"for {asset_id}, from {event.origin.value}: {event.reason}"
                ),
                actor=f"dr:{event.origin.value}",
            )
        )
    return out


async def submit_interval(sink: SetpointSink, requests: Sequence[SetpointRequest]) -> list[SetpointOutcome]:
    """Submit each request to the arbiter, in order; return the arbiter's outcomes."""
    return [await sink.submit(request) for request in requests]


async def release_event(
    sink: SetpointSink,
    event: DrEvent,
    ders: Mapping[str, FlexibleDer],
    *,
    assets: Iterable[str] | None = None,
    reason: str = "ended",
) -> list[SetpointOutcome]:
    """Withdraw the ``DR`` request of ``event`` on every export-limit point it reached (end or cancellation)."""
    targets = event.resources if assets is None else tuple(assets)
    points = sorted({ders[a].point for a in targets if a in ders})
    why = f"DR event {event.id} {reason}"
    return [await sink.release(SetpointSource.DR, point, reason=why) for point in points]
