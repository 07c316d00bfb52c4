"""Time helpers used across OpenDSO: one rule for parsing times, one epoch conversion, one back-off.

* :func:`parse_time` reads ISO 8601 text (``Z`` or an offset required: a time without a zone is
  refused, never guessed, because a control room spans daylight-saving changes) and returns UTC.
* :func:`to_epoch_us` / :func:`from_epoch_us` convert between timezone-aware datetimes and the
  integer microseconds since the Unix epoch that the store keeps.
* :class:`Backoff` is the exponential reconnect delay of every client (field protocols, syslog).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from opendso.errors import InputError

__all__ = ["EPOCH", "Backoff", "from_epoch_us", "parse_time", "require_aware", "to_epoch_us"]

#: The Unix epoch, timezone-aware.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def require_aware(value: datetime, what: str) -> datetime:
    """Return ``value`` in UTC; raise :class:`InputError` naming ``what`` when it is naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"{what}: naive time {value.isoformat()}: give a time zone (e.g. {value.isoformat()}Z)")
    return value.astimezone(UTC)


def parse_time(text: str, what: str) -> datetime:
    """Parse ISO 8601 ``text`` with a time zone into an aware UTC datetime.

    ``what`` names the input in the error (a flag, a field, a payload key). Raises
    :class:`InputError` for text that is not ISO 8601 and for a time without a zone.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{what}: {text!r} is not an ISO 8601 time (e.g. 2026-11-23T08:00Z)") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"{what}: {text!r} has no time zone (e.g. {text.strip()}Z)")
    return value.astimezone(UTC)


def to_epoch_us(value: datetime) -> int:
    """Return the microseconds since the Unix epoch of an aware datetime (naive: :class:`InputError`)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"naive datetime {value.isoformat()}: give a timezone-aware time (UTC)")
    return (value - EPOCH) // _ONE_US


def from_epoch_us(us: int) -> datetime:
    """Return the aware UTC datetime of ``us`` microseconds since the Unix epoch."""
    return EPOCH + timedelta(microseconds=int(us))


@dataclass
class Backoff:
    """Exponential reconnect delay: ``first`` seconds, doubled after each failure up to ``maximum``.

    ``next()`` returns the delay to wait now and doubles the following one; ``reset()`` after a
    success starts again from ``first``.
    """

    first: float
    maximum: float
    _delay: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.maximum:
            raise ValueError(f"back-off: need 0 < first ({self.first}) <= maximum ({self.maximum})")
        self._delay = self.first

    @property
    def current(self) -> float:
        """The delay :meth:`next` will return."""
        return self._delay

    def next(self) -> float:
        """Return the delay to wait before the next attempt, and double the one after."""
        delay = self._delay
        self._delay = min(self._delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Start again from ``first`` (after a successful connection)."""
        self._delay = self.first
