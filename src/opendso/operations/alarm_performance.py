"""Alarm system performance figures of ISA-18.2 clause 16 (monitoring and assessment) over a time window.

The figures are those ANSI/ISA-18.2-2016 clause 16 (and IEC 62682:2014 clause 16) asks an
alarm system to be monitored by, with the targets of its performance-metrics table and EEMUA
191 (3rd edition):

- **annunciated alarms per operator position per 10 minutes**, average and maximum: about 1 is
  "very likely to be acceptable", 2 the most that is manageable;
- **alarm floods**: 10-minute periods with more than 10 annunciated alarms (ISA-18.2's flood
  threshold); the periods are aligned on the window's start, adjacent flood periods are merged,
  and the share of 10-minute periods in flood is given (target: under about 1 %);
- **the ten most frequent alarms** and their share of all annunciations (target: a few percent);
- **stale alarms**: alarms standing continuously for more than 24 hours at the end of the window
  (target: fewer than 5 on any day);
- **chattering alarms** in the window (target: none) and the **priority distribution** of the
  annunciated alarms (target about 80 % low, 15 % medium, 5 % high).

An *annunciated* alarm is a ``raised`` or ``escalated`` transition (a new, or a worse, alarm)
that was not shelved, suppressed (by design or as chattering) or out of service: what the
operator was actually asked to act on, as ISA-18.2 counts it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

#: ISA-18.2: a flood is more than 10 annunciated alarms in 10 minutes.
FLOOD_ALARMS = 10
PERIOD_S = 600.0
#: EEMUA 191 / ISA-18.2 targets per operator position and 10 minutes.
TARGET_PER_10_MIN = 1.0
MAX_MANAGEABLE_PER_10_MIN = 2.0
#: ISA-18.2: a stale alarm stands for more than 24 hours.
STALE_AFTER = timedelta(hours=24)
ANNUNCIATING = frozenset({"raised", "escalated"})


@dataclass(frozen=True)
class JournalEntry:
    """One alarm transition of the event log, as the performance figures need it."""

    time: datetime
    transition: str
    key: str
    priority: str
    announced: bool


def journal_entry(ts: datetime, payload: Mapping[str, Any]) -> JournalEntry:
    """Build a :class:`JournalEntry` from an event-log alarm event's time and payload."""
    transition = str(payload.get("transition", ""))
    hidden = bool(payload.get("shelved")) or bool(payload.get("suppressed")) or bool(payload.get("out_of_service"))
    return JournalEntry(
        time=ts,
        transition=transition,
        key=str(payload.get("key", "")),
        priority=str(payload.get("priority", "")),
        announced=transition in ANNUNCIATING and not hidden,
    )


def performance(
    entries: Iterable[JournalEntry],
    *,
    start: datetime,
    end: datetime,
    standing_since: Mapping[str, datetime],
    positions: int = 1,
) -> dict[str, Any]:
    """Return the performance figures of the window ``[start, end)`` (see the module docstring).

    ``standing_since`` maps each alarm standing at ``end`` to the time it was raised (for the
    stale alarms); ``positions`` is the number of operator positions sharing the alarms.
    """
    if end <= start:
        raise ValueError(f"the window must end after it starts ({start.isoformat()} .. {end.isoformat()})")
    if positions < 1:
        raise ValueError(f"positions must be at least 1, got {positions}")
    span_s = (end - start).total_seconds()
    n_periods = max(1, math.ceil(span_s / PERIOD_S - 1e-9))
    announced: list[JournalEntry] = []
    chattering: Counter[str] = Counter()
    for e in entries:
        if not start <= e.time < end:
            continue
        if e.announced:
            announced.append(e)
        elif e.transition == "chattering":
            chattering[e.key] += 1
    offsets = np.array([(e.time - start).total_seconds() for e in announced], dtype=float)
    bins = np.minimum((offsets // PERIOD_S).astype(np.int64), n_periods - 1)
    per_period = np.bincount(bins, minlength=n_periods) if bins.size else np.zeros(n_periods, dtype=np.int64)
    flooded = per_period > FLOOD_ALARMS
    floods: list[dict[str, Any]] = []
    k = 0
    while k < n_periods:
        if not flooded[k]:
            k += 1
            continue
        first = k
        while k < n_periods and flooded[k]:
            k += 1
        floods.append(
            {
                "start": (start + timedelta(seconds=first * PERIOD_S)).isoformat(),
                "end": min(end, start + timedelta(seconds=k * PERIOD_S)).isoformat(),
                "alarms": int(per_period[first:k].sum()),
                "peak_per_10_min": int(per_period[first:k].max()),
            }
        )
    total = len(announced)
    counts = Counter(e.key for e in announced)
    top = counts.most_common(10)
    priorities = Counter(e.priority for e in announced)
    stale = [
        {"key": key, "since": since.isoformat(), "hours": round((end - since).total_seconds() / 3600, 2)}
        for key, since in sorted(standing_since.items(), key=lambda item: item[1])
        if end - since > STALE_AFTER
    ]
    average = total / (span_s / PERIOD_S)
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "positions": positions,
        "annunciated": total,
        "per_10_min": {
            "average_per_position": round(average / positions, 3),
            "max_per_position": round(float(per_period.max()) / positions, 3),
            "target": TARGET_PER_10_MIN,
            "max_manageable": MAX_MANAGEABLE_PER_10_MIN,
        },
        "floods": {
            "threshold": FLOOD_ALARMS,
            "periods": floods,
            "flood_10_min_periods": int(flooded.sum()),
            "total_10_min_periods": n_periods,
            "percent_of_time": round(100.0 * float(flooded.sum()) / n_periods, 2),
        },
        "top_ten": [
            {"key": key, "count": n, "percent": round(100.0 * n / total, 2) if total else 0.0} for key, n in top
        ],
        "top_ten_percent": round(100.0 * sum(n for _, n in top) / total, 2) if total else 0.0,
        "stale": stale,
        "chattering": [{"key": key, "episodes": n} for key, n in chattering.most_common()],
        "priority_distribution": {p: int(priorities.get(p, 0)) for p in ("critical", "high", "medium", "low")},
    }


def stale_alarms(standing_since: Mapping[str, datetime], at: datetime) -> list[str]:
    """Keys of the alarms standing for more than 24 hours at ``at``."""
    return sorted(k for k, since in standing_since.items() if at - since > STALE_AFTER)


def annunciations(entries: Sequence[JournalEntry]) -> list[JournalEntry]:
    """The annunciated entries (see the module docstring), in order."""
    return [e for e in entries if e.announced]


__all__ = [
    "FLOOD_ALARMS",
    "JournalEntry",
    "annunciations",
    "journal_entry",
    "performance",
    "stale_alarms",
]
