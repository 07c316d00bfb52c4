"""Alarms: vectorised limit and condition monitoring with the alarm life cycle of ISA-18.2 / IEC 62682.

An :class:`AlarmMonitor` watches a fixed set of channels (one per element and condition, e.g.
the voltage of every node, the loading of every branch, the supply of every load) and is fed
one array of values per real-time cycle. Evaluating 10,000 channels is a handful of numpy
operations; only transitions become :class:`AlarmEvent` objects, which the caller appends to
the event log.

Alarm states follow the alarm state transition diagram of ANSI/ISA-18.2-2016 clause 5 (alarm
system models; the same model is IEC 62682:2014 clause 5): normal (A), unacknowledged (B),
acknowledged (C), returned to normal unacknowledged (D), shelved (F), suppressed by design (G)
and out of service (H); latching (E) is not used. :class:`AlarmState` names them and
:meth:`AlarmMonitor.state_codes` computes every channel's state in one pass. The three states
that take an alarm off the operator's list are kept apart, each with its own authority:

- **Shelving** (ISA-18.2 clause 14, operation, and clause 11, HMI): an operator takes an alarm
  that is *active or unacknowledged* off the list for a limited time, with a reason. Shelving an
  alarm in the normal state is refused (:class:`AlarmStateError`): an alarm shelved in advance
  would raise unseen. A shelf lasts at most ``max_shelve_s`` (8 h, one shift, by default),
  ends by itself, and can be taken off (:meth:`AlarmMonitor.unshelve`). When a shelf ends while
  the alarm is still active, the alarm is announced again, unacknowledged.
- **Out of service** (ISA-18.2 clause 15, maintenance): an engineer removes an alarm from
  service for maintenance (e.g. a sensor being replaced), with a reason, and returns it to
  service; an alarm still active when it returns is announced again.
- **Suppressed by design** (ISA-18.2 clause 12, enhanced and advanced methods: designed
  suppression): logic, not a person, suppresses alarms that are the expected consequence of
  something intended (a commanded switching action, a feeder under a work permit). The caller
  sets the mask every cycle (:meth:`AlarmMonitor.set_designed_suppression`); an alarm still
  active when its suppression ends is announced again.

Hidden alarms (shelved, out of service, suppressed by design) are still evaluated; their
transitions are logged, marked, but not announced and they do not reset the acknowledgement.
They are never hidden from the counts: :func:`count_alarms` is the one definition of the alarm
counts every display uses (see :class:`AlarmCounts`).

Per channel:

- **Severity** is signed: +1/+2 high warning/alarm, -1/-2 low warning/alarm, 0 normal. A
  limit is crossed going up at its value and left only once the value is back by more than the
  deadband (ISA-18.2 clause 10, basic alarm design), so a value sitting on a limit does not flap.
- **Time delays** (on-delay and off-delay, ISA-18.2 clause 10): a raise or an escalation takes
  effect only after the condition has held for ``delay_s``; a return towards normal only after
  it has held for ``off_delay_s`` (0 by default: at once).
- **Acknowledgement**: a raised alarm is unacknowledged until an operator acknowledges it; an
  alarm that returns to normal unacknowledged stays in the list until acknowledged (state D).
- **Chattering** (ISA-18.2 clause 16, monitoring: a chattering alarm repeatedly changes between
  the alarm and normal states in a short time; ISA-TR18.2.5 and EEMUA 191 take three alarms in
  one minute as the usual threshold): a channel that changes state ``chatter_count`` times
  (default 6, i.e. three raises and three clears) within ``chatter_window_s`` (60 s) is marked
  chattering; its further transitions are logged as suppressed, are not announced and do not
  reset the acknowledgement, until it has been quiet for a window; then its present state is
  reported once (announced again if it is still active). ``chatter_count`` 0 turns this off.
- **Grouping and cause**: every channel carries a group (e.g. the feeder it belongs to) and may
  carry a *cause*, the key of the alarm that explains it (set by the caller, e.g. the breaker
  whose trip de-energised a load). :func:`group_alarms` folds alarms by group with the cause at
  the head and its consequences under it, so a breaker trip is one group headed by the
  breaker instead of a flood.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from opendso.errors import AlarmStateError, InputError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
_EPOCH = datetime.fromtimestamp(0, tz=UTC)
#: Default longest shelf: one 8-hour shift (the shelf must end within the shift that set it).
DEFAULT_MAX_SHELVE_S = 8 * 3600.0


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
    OUT_OF_SERVICE = "out_of_service"
    RETURNED_TO_SERVICE = "returned_to_service"
    SUPPRESSED = "suppressed"
    UNSUPPRESSED = "unsuppressed"


class AlarmState(enum.StrEnum):
    """The alarm states of ISA-18.2 clause 5 (letters as in its state transition diagram)."""

    NORMAL = "normal"  # A
    UNACKNOWLEDGED = "unacknowledged"  # B: active, unacknowledged
    ACKNOWLEDGED = "acknowledged"  # C: active, acknowledged
    RETURNED_UNACKNOWLEDGED = "returned_unacknowledged"  # D: returned to normal, unacknowledged
    SHELVED = "shelved"  # F
    SUPPRESSED = "suppressed"  # G: suppressed by design
    OUT_OF_SERVICE = "out_of_service"  # H


#: State codes of :meth:`AlarmMonitor.state_codes`, in the order of this tuple.
STATES: tuple[AlarmState, ...] = tuple(AlarmState)
_CODE = {state: np.int8(i) for i, state in enumerate(STATES)}
#: States that count as standing (in the operator's list) and as unacknowledged.
STANDING_STATES = frozenset({AlarmState.UNACKNOWLEDGED, AlarmState.ACKNOWLEDGED, AlarmState.RETURNED_UNACKNOWLEDGED})
UNACKNOWLEDGED_STATES = frozenset({AlarmState.UNACKNOWLEDGED, AlarmState.RETURNED_UNACKNOWLEDGED})


@dataclass(frozen=True)
class AlarmCounts:
    """The alarm counts, one definition for every display (status bar, badge, API, console).

    - ``standing``: active alarms plus alarms returned to normal unacknowledged (states B, C, D);
    - ``unacknowledged``: active-unacknowledged plus returned-unacknowledged (states B, D);
    - ``shelved``, ``out_of_service``, ``suppressed`` (by design, in alarm or unacknowledged):
      counted separately, never folded into or dropped from the two above.

    Every alarm is counted once, in its :class:`AlarmState`; out of service takes precedence
    over shelved, shelved over suppressed.
    """

    standing: int = 0
    unacknowledged: int = 0
    shelved: int = 0
    out_of_service: int = 0
    suppressed: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON-ready counts."""
        return {
            "standing": self.standing,
            "unacknowledged": self.unacknowledged,
            "shelved": self.shelved,
            "out_of_service": self.out_of_service,
            "suppressed": self.suppressed,
        }


