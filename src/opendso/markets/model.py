"""The records the flexibility desk trades in: congestion points, needs, offers and their options.

One sign convention everywhere in :mod:`opendso.markets`, UFTP's: power is the *consumption* at a
connection or congestion point, in W, positive when taking from the grid and negative when
feeding in. A flexibility option's ``power_w`` is the change of that consumption from the
party's baseline (its D-prognosis) per interval: ``-200_000`` in an interval means 200 kW less
consumption (or 200 kW more production) than planned.

Intervals are the imbalance settlement periods (ISPs) of ``ISP`` length (15 minutes, UFTP's
``PT15M``), given by their start times (timezone-aware, UTC). An interval index counts from the
start of the study or request, not from the start of the day (UFTP's ``Start`` numbers, which do,
are the protocol adapter's business).

A network constraint the DSO wants relieved is a :class:`FlexNeed`: one element (``line:NAME``,
``transformer:NAME`` or ``node:NAME``) in one interval, with the excess to remove in the element's
own unit (loading as a fraction of the rating, or p.u. voltage) and its direction. Each
congestion point's effect on it comes from a sensitivity (excess removed per W of consumption
change at the point); an offer whose effect has the wrong sign, or none, relieves nothing and is
never bought.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opendso.errors import InputError
from opendso.text import check_text

__all__ = [
    "ISP",
    "CongestionPoint",
    "FlexNeed",
    "FlexOffer",
    "FlexOption",
    "check_aware",
    "check_party_id",
]

#: The imbalance settlement period: every interval of the flexibility desk (UFTP ``ISP-Duration`` PT15M).
ISP = timedelta(minutes=15)

#: A party or congestion point id: UFTP uses domain names for parties and EAN / ``ea1.`` entity addresses for points.
_PARTY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")

#: The element kinds a need names.
ELEMENT_KINDS = ("line", "transformer", "node")


def check_party_id(what: str, value: object) -> str:
    """``value`` as a party or point id (letters, digits, ``_.:-``, 1-128), or :class:`InputError` naming ``what``."""
    if not isinstance(value, str) or not _PARTY_ID.match(value):
        raise InputError(f"{what}: {value!r} is not an id (letters, digits and _.:- only, at most 128)")
    return value


def check_aware(what: str, value: datetime) -> datetime:
    """``value`` in UTC, or :class:`InputError` naming ``what`` when it is not a timezone-aware datetime."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InputError(f"{what}: {value!r} must be a timezone-aware time")
    return value.astimezone(UTC)


