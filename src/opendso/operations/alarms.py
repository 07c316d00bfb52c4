"""Alarms: vectorised limit and condition monitoring with the alarm life cycle of ISA-18.2 / IEC 62682.

An :class:`AlarmMonitor` watches a fixed set of channels (one per element and condition, e.g.
the voltage of every node, the loading of every branch, the supply of every load) and is fed
one array of values per real-time cycle. Evaluating 10,000 channels is a handful of numpy
operations; only transitions become :class:`AlarmEvent` objects, which the caller appends to
the event log.

Per channel:

- **Severity** is signed: +1/+2 high warning/alarm, -1/-2 low warning/alarm, 0 normal. A
  limit is crossed going up at its value and left only once the value is back by more than the
  deadband, so a value sitting on a limit does not flap.
- **Time delay** (on-delay): a raise or an escalation takes effect only after the condition
  has held for ``delay_s``; returning towards normal takes effect at once.
- **Acknowledgement**: a raised alarm is unacknowledged until an operator acknowledges it; an
  alarm that returns to normal unacknowledged stays in the list until acknowledged (ISA-18.2's
  "return to normal, unacknowledged").
- **Shelving**: an operator may shelve an alarm until a time, with a reason; a shelved alarm's
  transitions are still logged but marked shelved, and the shelf expires by itself.
- **Chattering**: a channel that changes state ``chatter_count`` times within
  ``chatter_window_s`` is marked chattering; its further transitions are logged as suppressed
  until it has been quiet for a window, then its present state is reported once.
- **Grouping**: every channel carries a group (e.g. the feeder it belongs to); the alarm list
  folds active alarms by group, so a breaker trip that de-energises a feeder shows as one group
  headed by its most severe, earliest alarm instead of a flood.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from opendso.errors import InputError

FloatArray = npt.NDArray[np.float64]
_EPOCH = datetime.fromtimestamp(0, tz=UTC)


class Priority(enum.IntEnum):
    """Alarm priority (lower number, higher priority)."""

    CRITICAL = 1
    HIGH = 2
    MEDIUM = 3
    LOW = 4


class Transition(enum.StrEnum):
    """What happened to an alarm."""

    RAISED = "raised"
    ESCALATED = "escalated"
    DEESCALATED = "deescalated"
    CLEARED = "cleared"
    ACKNOWLEDGED = "acknowledged"
    SHELVED = "shelved"
    UNSHELVED = "unshelved"
    CHATTERING = "chattering"
    CHATTERING_ENDED = "chattering_ended"


@dataclass(frozen=True)
class AlarmEvent:
    """One alarm transition, ready to be appended to the event log."""

    time: datetime
    transition: Transition
    monitor: str
    channel: str
    condition: str
    severity: int
    priority: Priority
    value: float | None
    group: str | None
    shelved: bool = False
    suppressed: bool = False
    actor: str | None = None
    reason: str | None = None

    @property
    def key(self) -> str:
        """The alarm's stable key: monitor and channel."""
        return f"{self.monitor}:{self.channel}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {
            "time": self.time.isoformat(),
            "transition": self.transition.value,
            "key": self.key,
            "monitor": self.monitor,
            "channel": self.channel,
            "condition": self.condition,
            "severity": self.severity,
            "priority": self.priority.name.lower(),
            "value": self.value,
            "group": self.group,
            "shelved": self.shelved,
            "suppressed": self.suppressed,
            "actor": self.actor,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Limits:
    """Limits per channel (scalars broadcast); NaN means no such limit."""

    low_alarm: float | FloatArray = np.nan
    low_warning: float | FloatArray = np.nan
    high_warning: float | FloatArray = np.nan
    high_alarm: float | FloatArray = np.nan
    deadband: float | FloatArray = 0.0


@dataclass(frozen=True)
class ActiveAlarm:
    """An alarm in the alarm list."""

    key: str
    channel: str
    condition: str
    severity: int
    priority: Priority
    value: float | None
    group: str | None
    since: datetime
    acknowledged: bool
    shelved_until: datetime | None
    chattering: bool