def _counts(tally: Mapping[str, int]) -> AlarmCounts:
    return AlarmCounts(
        standing=sum(tally.get(s.value, 0) for s in STANDING_STATES),
        unacknowledged=sum(tally.get(s.value, 0) for s in UNACKNOWLEDGED_STATES),
        shelved=tally.get(AlarmState.SHELVED.value, 0),
        out_of_service=tally.get(AlarmState.OUT_OF_SERVICE.value, 0),
        suppressed=tally.get(AlarmState.SUPPRESSED.value, 0),
    )


def count_states(states: Iterable[str]) -> AlarmCounts:
    """Count alarm states (values of :class:`AlarmState`) as :class:`AlarmCounts` defines them."""
    tally: dict[str, int] = {}
    for state in states:
        tally[str(state)] = tally.get(str(state), 0) + 1
    return _counts(tally)


def count_alarms(monitors: Iterable[AlarmMonitor]) -> AlarmCounts:
    """The alarm counts over monitors (see :class:`AlarmCounts`): the one function every display uses."""
    tally = np.zeros(len(STATES), dtype=np.int64)
    for monitor in monitors:
        tally += np.bincount(monitor.state_codes(), minlength=len(STATES))
    return _counts({s.value: int(n) for s, n in zip(STATES, tally.tolist(), strict=True)})


