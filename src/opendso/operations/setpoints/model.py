"""The records of the set-point path: who asks for an export limit, what the gate decides, what came of it.

- :class:`SetpointSource`: the applications that may ask for a DER's export limit, in priority
  order (the first is the highest);
- :class:`SetpointRequest`: one source's export limit for one DER's ``p_limit`` point (W), or
  ``None`` to say that this source asks for no limit (a release);
- :class:`FlexibleDer`: a point the arbiter owns: the DER's export-limit point, its rating (the
  range of the limit) and the telemetry points whose freshness the gate checks;
- :class:`SetpointGateConfig`, :class:`SetpointRule`, :class:`SetpointDecision`: the gate's
  configuration, its rules and its answer naming the rule that refused;
- :class:`SetpointOutcome`: what came of a request: ``sent`` (the command completed: the DER's
  read-back shows the limit), ``unchanged`` (the limit in force did not change: nothing sent),
  ``refused`` (by the gate, or the request was not valid: nothing sent, nothing stored) or
  ``failed`` (sent, but the field refused it, did not answer or did not follow).

Export limits are caps. Later "target" requests (demand response or a market asking for more
output) would be a second kind of request beside the cap; none is built yet.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opendso.errors import InputError
from opendso.telemetry.commands import CommandResult
from opendso.text import check_text

__all__ = [
    "OUTCOME_STATUSES",
    "FlexibleDer",
    "SetpointDecision",
    "SetpointGateConfig",
    "SetpointOutcome",
    "SetpointRequest",
    "SetpointRule",
    "SetpointSource",
]

#: The statuses of a :class:`SetpointOutcome`.
OUTCOME_STATUSES: tuple[str, ...] = ("sent", "unchanged", "refused", "failed")


class SetpointSource(enum.StrEnum):
    """An application that asks for export limits; the order is the priority (first = highest)."""

    FLISR = "flisr"
    ANM = "anm"
    OPERATOR = "operator"
    DR = "dr"
    MARKET = "market"

    @property
    def priority(self) -> int:
        """0 for the highest priority (FLISR), counting up in declaration order."""
        return _PRIORITY[self]


_PRIORITY = {s: k for k, s in enumerate(SetpointSource)}


class SetpointRule(enum.StrEnum):
    """The set-point gate's rules, in the order they are checked."""

    OWNERSHIP = "ownership"
    RANGE = "range"
    STALE_STATE = "stale_state"
    RAMP_RATE = "ramp_rate"


@dataclass(frozen=True)
class SetpointRequest:
    """One source's export limit for one DER.

    ``point`` is the DER's export-limit point (quantity ``p_limit``, W) in the point map;
    ``limit_w`` the export limit in W, or None when this source asks for no limit (a release).
    ``reason`` is free text (checked with :func:`~opendso.text.check_text`). An unknown
    ``source`` or bad text raises :class:`~opendso.errors.InputError`; the value of the limit is
    the gate's to judge (a NaN, infinite or negative limit is refused by its range rule).
    """

    source: SetpointSource
    point: str
    limit_w: float | None
    reason: str
    actor: str = "system"

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "source", SetpointSource(self.source))
        except ValueError:
            known = ", ".join(s.value for s in SetpointSource)
            raise InputError(f"set-point request: unknown source {self.source!r} (one of {known})") from None
        if not isinstance(self.point, str) or not self.point:
            raise InputError(f"set-point request: point must be a point name, got {self.point!r}")
        if self.limit_w is not None:
            if isinstance(self.limit_w, bool) or not isinstance(self.limit_w, int | float):
                raise InputError(f"set-point request: limit_w must be a number or None, got {self.limit_w!r}")
            object.__setattr__(self, "limit_w", float(self.limit_w))
        object.__setattr__(self, "reason", check_text("set-point reason", self.reason, max_len=500))
        object.__setattr__(self, "actor", check_text("set-point actor", self.actor, max_len=200))

    def as_dict(self) -> dict[str, Any]:
        """The request as plain values (events, API)."""
        return {
            "source": self.source.value,
            "point": self.point,
            "limit_w": self.limit_w,
            "reason": self.reason,
            "actor": self.actor,
        }