@dataclass(frozen=True)
class AlarmGroup:
    """Active alarms folded by group: the head (most severe, then earliest) and how many there are."""

    group: str | None
    head: ActiveAlarm
    count: int
    unacknowledged: int
    alarms: tuple[ActiveAlarm, ...] = field(repr=False)


def _severity_with_deadband(values: FloatArray, current: npt.NDArray[np.int8], lim: Limits) -> npt.NDArray[np.int8]:
    """Target severity: limits are crossed at their value and left only beyond the deadband."""
    n = values.size
    db = np.broadcast_to(np.asarray(lim.deadband, dtype=float), (n,))

    def level(limit: float | FloatArray, already: npt.NDArray[np.bool_], above: bool) -> npt.NDArray[np.bool_]:
        lim_arr = np.broadcast_to(np.asarray(limit, dtype=float), (n,))
        with np.errstate(invalid="ignore"):
            if above:
                return np.where(already, values > lim_arr - db, values > lim_arr) & ~np.isnan(lim_arr)
            return np.where(already, values < lim_arr + db, values < lim_arr) & ~np.isnan(lim_arr)

    target = np.zeros(n, dtype=np.int8)
    target[level(lim.high_warning, current >= 1, True)] = 1
    target[level(lim.high_alarm, current >= 2, True)] = 2
    target[level(lim.low_warning, current <= -1, False)] = -1
    target[level(lim.low_alarm, current <= -2, False)] = -2
    return target