def _finite(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{what}: {value!r} is not a finite number")
    return float(value)


@dataclass(frozen=True)
class CongestionPoint:
    """A congestion point: the connections (grid nodes) the DSO groups under one UFTP entity address.

    ``id`` is the entity address aggregators name in their offers (e.g. ``ea1.2026-11.opendso:cp-1``);
    ``nodes`` the grid nodes of its connections; ``feeder`` the feeder they are on, where known.
    """

    id: str
    name: str
    nodes: tuple[str, ...]
    feeder: str | None = None

    def __post_init__(self) -> None:
        check_party_id("congestion point id", self.id)
        object.__setattr__(self, "name", check_text("congestion point name", self.name, max_len=200))
        if not self.nodes:
            raise InputError(f"congestion point {self.id}: it has no connections (nodes)")
        if len(set(self.nodes)) != len(self.nodes):
            raise InputError(f"congestion point {self.id}: a node is listed twice")

    def to_json(self) -> dict[str, Any]:
        """The congestion point as JSON."""
        return {"id": self.id, "name": self.name, "nodes": list(self.nodes), "feeder": self.feeder}


@dataclass(frozen=True)
class FlexNeed:
    """One constraint in one interval that the DSO wants relieved.

    ``element``: ``line:NAME``, ``transformer:NAME`` or ``node:NAME``; ``interval``: index from the
    start of the study; ``time``: that interval's start; ``excess``: how far beyond its limit the
    element is expected to be (loading fraction of the rating, or p.u. voltage), > 0; ``probability``:
    the congestion forecast's probability of the violation (1.0 for a deterministic study).
    ``direction`` is ``"high"`` (loading or voltage above the limit) or ``"low"`` (voltage below).
    """

    element: str
    interval: int
    time: datetime
    excess: float
    probability: float = 1.0
    direction: str = "high"

    def __post_init__(self) -> None:
        kind, _, name = self.element.partition(":")
        if kind not in ELEMENT_KINDS or not name:
            raise InputError(f"flex need: element {self.element!r} is not line:NAME, transformer:NAME or node:NAME")
        if isinstance(self.interval, bool) or not isinstance(self.interval, int) or self.interval < 0:
            raise InputError(f"flex need {self.element}: interval must be an index >= 0, got {self.interval!r}")
        object.__setattr__(self, "time", check_aware(f"flex need {self.element} time", self.time))
        if not _finite(f"flex need {self.element} excess", self.excess) > 0:
            raise InputError(f"flex need {self.element}: excess must be > 0, got {self.excess!r}")
        p = _finite(f"flex need {self.element} probability", self.probability)
        if not 0.0 <= p <= 1.0:
            raise InputError(f"flex need {self.element}: probability must be 0..1, got {p}")
        if self.direction not in ("high", "low"):
            raise InputError(f"flex need {self.element}: direction must be 'high' or 'low', got {self.direction!r}")

    @property
    def kind(self) -> str:
        """``line``, ``transformer`` or ``node``."""
        return self.element.partition(":")[0]

    def to_json(self) -> dict[str, Any]:
        """The need as JSON."""
        return {
            "element": self.element,
            "interval": self.interval,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "excess": self.excess,
            "probability": self.probability,
            "direction": self.direction,
        }


@dataclass(frozen=True)
class FlexOption:
    """One option of an offer: a change of consumption per interval, bought whole at one price.

    ``power_w[k]`` is the change in interval ``first + k`` (UFTP sign: negative = less consumption
    or more production); ``price`` the price of the whole option (UFTP ``Price``, in the offer's
    currency), >= 0. UFTP gives one price per option, so an option is bought whole or not at all.
    """

    reference: str
    first: int
    power_w: tuple[float, ...]
    price: float

    def __post_init__(self) -> None:
        check_party_id("option reference", self.reference)
        if isinstance(self.first, bool) or not isinstance(self.first, int) or self.first < 0:
            raise InputError(f"option {self.reference}: first interval must be an index >= 0, got {self.first!r}")
        if not self.power_w:
            raise InputError(f"option {self.reference}: no intervals")
        object.__setattr__(self, "power_w", tuple(_finite(f"option {self.reference} power", p) for p in self.power_w))
        if _finite(f"option {self.reference} price", self.price) < 0:
            raise InputError(f"option {self.reference}: price must be >= 0, got {self.price!r}")

    @property
    def intervals(self) -> range:
        """The interval indices the option covers."""
        return range(self.first, self.first + len(self.power_w))

    def to_json(self) -> dict[str, Any]:
        """The option as JSON."""
        return {"reference": self.reference, "first": self.first, "power_w": list(self.power_w), "price": self.price}


@dataclass(frozen=True)
class FlexOffer:
    """An aggregator's offer at one congestion point: options of which at most one is bought."""

    id: str
    aggregator: str
    congestion_point: str
    options: tuple[FlexOption, ...]
    currency: str = "EUR"

    def __post_init__(self) -> None:
        check_party_id("offer id", self.id)
        check_party_id(f"offer {self.id} aggregator", self.aggregator)
        check_party_id(f"offer {self.id} congestion point", self.congestion_point)
        if not self.options:
            raise InputError(f"offer {self.id}: no options")
        refs = [o.reference for o in self.options]
        if len(set(refs)) != len(refs):
            raise InputError(f"offer {self.id}: an option reference is used twice")
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise InputError(f"offer {self.id}: currency {self.currency!r} is not an ISO 4217 code")

    def option(self, reference: str) -> FlexOption:
        """The option named ``reference``, or :class:`InputError`."""
        for o in self.options:
            if o.reference == reference:
                return o
        raise InputError(f"offer {self.id}: no option {reference!r}")

    def to_json(self) -> dict[str, Any]:
        """The offer as JSON."""
        return {
            "id": self.id,
            "aggregator": self.aggregator,
            "congestion_point": self.congestion_point,
            "currency": self.currency,
            "options": [o.to_json() for o in self.options],
        }


def interval_times(start: datetime, count: int) -> Sequence[datetime]:
    """The start times of ``count`` ISPs from ``start`` (aware)."""
    first = check_aware("interval start", start)
    return [first + k * ISP for k in range(count)]