@dataclass(frozen=True)
class AlarmEvent:
    """One alarm transition, ready to be appended to the event log.

    ``shelved``, ``suppressed`` (by design or chattering) and ``out_of_service`` say why a
    transition was not announced; ``cause`` is the key of the alarm that explains this one.
    """

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
    out_of_service: bool = False
    cause: str | None = None

    @property
    def key(self) -> str:
        """The alarm's stable key: monitor and channel."""
        return f"{self.monitor}:{self.channel}"

    @property
    def announced(self) -> bool:
        """Whether this transition brings a new or worse alarm to the operator (with the cue)."""
        return self.transition in (Transition.RAISED, Transition.ESCALATED) and not (
            self.suppressed or self.shelved or self.out_of_service
        )

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
            "out_of_service": self.out_of_service,
            "cause": self.cause,
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
    """An alarm in the alarm list, with its :class:`AlarmState` and who shelved or removed it, and why."""

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
    state: AlarmState = AlarmState.NORMAL
    shelved_at: datetime | None = None
    shelved_by: str | None = None
    shelve_reason: str | None = None
    out_of_service: bool = False
    out_of_service_since: datetime | None = None
    out_of_service_by: str | None = None
    out_of_service_reason: str | None = None
    suppressed: bool = False
    suppressed_reason: str | None = None
    cause: str | None = None


@dataclass(frozen=True)
class AlarmGroup:
    """Alarms folded by group: the head (the cause, else the most severe, then earliest) and how many there are."""

    group: str | None
    head: ActiveAlarm
    count: int
    unacknowledged: int
    alarms: tuple[ActiveAlarm, ...] = field(repr=False)


@dataclass(frozen=True)
class ChannelState:
    """What of one channel's state outlives a restart (see :mod:`opendso.operations.alarm_store`).

    Times are epoch seconds (UTC); None where not set.
    """

    key: str
    severity: int
    value: float | None
    since: float | None
    acknowledged: bool
    shelved_until: float | None = None
    shelved_at: float | None = None
    shelved_by: str | None = None
    shelve_reason: str | None = None
    out_of_service: bool = False
    out_of_service_since: float | None = None
    out_of_service_by: str | None = None
    out_of_service_reason: str | None = None

    @property
    def is_default(self) -> bool:
        """Whether the channel is normal, acknowledged and neither shelved nor out of service."""
        return self.severity == 0 and self.acknowledged and self.shelved_until is None and not self.out_of_service


def _severity_with_deadband(values: FloatArray, current: npt.NDArray[np.int8], lim: Limits) -> npt.NDArray[np.int8]:
    """Target severity: limits are crossed at their value and left only beyond the deadband."""
    n = values.size
    db = np.broadcast_to(np.asarray(lim.deadband, dtype=float), (n,))

    def level(limit: float | FloatArray, already: BoolArray, above: bool) -> BoolArray:
        lim_arr = np.broadcast_to(np.asarray(limit, dtype=float), (n,))
        with np.errstate(invalid="ignore"):
            if above:
                hit = np.where(already, values > lim_arr - db, values > lim_arr)
            else:
                hit = np.where(already, values < lim_arr + db, values < lim_arr)
        result: BoolArray = np.asarray(hit, dtype=bool) & ~np.isnan(lim_arr)
        return result

    target = np.zeros(n, dtype=np.int8)
    target[level(lim.high_warning, current >= 1, True)] = 1
    target[level(lim.high_alarm, current >= 2, True)] = 2
    target[level(lim.low_warning, current <= -1, False)] = -1
    target[level(lim.low_alarm, current <= -2, False)] = -2
    return target


