"""Commands to the field: what is asked (:class:`CommandRequest`) and what came of it (:class:`CommandResult`).

Every telemetry adapter takes commands through one interface
(:meth:`~opendso.telemetry.base.TelemetryAdapter.operate_switch`,
:meth:`~opendso.telemetry.base.TelemetryAdapter.send_setpoint`, both built on
:meth:`~opendso.telemetry.base.TelemetryAdapter.command`): open or close a switch, or send a
set-point, to a point of the adapter's point map. Select-before-operate is asked for with
``select_before_operate`` (True: select then execute; False: execute directly; None: the
protocol's default for that kind of command). A protocol without it (Modbus, MQTT) refuses a
command that asks for it rather than pretend.

Each command ends in exactly one of four :class:`CommandOutcome`:

``refused``
    The command was not carried out and the field said so, or it could not be sent: a negative
    confirmation (Modbus exception response; IEC 104 ACT_CON with P/N = 1, or a mirror with
    COT 44-47), a command the adapter refuses before sending (unknown point, a point that takes
    no such command, a value out of the point's range or outside what the protocol can encode,
    no connection), or an exception while sending.
``no_response``
    The command was sent and no confirmation came within the protocol's command timeout.
``not_executed``
    Confirmed but not executed: the field confirmed the command, but the point's monitored
    status did not report the requested value (good quality) within the feedback timeout.
``completed``
    Confirmed, and the monitored status reported the requested value within the feedback timeout.

The status is the commanded point itself: a switch's position, the set-point's measured value
(what the adapter reads for that point: Modbus polls, IEC 104 return information or
spontaneous reports). A switch matches when the status equals the requested position (1.0
closed, 0.0 open); a set-point when it is within the request's ``tolerance`` (default: the
point's deadband, at least the resolution of the protocol's encoding and 1e-6 of the value).

The result record (:class:`CommandResult`) carries the outcome, the point, the requested value,
the reason in words and the times of the request, the sending, the confirmation and the end.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from opendso.quality import Quality
from opendso.timeutil import require_aware

__all__ = [
    "CommandAttempt",
    "CommandKind",
    "CommandOutcome",
    "CommandRequest",
    "CommandResult",
    "FeedbackWatch",
    "setpoint_tolerance",
]


class CommandOutcome(StrEnum):
    """How a command ended: exactly one of four (see the module docstring)."""

    REFUSED = "refused"
    NO_RESPONSE = "no_response"
    NOT_EXECUTED = "not_executed"
    COMPLETED = "completed"


class CommandKind(StrEnum):
    """What a command asks for: a switch position or a set-point."""

    SWITCH = "switch"
    SETPOINT = "setpoint"


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """One command to one point of an adapter's point map.

    ``value``: for :attr:`CommandKind.SWITCH` 1.0 closes and 0.0 opens; for a set-point the
    value in the point's unit. ``select_before_operate``: True, False or None (the protocol's
    default). ``feedback_timeout_s``: how long after the confirmation the status may take to
    report the requested value (None: the adapter's default). ``tolerance``: for a set-point,
    how far (in the point's unit) the status may be from ``value`` and still match (None: see
    the module docstring).
    """

    point: str
    kind: CommandKind
    value: float
    select_before_operate: bool | None = None
    feedback_timeout_s: float | None = None
    tolerance: float | None = None

    @classmethod
    def switch(cls, point: str, *, closed: bool, **options: float | bool | None) -> CommandRequest:
        """Return the request to close (``closed=True``) or open a switch."""
        return cls(point, CommandKind.SWITCH, 1.0 if closed else 0.0, **options)  # type: ignore[arg-type]

    @classmethod
    def setpoint(cls, point: str, value: float, **options: float | bool | None) -> CommandRequest:
        """Return the request to set ``point`` to ``value`` (in the point's unit)."""
        return cls(point, CommandKind.SETPOINT, float(value), **options)  # type: ignore[arg-type]

    def problem(self) -> str | None:
        """Return what is wrong with the request itself (None when nothing is), before any point is looked up."""
        if self.kind == CommandKind.SWITCH and self.value not in (0.0, 1.0):
            return f"a switch command is 0 (open) or 1 (close), got {self.value!r}"
        if not math.isfinite(self.value):
            return f"a set-point must be a finite number, got {self.value!r}"
        if self.feedback_timeout_s is not None and not self.feedback_timeout_s >= 0:
            return f"feedback timeout must be >= 0 s, got {self.feedback_timeout_s!r}"
        if self.tolerance is not None and not self.tolerance >= 0:
            return f"tolerance must be >= 0, got {self.tolerance!r}"
        return None

    @property
    def description(self) -> str:
        """The command in words, for logs and reasons: ``close``, ``open`` or ``set-point 12.5``."""
        if self.kind == CommandKind.SWITCH:
            return "close" if self.value == 1.0 else "open"
        return f"set-point {self.value:g}"


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What came of one command.

    ``requested_at``: when the adapter took the request; ``sent_at``: when the (first) command
    telegram went out, None when it never did; ``confirmed_at``: when the positive confirmation
    arrived, None without one; ``finished_at``: when the outcome was decided. All aware UTC.
    ``feedback``: the last status value seen after the command was sent (None: none seen).
    ``select_before_operate``: whether it was (to be) sent as select then execute.
    """

    outcome: CommandOutcome
    point: str
    kind: CommandKind
    value: float
    reason: str
    requested_at: datetime
    finished_at: datetime
    sent_at: datetime | None = None
    confirmed_at: datetime | None = None
    feedback: float | None = None
    select_before_operate: bool = False
    adapter: str = ""

    def __post_init__(self) -> None:
        for name in ("requested_at", "finished_at", "sent_at", "confirmed_at"):
            stamp = getattr(self, name)
            if stamp is not None:
                require_aware(stamp, f"command result {name}")

    @property
    def completed(self) -> bool:
        """True when the command was confirmed and its feedback matched."""
        return self.outcome == CommandOutcome.COMPLETED

    def as_dict(self) -> dict[str, object]:
        """Return the result as plain values (for logs, events and the API)."""
        return {
            "outcome": str(self.outcome),
            "point": self.point,
            "kind": str(self.kind),
            "value": self.value,
            "reason": self.reason,
            "requested_at": self.requested_at.isoformat(),
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "confirmed_at": self.confirmed_at.isoformat() if self.confirmed_at else None,
            "finished_at": self.finished_at.isoformat(),
            "feedback": self.feedback,
            "select_before_operate": self.select_before_operate,
            "adapter": self.adapter,
        }


@dataclass(eq=False)
class FeedbackWatch:
    """Waits for a point's status to report a value ``matches`` accepts, with good quality.

    An adapter registers a watch before it sends a command and offers it every status of the
    point it hands out from then on (:meth:`offer`); :meth:`wait` returns once one matched.
    """

    point: str
    matches: Callable[[float], bool]
    last: float | None = None
    _event: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def offer(self, value: float, quality: int) -> None:
        """Take one status of the point (value in its unit, quality bits)."""
        self.last = value
        if quality == Quality.GOOD and math.isfinite(value) and self.matches(value):
            self._event.set()

    @property
    def matched(self) -> bool:
        """True once a status matched."""
        return self._event.is_set()

    async def wait(self, timeout_s: float) -> bool:
        """Return True as soon as a status matched, False when ``timeout_s`` passed first."""
        if self._event.is_set():
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


def setpoint_tolerance(request: CommandRequest, *, deadband: float = 0.0, resolution: float = 0.0) -> float:
    """Return how far a set-point's status may be from the request: the request's ``tolerance`` when given,
    else the largest of the point's ``deadband``, the protocol's ``resolution`` (in the point's unit)
    and 1e-6 of the value."""
    if request.tolerance is not None:
        return request.tolerance
    return max(deadband, resolution, 1e-6 * abs(request.value))


@dataclass
class CommandAttempt:
    """One command under way: its request, its times and its status watch; :meth:`finish` gives the result."""

    request: CommandRequest
    adapter: str
    select_before_operate: bool = False
    requested_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    sent_at: datetime | None = None
    confirmed_at: datetime | None = None
    watch: FeedbackWatch | None = None

    def mark_sent(self) -> None:
        """Note that the (first) command telegram goes out now."""
        if self.sent_at is None:
            self.sent_at = datetime.now(UTC)

    def mark_confirmed(self) -> None:
        """Note that the positive confirmation arrived now."""
        self.confirmed_at = datetime.now(UTC)

    def finish(self, outcome: CommandOutcome, reason: str) -> CommandResult:
        """Return the result with ``outcome`` and ``reason``, ended now."""
        r = self.request
        return CommandResult(
            outcome=outcome,
            point=r.point,
            kind=r.kind,
            value=r.value,
            reason=reason,
            requested_at=self.requested_at,
            finished_at=datetime.now(UTC),
            sent_at=self.sent_at,
            confirmed_at=self.confirmed_at,
            feedback=self.watch.last if self.watch is not None else None,
            select_before_operate=self.select_before_operate,
            adapter=self.adapter,
        )

    def refused(self, reason: str) -> CommandResult:
        """Return a :attr:`CommandOutcome.REFUSED` result."""
        return self.finish(CommandOutcome.REFUSED, reason)

    def no_response(self, reason: str) -> CommandResult:
        """Return a :attr:`CommandOutcome.NO_RESPONSE` result."""
        return self.finish(CommandOutcome.NO_RESPONSE, reason)
