"""UFTP's calendar: Periods (days in the market's time zone), ISP numbers and durations.

A UFTP message names a ``Period`` (a day in its ``TimeZone``) and ISPs by ``Start`` number,
"the first ISP of a day has number 1" (specification, message catalog, ISP elements). A day has
24 h / ISP-Duration ISPs, 92 or 100 on the days the clocks change (chapter "Message validation",
"ISPs out of bounds"). OpenDSO's own records use aware UTC times; these functions convert.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opendso.errors import InputError
from opendso.markets.model import ISP, check_aware

__all__ = [
    "duration_of",
    "isp_number",
    "isp_time",
    "isps_in_period",
    "period_of",
    "period_start",
    "same_offsets",
    "zone",
]


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``, or :class:`InputError`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError(f"time zone {name!r} is not an IANA time zone") from exc


def period_start(period: date, tz: ZoneInfo) -> datetime:
    """The start of the Period (local midnight) in UTC."""
    return datetime(period.year, period.month, period.day, tzinfo=tz).astimezone(UTC)


def isps_in_period(period: date, tz: ZoneInfo, isp: timedelta = ISP) -> int:
    """How many ISPs the Period has (96 on a normal day of 15-minute ISPs, 92 or 100 when clocks change)."""
    return int((period_start(period + timedelta(days=1), tz) - period_start(period, tz)) // isp)


def isp_time(period: date, start: int, tz: ZoneInfo, isp: timedelta = ISP) -> datetime:
    """The UTC start time of ISP number ``start`` (1-based) of the Period."""
    return period_start(period, tz) + (start - 1) * isp


def period_of(time: datetime, tz: ZoneInfo) -> date:
    """The Period (local day) ``time`` falls in."""
    return check_aware("time", time).astimezone(tz).date()


def isp_number(time: datetime, tz: ZoneInfo, isp: timedelta = ISP) -> tuple[date, int]:
    """The Period and ISP number of the ISP starting at ``time``, or :class:`InputError` if not on an ISP boundary."""
    t = check_aware("ISP time", time)
    period = period_of(t, tz)
    offset = t - period_start(period, tz)
    if offset % isp:
        raise InputError(f"ISP time {t.isoformat()} is not on an ISP boundary ({isp})")
    return period, int(offset // isp) + 1


def duration_of(value: Any) -> timedelta | None:
    """An xsdata ``XmlDuration`` as a timedelta; None for one with years or months (no fixed length)."""
    if getattr(value, "years", None) or getattr(value, "months", None):
        return None
    seconds = (
        (getattr(value, "days", None) or 0) * 86400
        + (getattr(value, "hours", None) or 0) * 3600
        + (getattr(value, "minutes", None) or 0) * 60
        + float(getattr(value, "seconds", None) or 0)
    )
    return -timedelta(seconds=seconds) if getattr(value, "negative", False) else timedelta(seconds=seconds)


def same_offsets(name: str, market: ZoneInfo, period: date) -> bool:
    """Whether zone ``name`` has the market zone's UTC offsets over the Period ("TimeZone rejected" otherwise)."""
    try:
        other = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    for hour in (0, 12, 23):
        moment = datetime(period.year, period.month, period.day, hour, tzinfo=UTC)
        if moment.astimezone(other).utcoffset() != moment.astimezone(market).utcoffset():
            return False
    return True