@dataclass(frozen=True)
class FlexibleDer:
    """A DER export-limit point the arbiter owns.

    ``point``: the DER's ``p_limit`` point. ``rating_w``: the most it may export (the range of
    the limit: 0..rating; also the value sent when no source asks for a limit), from the grid's
    ``sym_gen`` rating or the registry's ``export_kw``. ``telemetry``: points whose latest
    values must be fresh and good for a set-point to be sent (e.g. the DER's ``p_available`` and
    ``p_limit`` read-back); ``name``: the DER (asset id or generator name) for logs.
    """

    point: str
    rating_w: float
    telemetry: tuple[str, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.rating_w, int | float) and math.isfinite(self.rating_w) and self.rating_w > 0):
            raise InputError(
                f"flexible DER {self.point!r}: rating_w must be a finite number > 0, got {self.rating_w!r}"
            )
        object.__setattr__(self, "rating_w", float(self.rating_w))
        object.__setattr__(self, "telemetry", tuple(self.telemetry))


@dataclass(frozen=True)
class SetpointGateConfig:
    """The set-point gate's limits.

    ``ramp_up_w_per_s``: how fast an export limit may rise (W per second since the last value
    sent; None: no limit). ``ramp_down_w_per_s``: how fast it may fall; None (the default) lets
    a tighter limit step at once, because lowering export never endangers the network.
    ``max_age_s``: the oldest telemetry (and cycle estimate) a set-point may be decided on.
    """

    ramp_up_w_per_s: float | None = None
    ramp_down_w_per_s: float | None = None
    max_age_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("ramp_up_w_per_s", "ramp_down_w_per_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"set-point gate: {name} must be > 0 or None, got {value!r}")
        if not (math.isfinite(self.max_age_s) and self.max_age_s > 0):
            raise InputError(f"set-point gate: max_age_s must be > 0, got {self.max_age_s!r}")


@dataclass(frozen=True)
class SetpointDecision:
    """The gate's answer for one value on one point: allowed, or the one rule that refused and why."""

    point: str
    value_w: float
    allowed: bool
    rule: SetpointRule | None = None
    reason: str = ""
    passed: tuple[SetpointRule, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The decision as plain values."""
        return {
            "point": self.point,
            "value_w": self.value_w if math.isfinite(self.value_w) else str(self.value_w),
            "allowed": self.allowed,
            "rule": self.rule.value if self.rule is not None else None,
            "reason": self.reason,
            "passed": [r.value for r in self.passed],
        }


@dataclass(frozen=True)
class SetpointOutcome:
    """What came of one request, release or refresh on one point.

    ``status``: ``sent`` | ``unchanged`` | ``refused`` | ``failed`` (see the module docstring).
    ``effective_w``: the export limit the arbiter holds in force after it (None: no limit);
    ``owner``: the source whose request binds (None: no limit); ``rule``: the gate rule that
    refused (a :class:`SetpointRule` value), None otherwise; ``sent_w``: the value written
    (the rating when no limit is in force; below the limit asked for while a rise ramps);
    ``result``: the command's result when one was sent.
    """

    status: str
    point: str
    effective_w: float | None
    owner: SetpointSource | None
    rule: str | None
    reason: str
    result: CommandResult | None
    sent_w: float | None = None
    source: SetpointSource | None = None
    at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the limit in force is what the field holds (sent and completed, or unchanged)."""
        return self.status in ("sent", "unchanged")

    def as_dict(self) -> dict[str, Any]:
        """The outcome as plain values (events, API)."""
        return {
            "status": self.status,
            "point": self.point,
            "effective_w": self.effective_w,
            "owner": self.owner.value if self.owner is not None else None,
            "rule": self.rule,
            "reason": self.reason,
            "sent_w": self.sent_w,
            "source": self.source.value if self.source is not None else None,
            "at": self.at.isoformat() if self.at is not None else None,
            "result": self.result.as_dict() if self.result is not None else None,
        }