class AlarmMonitor:
    """Vectorised alarm state machine over a fixed set of channels (see the module docstring)."""

    def __init__(
        self,
        name: str,
        channels: Sequence[str],
        *,
        conditions: tuple[str, str] = ("low", "high"),
        limits: Limits | None = None,
        priority_warning: Priority = Priority.MEDIUM,
        priority_alarm: Priority = Priority.HIGH,
        delay_s: float = 0.0,
        chatter_count: int = 6,
        chatter_window_s: float = 60.0,
        groups: Sequence[str | None] | None = None,
    ) -> None:
        self.name = name
        self.channels = np.asarray(channels, dtype=object)
        n = self.channels.size
        if groups is not None and len(groups) != n:
            raise InputError(f"alarm monitor {name}: {len(groups)} groups for {n} channels")
        self.groups = np.asarray(groups if groups is not None else [None] * n, dtype=object)
        self.conditions = conditions
        self.limits = limits
        self.priority_warning = priority_warning
        self.priority_alarm = priority_alarm
        self.delay_s = float(delay_s)
        self.chatter_count = int(chatter_count)
        self.chatter_window_s = float(chatter_window_s)
        self._index = {str(c): i for i, c in enumerate(self.channels)}
        if len(self._index) != n:
            raise InputError(f"alarm monitor {name}: channel names are not unique")
        self.severity = np.zeros(n, dtype=np.int8)
        self.value = np.full(n, np.nan)
        self.since = np.full(n, np.nan)  # epoch seconds of the last raise/escalation
        self.acknowledged = np.ones(n, dtype=bool)
        self.shelved_until = np.full(n, np.nan)
        self.shelve_reason = np.full(n, None, dtype=object)
        self._pending = np.zeros(n, dtype=np.int8)
        self._pending_since = np.full(n, np.nan)
        self._changes = np.full((n, max(self.chatter_count, 1)), -np.inf)  # ring of transition times
        self._cursor = np.zeros(n, dtype=np.int64)
        self.chattering = np.zeros(n, dtype=bool)
        self._last_change = np.full(n, -np.inf)

    # -- feeding ------------------------------------------------------------------------------------
    def update_values(
        self, time: datetime, values: npt.ArrayLike, valid: npt.ArrayLike | None = None
    ) -> list[AlarmEvent]:
        """Evaluate the limits against new values; channels whose value is not valid keep their state."""
        if self.limits is None:
            raise InputError(f"alarm monitor {self.name} has no limits; use update_conditions")
        vals = np.asarray(values, dtype=float)
        self._check_size(vals)
        ok = np.isfinite(vals) if valid is None else np.asarray(valid, dtype=bool) & np.isfinite(vals)
        target = np.where(
            ok, _severity_with_deadband(np.where(ok, vals, 0.0), self.severity, self.limits), self.severity
        ).astype(np.int8)
        self.value = np.where(ok, vals, self.value)
        return self._apply(time, target)

    def update_conditions(self, time: datetime, active: npt.ArrayLike, *, severity: int = 2) -> list[AlarmEvent]:
        """Evaluate boolean conditions (loss of supply, telemetry failure, ...): true raises at ``severity``."""
        act = np.asarray(active, dtype=bool)
        self._check_size(act)
        target = np.where(act, np.int8(severity), np.int8(0)).astype(np.int8)
        return self._apply(time, target)

    def _check_size(self, values: np.ndarray) -> None:
        if values.shape != self.channels.shape:
            raise InputError(f"alarm monitor {self.name}: {values.size} values for {self.channels.size} channels")

    def _apply(self, time: datetime, target: npt.NDArray[np.int8]) -> list[AlarmEvent]:
        t = time.timestamp()
        events: list[AlarmEvent] = []
        # shelves that expired
        expired = np.flatnonzero(~np.isnan(self.shelved_until) & (self.shelved_until <= t))
        for i in expired:
            self.shelved_until[i] = np.nan
            self.shelve_reason[i] = None
            events.append(self._event(time, i, Transition.UNSHELVED, reason="shelf expired"))
        # on-delay for raises and escalations (including a change of side)
        worse = (np.abs(target) > np.abs(self.severity)) | ((target * self.severity) < 0)
        better = ~worse & (target != self.severity)
        new_pending = worse & (target != self._pending)
        self._pending_since[new_pending] = t
        self._pending = np.where(worse, target, self.severity).astype(np.int8)
        due = worse & (t - self._pending_since >= self.delay_s - 1e-9)
        change = due | better
        rows = np.flatnonzero(change)
        if rows.size:
            old = self.severity[rows].copy()
            new = target[rows]
            self.severity[rows] = new
            self._pending[rows] = new
            # chattering bookkeeping
            self._changes[rows, self._cursor[rows] % self._changes.shape[1]] = t
            self._cursor[rows] += 1
            self._last_change[rows] = t
            recent = (self._changes[rows] >= t - self.chatter_window_s).sum(axis=1)
            starts = rows[(recent >= self.chatter_count) & ~self.chattering[rows]]
            for i, before, after in zip(rows, old, new, strict=True):
                if after == 0:
                    kind = Transition.CLEARED
                elif before == 0 or before * after < 0:
                    kind = Transition.RAISED
                elif abs(after) > abs(before):
                    kind = Transition.ESCALATED
                else:
                    kind = Transition.DEESCALATED
                if kind in (Transition.RAISED, Transition.ESCALATED):
                    self.acknowledged[i] = False
                    self.since[i] = t
                events.append(self._event(time, i, kind, suppressed=bool(self.chattering[i])))
            # the change that reveals the chattering is reported; the ones after it are suppressed
            for i in starts:
                self.chattering[i] = True
                events.append(self._event(time, i, Transition.CHATTERING))
        # chattering ends after a quiet window: report the present state once
        quiet = np.flatnonzero(self.chattering & (t - self._last_change >= self.chatter_window_s))
        for i in quiet:
            self.chattering[i] = False
            self._changes[i] = -np.inf
            events.append(self._event(time, i, Transition.CHATTERING_ENDED))
        return events

    # -- operator actions ----------------------------------------------------------------------------
    def acknowledge(self, time: datetime, channel: str, *, actor: str) -> AlarmEvent:
        """Acknowledge an alarm; raises InputError for an unknown channel."""
        i = self._row(channel)
        self.acknowledged[i] = True
        return self._event(time, i, Transition.ACKNOWLEDGED, actor=actor)

    def shelve(self, time: datetime, channel: str, *, until: datetime, reason: str, actor: str) -> AlarmEvent:
        """Shelve an alarm until a time, with a reason (both required)."""
        i = self._row(channel)
        if not reason.strip():
            raise InputError(f"shelving {self.name}:{channel}: a reason is required")
        if until <= time:
            raise InputError(f"shelving {self.name}:{channel}: the shelf must end in the future ({until.isoformat()})")
        self.shelved_until[i] = until.timestamp()
        self.shelve_reason[i] = reason
        return self._event(time, i, Transition.SHELVED, actor=actor, reason=reason)

    def unshelve(self, time: datetime, channel: str, *, actor: str) -> AlarmEvent:
        """Take an alarm off the shelf."""
        i = self._row(channel)
        self.shelved_until[i] = np.nan
        self.shelve_reason[i] = None
        return self._event(time, i, Transition.UNSHELVED, actor=actor)

    def _row(self, channel: str) -> int:
        try:
            return self._index[channel]
        except KeyError:
            raise InputError(f"alarm monitor {self.name}: unknown channel {channel!r}") from None

    # -- views ----------------------------------------------------------------------------------------
    def active(self, *, include_shelved: bool = False) -> list[ActiveAlarm]:
        """Alarms in the list: active ones and cleared-but-unacknowledged ones."""
        rows = np.flatnonzero((self.severity != 0) | ~self.acknowledged)
        out = []
        for i in rows:
            shelved = not np.isnan(self.shelved_until[i])
            if shelved and not include_shelved:
                continue
            out.append(
                ActiveAlarm(
                    key=f"{self.name}:{self.channels[i]}",
                    channel=str(self.channels[i]),
                    condition=self._condition(int(self.severity[i])),
                    severity=int(self.severity[i]),
                    priority=self._priority(int(self.severity[i])),
                    value=None if np.isnan(self.value[i]) else float(self.value[i]),
                    group=self.groups[i],
                    since=datetime.fromtimestamp(self.since[i], tz=UTC) if np.isfinite(self.since[i]) else _EPOCH,
                    acknowledged=bool(self.acknowledged[i]),
                    shelved_until=datetime.fromtimestamp(self.shelved_until[i], tz=UTC) if shelved else None,
                    chattering=bool(self.chattering[i]),
                )
            )
        return out

    def _condition(self, severity: int) -> str:
        if severity == 0:
            return "normal"
        side = self.conditions[1] if severity > 0 else self.conditions[0]
        return side if self.limits is None else f"{side} {'alarm' if abs(severity) >= 2 else 'warning'}"

    def _priority(self, severity: int) -> Priority:
        return self.priority_alarm if abs(severity) >= 2 else self.priority_warning

    def _event(
        self,
        time: datetime,
        i: int | np.integer[Any],
        kind: Transition,
        *,
        suppressed: bool = False,
        actor: str | None = None,
        reason: str | None = None,
    ) -> AlarmEvent:
        sev = int(self.severity[i])
        return AlarmEvent(
            time=time,
            transition=kind,
            monitor=self.name,
            channel=str(self.channels[i]),
            condition=self._condition(sev),
            severity=sev,
            priority=self._priority(sev),
            value=None if np.isnan(self.value[i]) else float(self.value[i]),
            group=self.groups[i],
            shelved=not np.isnan(self.shelved_until[i]),
            suppressed=suppressed,
            actor=actor,
            reason=reason,
        )


def group_alarms(alarms: Sequence[ActiveAlarm]) -> list[AlarmGroup]:
    """Fold alarms by group (alarms without a group stand alone), most urgent group first."""
    buckets: dict[Any, list[ActiveAlarm]] = {}
    for alarm in alarms:
        buckets.setdefault(alarm.group if alarm.group is not None else ("", alarm.key), []).append(alarm)
    groups = []
    for members in buckets.values():
        members.sort(key=lambda a: (a.priority, -abs(a.severity), a.since, a.key))
        head = members[0]
        groups.append(
            AlarmGroup(
                group=head.group,
                head=head,
                count=len(members),
                unacknowledged=sum(not a.acknowledged for a in members),
                alarms=tuple(members),
            )
        )
    groups.sort(key=lambda g: (g.head.priority, g.head.since, g.head.key))
    return groups