def _ts(seconds: float) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=UTC) if np.isfinite(seconds) else None


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
        off_delay_s: float = 0.0,
        chatter_count: int = 6,
        chatter_window_s: float = 60.0,
        groups: Sequence[str | None] | None = None,
        max_shelve_s: float = DEFAULT_MAX_SHELVE_S,
    ) -> None:
        self.name = name
        self.channels = np.asarray(channels, dtype=object)
        n = self.channels.size
        if groups is not None and len(groups) != n:
            raise InputError(f"alarm monitor {name}: {len(groups)} groups for {n} channels")
        if not max_shelve_s > 0:
            raise InputError(f"alarm monitor {name}: the longest shelf must be positive, got {max_shelve_s}")
        self.groups = np.asarray(groups if groups is not None else [None] * n, dtype=object)
        self.conditions = conditions
        self.limits = limits
        self.priority_warning = priority_warning
        self.priority_alarm = priority_alarm
        self.delay_s = float(delay_s)
        self.off_delay_s = float(off_delay_s)
        self.chatter_count = int(chatter_count)
        self.chatter_window_s = float(chatter_window_s)
        self.max_shelve_s = float(max_shelve_s)
        self._index = {str(c): i for i, c in enumerate(self.channels)}
        if len(self._index) != n:
            raise InputError(f"alarm monitor {name}: channel names are not unique")
        self.severity = np.zeros(n, dtype=np.int8)
        self.value = np.full(n, np.nan)
        self.since = np.full(n, np.nan)  # epoch seconds of the last raise/escalation
        self.acknowledged = np.ones(n, dtype=bool)
        # shelving (operator), out of service (engineer), suppressed by design (logic)
        self.shelved_until = np.full(n, np.nan)
        self.shelved_at = np.full(n, np.nan)
        self.shelved_by = np.full(n, None, dtype=object)
        self.shelve_reason = np.full(n, None, dtype=object)
        self.out_of_service = np.zeros(n, dtype=bool)
        self.oos_since = np.full(n, np.nan)
        self.oos_by = np.full(n, None, dtype=object)
        self.oos_reason = np.full(n, None, dtype=object)
        self.designed = np.zeros(n, dtype=bool)
        self.designed_reason = np.full(n, None, dtype=object)
        # cause (key of the alarm explaining this one) and the group it joins while it has one
        self.cause = np.full(n, None, dtype=object)
        self.group_override = np.full(n, None, dtype=object)
        self._pending = np.zeros(n, dtype=np.int8)
        self._pending_since = np.full(n, np.nan)
        self._changes = np.full((n, max(self.chatter_count, 1)), -np.inf)  # ring of transition times
        self._cursor = np.zeros(n, dtype=np.int64)
        self.chattering = np.zeros(n, dtype=bool)
        self._last_change = np.full(n, -np.inf)
        self._dirty = np.zeros(n, dtype=bool)  # persistent state changed since take_dirty()

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

    def update_conditions(
        self, time: datetime, active: npt.ArrayLike, *, severity: int = 2, valid: npt.ArrayLike | None = None
    ) -> list[AlarmEvent]:
        """Evaluate boolean conditions (loss of supply, telemetry failure, ...): true raises at ``severity``.

        Channels whose ``valid`` is false keep their state (the condition is not known yet).
        """
        act = np.asarray(active, dtype=bool)
        self._check_size(act)
        target = np.where(act, np.int8(severity), np.int8(0)).astype(np.int8)
        if valid is not None:
            ok = np.asarray(valid, dtype=bool)
            self._check_size(ok)
            target = np.where(ok, target, self.severity).astype(np.int8)
        return self._apply(time, target)

    def _check_size(self, values: np.ndarray) -> None:
        if values.shape != self.channels.shape:
            raise InputError(f"alarm monitor {self.name}: {values.size} values for {self.channels.size} channels")

    @property
    def shelved(self) -> BoolArray:
        """Channels on the shelf."""
        shelved: BoolArray = ~np.isnan(self.shelved_until)
        return shelved

    @property
    def hidden(self) -> BoolArray:
        """Channels not announced: shelved, out of service or suppressed by design."""
        return self.shelved | self.out_of_service | self.designed

    def expire_shelves(self, time: datetime) -> list[AlarmEvent]:
        """End the shelves due by ``time``: the alarm comes back, announced again if it is still active."""
        events: list[AlarmEvent] = []
        for i in np.flatnonzero(self.shelved & (self.shelved_until <= time.timestamp())):
            self._clear_shelf(i)
            events.append(self._event(time, i, Transition.UNSHELVED, reason="shelf expired"))
            events += self._announce_if_active(time, i, "shelf expired, still in alarm")
        return events

    def _apply(self, time: datetime, target: npt.NDArray[np.int8]) -> list[AlarmEvent]:
        t = time.timestamp()
        events = self.expire_shelves(time)
        # on-delay for raises and escalations (including a change of side), off-delay for returns
        differs = target != self.severity
        worse = (np.abs(target) > np.abs(self.severity)) | ((target * self.severity) < 0)
        new_pending = differs & (target != self._pending)
        self._pending_since[new_pending] = t
        self._pending = np.where(differs, target, self.severity).astype(np.int8)
        delay = np.where(worse, self.delay_s, self.off_delay_s)
        due = differs & (t - self._pending_since >= delay - 1e-9)
        rows = np.flatnonzero(due)
        if rows.size:
            old = self.severity[rows].copy()
            new = target[rows]
            self.severity[rows] = new
            self._pending[rows] = new
            self._dirty[rows] = True
            # chattering bookkeeping
            self._changes[rows, self._cursor[rows] % self._changes.shape[1]] = t
            self._cursor[rows] += 1
            self._last_change[rows] = t
            recent = (self._changes[rows] >= t - self.chatter_window_s).sum(axis=1)
            starts = (
                rows[(recent >= self.chatter_count) & ~self.chattering[rows]] if self.chatter_count > 0 else rows[:0]
            )
            hidden = self.hidden
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
                    self.since[i] = t
                    # a hidden or chattering alarm is logged but neither announced nor re-armed
                    if not (hidden[i] or self.chattering[i]):
                        self.acknowledged[i] = False
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
            events += self._announce_if_active(time, i, "chattering ended, still in alarm")
        return events

    def _announce_if_active(self, time: datetime, i: int | np.integer[Any], reason: str) -> list[AlarmEvent]:
        """An alarm coming back from a hidden state while active is announced again, unacknowledged."""
        if self.severity[i] == 0 or self.hidden[i] or self.chattering[i]:
            return []
        self.acknowledged[i] = False
        self._dirty[i] = True
        return [self._event(time, i, Transition.RAISED, reason=reason)]

    # -- designed suppression and causes (set by logic every cycle) ----------------------------------------
    def set_designed_suppression(
        self, time: datetime, mask: npt.ArrayLike, reasons: npt.ArrayLike | None = None
    ) -> list[AlarmEvent]:
        """Suppress by design the channels of ``mask`` (with a reason each); lift it from the others.

        Alarms in the list get a ``suppressed``/``unsuppressed`` event; one whose suppression ends
        while it is still active is announced again.
        """
        new = np.asarray(mask, dtype=bool)
        self._check_size(new)
        why = (
            np.broadcast_to(np.asarray(reasons, dtype=object), new.shape)
            if reasons is not None
            else np.full(new.shape, None, dtype=object)
        )
        events: list[AlarmEvent] = []
        listed = (self.severity != 0) | ~self.acknowledged
        started = np.flatnonzero(new & ~self.designed)
        ended = np.flatnonzero(~new & self.designed)
        self.designed_reason = np.where(new, why, np.full(new.shape, None, dtype=object))
        self.designed[started] = True
        for i in started:
            if listed[i]:
                events.append(self._event(time, i, Transition.SUPPRESSED, reason=self.designed_reason[i]))
        for i in ended:
            self.designed[i] = False
            if listed[i]:
                events.append(self._event(time, i, Transition.UNSUPPRESSED, reason="suppression by design ended"))
                events += self._announce_if_active(time, i, "suppression by design ended, still in alarm")
        return events

    def set_causes(self, causes: npt.ArrayLike, groups: npt.ArrayLike | None = None) -> None:
        """Set each channel's cause (an alarm key, or None) and the group it joins with it.

        A channel in the list keeps the cause it had when the new one is None, so an alarm that
        returned to normal stays under its cause until it is acknowledged.
        """
        new = np.asarray(causes, dtype=object)
        self._check_size(new)
        grp = np.asarray(groups, dtype=object) if groups is not None else np.full(new.shape, None, dtype=object)
        self._check_size(grp)
        listed = (self.severity != 0) | ~self.acknowledged
        keep = np.equal(new, np.full(new.shape, None, dtype=object)) & listed
        self.cause = np.where(keep, self.cause, new)
        self.group_override = np.where(keep, self.group_override, grp)

    # -- operator and engineer actions -----------------------------------------------------------------
    def acknowledge(self, time: datetime, channel: str, *, actor: str) -> AlarmEvent:
        """Acknowledge an alarm; raises InputError for an unknown channel."""
        i = self._row(channel)
        self.acknowledged[i] = True
        self._dirty[i] = True
        return self._event(time, i, Transition.ACKNOWLEDGED, actor=actor)

    def shelve(self, time: datetime, channel: str, *, until: datetime, reason: str, actor: str) -> AlarmEvent:
        """Shelve an alarm that is active or unacknowledged until a time, with a reason (both required).

        Raises :class:`InputError` for a missing reason, a shelf that does not end in the future or
        lasts longer than ``max_shelve_s``, and :class:`AlarmStateError` for an alarm in the
        normal state or out of service (nothing is changed then).
        """
        i = self._row(channel)
        if not reason.strip():
            raise InputError(f"shelving {self.name}:{channel}: a reason is required")
        if until <= time:
            raise InputError(f"shelving {self.name}:{channel}: the shelf must end in the future ({until.isoformat()})")
        length = (until - time).total_seconds()
        if length > self.max_shelve_s + 1e-6:
            raise InputError(
                f"shelving {self.name}:{channel}: a shelf lasts at most {self.max_shelve_s / 3600:g} h, "
                f"asked for {length / 3600:.2f} h (until {until.isoformat()})"
            )
        if self.out_of_service[i]:
            raise AlarmStateError(f"alarm {self.name}:{channel} is out of service; it cannot be shelved")
        if self.severity[i] == 0 and self.acknowledged[i]:
            raise AlarmStateError(
                f"alarm {self.name}:{channel} is normal: only an alarm that is active or unacknowledged may be shelved"
            )
        self.shelved_until[i] = until.timestamp()
        self.shelved_at[i] = time.timestamp()
        self.shelved_by[i] = actor
        self.shelve_reason[i] = reason
        self._dirty[i] = True
        return self._event(time, i, Transition.SHELVED, actor=actor, reason=reason)

    def unshelve(self, time: datetime, channel: str, *, actor: str, reason: str | None = None) -> list[AlarmEvent]:
        """Take an alarm off the shelf: the ``unshelved`` event, then its announcement if still active."""
        i = self._row(channel)
        if not self.shelved[i]:
            raise AlarmStateError(f"alarm {self.name}:{channel} is not shelved")
        self._clear_shelf(i)
        events = [self._event(time, i, Transition.UNSHELVED, actor=actor, reason=reason)]
        return events + self._announce_if_active(time, i, "unshelved, still in alarm")

    def _clear_shelf(self, i: int | np.integer[Any]) -> None:
        self.shelved_until[i] = np.nan
        self.shelved_at[i] = np.nan
        self.shelved_by[i] = None
        self.shelve_reason[i] = None
        self._dirty[i] = True

    def remove_from_service(self, time: datetime, channel: str, *, reason: str, actor: str) -> AlarmEvent:
        """Take an alarm out of service for maintenance, with a reason (an engineer's action)."""
        i = self._row(channel)
        if not reason.strip():
            raise InputError(f"taking {self.name}:{channel} out of service: a reason is required")
        if self.out_of_service[i]:
            raise AlarmStateError(f"alarm {self.name}:{channel} is already out of service")
        self.out_of_service[i] = True
        self.oos_since[i] = time.timestamp()
        self.oos_by[i] = actor
        self.oos_reason[i] = reason
        self._dirty[i] = True
        return self._event(time, i, Transition.OUT_OF_SERVICE, actor=actor, reason=reason)

    def return_to_service(
        self, time: datetime, channel: str, *, actor: str, reason: str | None = None
    ) -> list[AlarmEvent]:
        """Return an alarm to service: the ``returned_to_service`` event, then its announcement if active."""
        i = self._row(channel)
        if not self.out_of_service[i]:
            raise AlarmStateError(f"alarm {self.name}:{channel} is not out of service")
        self.out_of_service[i] = False
        self.oos_since[i] = np.nan
        self.oos_by[i] = None
        self.oos_reason[i] = None
        self._dirty[i] = True
        events = [self._event(time, i, Transition.RETURNED_TO_SERVICE, actor=actor, reason=reason)]
        return events + self._announce_if_active(time, i, "returned to service, in alarm")

    def _row(self, channel: str) -> int:
        try:
            return self._index[channel]
        except KeyError:
            raise InputError(f"alarm monitor {self.name}: unknown channel {channel!r}") from None

    def has_channel(self, channel: str) -> bool:
        """Whether the monitor watches ``channel``."""
        return channel in self._index

    def in_list(self, channel: str) -> bool:
        """Whether the alarm is active or unacknowledged (it can be acknowledged and shelved)."""
        i = self._row(channel)
        return bool(self.severity[i] != 0 or not self.acknowledged[i])

    def needs_acknowledgement(self, channel: str) -> bool:
        """Whether the alarm is unacknowledged."""
        return not bool(self.acknowledged[self._row(channel)])

    # -- persistence ----------------------------------------------------------------------------------
    def channel_state(self, i: int | np.integer[Any]) -> ChannelState:
        """The persistent state of the channel in row ``i``."""

        def opt(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        return ChannelState(
            key=f"{self.name}:{self.channels[i]}",
            severity=int(self.severity[i]),
            value=opt(self.value[i]),
            since=opt(self.since[i]),
            acknowledged=bool(self.acknowledged[i]),
            shelved_until=opt(self.shelved_until[i]),
            shelved_at=opt(self.shelved_at[i]),
            shelved_by=self.shelved_by[i],
            shelve_reason=self.shelve_reason[i],
            out_of_service=bool(self.out_of_service[i]),
            out_of_service_since=opt(self.oos_since[i]),
            out_of_service_by=self.oos_by[i],
            out_of_service_reason=self.oos_reason[i],
        )

    def take_dirty(self) -> list[ChannelState]:
        """The states of the channels changed since the last call (and forget that they changed)."""
        rows = np.flatnonzero(self._dirty)
        self._dirty[rows] = False
        return [self.channel_state(i) for i in rows]

    def mark_dirty(self, keys: Iterable[str]) -> None:
        """Mark channels as changed again (e.g. after a failed write)."""
        prefix = f"{self.name}:"
        for key in keys:
            if key.startswith(prefix) and key[len(prefix) :] in self._index:
                self._dirty[self._index[key[len(prefix) :]]] = True

    def restore(self, states: Mapping[str, ChannelState]) -> int:
        """Restore channel states saved before a restart (keys of other monitors or unknown channels are ignored).

        Returns how many channels were restored. The next cycle goes on from there: an alarm
        still active stays acknowledged or not as it was; one that cleared meanwhile clears.
        """
        prefix = f"{self.name}:"
        restored = 0
        for key, s in states.items():
            if not key.startswith(prefix):
                continue
            i = self._index.get(key[len(prefix) :])
            if i is None:
                continue
            nan = np.nan
            self.severity[i] = np.int8(s.severity)
            self._pending[i] = np.int8(s.severity)
            self.value[i] = nan if s.value is None else s.value
            self.since[i] = nan if s.since is None else s.since
            self.acknowledged[i] = s.acknowledged
            self.shelved_until[i] = nan if s.shelved_until is None else s.shelved_until
            self.shelved_at[i] = nan if s.shelved_at is None else s.shelved_at
            self.shelved_by[i] = s.shelved_by
            self.shelve_reason[i] = s.shelve_reason
            self.out_of_service[i] = s.out_of_service
            self.oos_since[i] = nan if s.out_of_service_since is None else s.out_of_service_since
            self.oos_by[i] = s.out_of_service_by
            self.oos_reason[i] = s.out_of_service_reason
            restored += 1
        return restored

    # -- views ----------------------------------------------------------------------------------------
    def state_codes(self) -> npt.NDArray[np.int8]:
        """Every channel's :class:`AlarmState` as an index into :data:`STATES` (vectorised)."""
        active = self.severity != 0
        unacked = ~self.acknowledged
        codes = np.full(self.channels.size, _CODE[AlarmState.NORMAL], dtype=np.int8)
        codes[active & unacked] = _CODE[AlarmState.UNACKNOWLEDGED]
        codes[active & ~unacked] = _CODE[AlarmState.ACKNOWLEDGED]
        codes[~active & unacked] = _CODE[AlarmState.RETURNED_UNACKNOWLEDGED]
        codes[self.designed & (active | unacked)] = _CODE[AlarmState.SUPPRESSED]
        codes[self.shelved] = _CODE[AlarmState.SHELVED]
        codes[self.out_of_service] = _CODE[AlarmState.OUT_OF_SERVICE]
        return codes

    def listed(self) -> list[ActiveAlarm]:
        """Every alarm the alarm pages show: standing ones, shelved, out of service and suppressed ones."""
        codes = self.state_codes()
        return [self._active(i, STATES[codes[i]]) for i in np.flatnonzero(codes != _CODE[AlarmState.NORMAL])]

    def active(self, *, include_shelved: bool = False) -> list[ActiveAlarm]:
        """Alarms in the list: active ones and cleared-but-unacknowledged ones.

        Without ``include_shelved`` only the standing alarms the operator sees (hidden ones
        left out); with it, hidden alarms that are active or unacknowledged too.
        """
        codes = self.state_codes()
        rows = np.flatnonzero((self.severity != 0) | ~self.acknowledged)
        out = []
        for i in rows:
            state = STATES[codes[i]]
            if not include_shelved and state not in STANDING_STATES:
                continue
            out.append(self._active(i, state))
        return out

    def _active(self, i: int | np.integer[Any], state: AlarmState) -> ActiveAlarm:
        override = self.group_override[i]
        return ActiveAlarm(
            key=f"{self.name}:{self.channels[i]}",
            channel=str(self.channels[i]),
            condition=self._condition(int(self.severity[i])),
            severity=int(self.severity[i]),
            priority=self._priority(int(self.severity[i])),
            value=None if np.isnan(self.value[i]) else float(self.value[i]),
            group=override if override is not None else self.groups[i],
            since=_ts(self.since[i]) or _EPOCH,
            acknowledged=bool(self.acknowledged[i]),
            shelved_until=_ts(self.shelved_until[i]),
            chattering=bool(self.chattering[i]),
            state=state,
            shelved_at=_ts(self.shelved_at[i]),
            shelved_by=self.shelved_by[i],
            shelve_reason=self.shelve_reason[i],
            out_of_service=bool(self.out_of_service[i]),
            out_of_service_since=_ts(self.oos_since[i]),
            out_of_service_by=self.oos_by[i],
            out_of_service_reason=self.oos_reason[i],
            suppressed=bool(self.designed[i]),
            suppressed_reason=self.designed_reason[i],
            cause=self.cause[i],
        )

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
        override = self.group_override[i]
        return AlarmEvent(
            time=time,
            transition=kind,
            monitor=self.name,
            channel=str(self.channels[i]),
            condition=self._condition(sev),
            severity=sev,
            priority=self._priority(sev),
            value=None if np.isnan(self.value[i]) else float(self.value[i]),
            group=override if override is not None else self.groups[i],
            shelved=bool(self.shelved[i]),
            suppressed=suppressed or bool(self.designed[i]),
            actor=actor,
            reason=reason,
            out_of_service=bool(self.out_of_service[i]),
            cause=self.cause[i],
        )


def group_alarms(alarms: Sequence[ActiveAlarm]) -> list[AlarmGroup]:
    """Fold alarms by group (alarms without a group stand alone), most urgent group first.

    In a group the cause heads (an alarm that other members name as their cause, else one with
    no cause), then the most urgent, earliest; the consequences follow.
    """
    buckets: dict[Any, list[ActiveAlarm]] = {}
    for alarm in alarms:
        buckets.setdefault(alarm.group if alarm.group is not None else ("", alarm.key), []).append(alarm)
    groups = []
    for members in buckets.values():
        causes = {a.cause for a in members if a.cause is not None}
        members.sort(
            key=lambda a: (a.key not in causes, a.cause is not None, a.priority, -abs(a.severity), a.since, a.key)
        )
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
