"""IEEE 1366-2022 reliability indices from an outage CSV: what ``opendso reliability`` reports.

The contract (issue 10, ``opendso reliability``):

* **Input.** A CSV with the columns ``event,start,end,customers,feeder,cause`` (more columns are
  ignored, a UTF-8 byte-order mark is accepted). Times are ISO 8601 in UTC (``Z``, an offset,
  or no zone at all: the file is declared UTC, so a time without a zone is read as UTC, not
  guessed). An event restored in steps is several rows with one event id, each row the
  customers restored at its ``end``; an event *begins* at the earliest ``start`` of its rows.
  Every problem raises one :class:`~opendso.errors.OutageFileError` naming the file, the data
  row (1-based, the header not counted) and the field: a missing column, a malformed time, an
  ``end`` before its ``start``, customers that are not a non-negative integer, an empty event id.
* **Momentary or sustained** (IEEE 1366 definitions *momentary interruption* and *sustained
  interruption*, with the 5-minute boundary): a row lasting 5 minutes or less (``end - start
  <= 300 s``) is one momentary interruption event of its customers, a longer row a sustained
  interruption of its customers.
* **Indices** over the events that *began* in ``[start, end)``, with ``N_T`` the total
  customers served (IEEE 1366 sustained-interruption and momentary indices):

  - SAIFI = sum(N_i) / N_T over sustained rows (customers interrupted);
  - SAIDI = sum(r_i * N_i) / N_T in minutes over sustained rows (customer minutes of
    interruption / customers served);
  - CAIDI = SAIDI / SAIFI (minutes; ``None`` when SAIFI is zero);
  - ASAI = (N_T * T - sum(r_i * N_i)) / (N_T * T), T the period's length (customer hours
    of service available over customer hours demanded);
  - MAIFI_E = sum(IM_E * N_mi) / N_T over momentary rows (each row one momentary event);
  - customer minutes = sum(r_i * N_i) over sustained rows; energy not supplied is ``None``
    (the CSV carries no energy data).

  CAIFI and CTAIDI need customers known individually (which customers were interrupted at
  least once); the CSV gives counts only, so they are not reported from it. The outage records
  in the database know them where an outage names its loads (:mod:`opendso.operations.outages`):
  with ``CN`` the distinct customers with at least one sustained interruption in the period,

  - CAIFI = sum(N_i) / CN over sustained rows (IEEE 1366-2022, 4.3.5: customer interruptions
    per customer interrupted at least once);
  - CTAIDI = sum(r_i * N_i) / CN in minutes (IEEE 1366-2022, 4.3.4: customer minutes per
    customer interrupted at least once).
* **Major event days** (IEEE 1366 definition *major event day*, the 2.5 beta method):
  daily SAIDI is the sum of the sustained rows' customer minutes on the calendar day (in the
  zone ``tz``) on which their event began, divided by N_T. T_MED for ``[start, end)`` comes
  from the daily SAIDI of the events that began in the five years before ``start`` (all the
  history before ``start`` if it is shorter): alpha and beta are the mean and the sample
  standard deviation (n - 1) of ln(daily SAIDI) over the days with a non-zero daily SAIDI,
  T_MED = exp(alpha + 2.5 beta). With fewer than two such days beta is undefined: T_MED is
  ``None`` and no day is a major event day. A major event day is a day of ``[start, end)``
  whose daily SAIDI exceeds T_MED; the indices "without MED" leave out every event (momentary
  rows included) that began on one.

Everything here is a pure function on arrays: nothing is stored, nothing is printed.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pandas as pd

from opendso.errors import InputError, OutageFileError
from opendso.timeutil import to_epoch_us

__all__ = [
    "COLUMNS",
    "MOMENTARY_MAX_S",
    "Indices",
    "OutageTable",
    "ReliabilityReport",
    "compute_indices",
    "daily_saidi",
    "indices_by_feeder",
    "major_event_days",
    "read_outage_csv",
    "reliability_report",
    "t_med",
    "t_med_for_period",
    "zone_of",
]

#: The columns an outage CSV must have (in any order; others are ignored).
COLUMNS = ("event", "start", "end", "customers", "feeder", "cause")
#: IEEE 1366: an interruption of 5 minutes or less is momentary, a longer one sustained.
MOMENTARY_MAX_S = 300
_MOMENTARY_MAX_US = MOMENTARY_MAX_S * 1_000_000
_US_PER_MIN = 60_000_000
#: Customers per row above this are refused: no distribution system has them, and the sums
#: stay exact in float64.
_MAX_CUSTOMERS = 10**12
_DIGITS = re.compile(r"[0-9]+")
#: The characters of an ISO 8601 time; checked first because ``datetime.fromisoformat`` stops
#: at a NUL and would accept ``"2026-01-02T00:00Z\\x00junk"``.
_TIME_CHARS = re.compile(r"[0-9TtZz:.,+\- ]+")


@dataclass(frozen=True)
class OutageTable:
    """The rows of an outage CSV as arrays (one entry per row, in file order).

    ``start_us``/``end_us`` are epoch microseconds (UTC), ``customers`` int64; ``event``,
    ``feeder`` and ``cause`` are object arrays of str.
    """

    event: npt.NDArray[np.object_]
    start_us: npt.NDArray[np.int64]
    end_us: npt.NDArray[np.int64]
    customers: npt.NDArray[np.int64]
    feeder: npt.NDArray[np.object_]
    cause: npt.NDArray[np.object_]
    #: each row's data row number in its file (1-based, the header not counted), when read from one
    row: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return int(self.start_us.size)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, datetime, datetime, int, str, str]]) -> OutageTable:
        """Build a table from ``(event, start, end, customers, feeder, cause)`` tuples (aware times)."""
        listed = list(rows)
        return cls(
            event=np.array([r[0] for r in listed], dtype=object),
            start_us=np.array([to_epoch_us(r[1]) for r in listed], dtype=np.int64),
            end_us=np.array([to_epoch_us(r[2]) for r in listed], dtype=np.int64),
            customers=np.array([r[3] for r in listed], dtype=np.int64),
            feeder=np.array([r[4] for r in listed], dtype=object),
            cause=np.array([r[5] for r in listed], dtype=object),
        )

    def event_begin_us(self) -> npt.NDArray[np.int64]:
        """Return, for each row, when its event began (the earliest ``start`` of the event's rows)."""
        if not len(self):
            return np.zeros(0, dtype=np.int64)
        _, inverse = np.unique(self.event.astype(str), return_inverse=True)
        begin = np.full(int(inverse.max()) + 1, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(begin, inverse, self.start_us)
        return begin[inverse]

    def momentary(self) -> npt.NDArray[np.bool_]:
        """Return which rows are momentary interruptions (5 minutes or less)."""
        return np.asarray((self.end_us - self.start_us) <= _MOMENTARY_MAX_US)

    def select(self, mask: npt.NDArray[np.bool_]) -> OutageTable:
        """Return the rows where ``mask`` is true."""
        return OutageTable(
            event=self.event[mask],
            start_us=self.start_us[mask],
            end_us=self.end_us[mask],
            customers=self.customers[mask],
            feeder=self.feeder[mask],
            cause=self.cause[mask],
            row=None if self.row is None else self.row[mask],
        )


def zone_of(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name``; raise :class:`InputError` naming ``--tz`` when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"--tz: {name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None


def _parse_file_time(text: str, path: str, row: int, field: str) -> int:
    stripped = text.strip()
    if not stripped or len(stripped) > 64 or not _TIME_CHARS.fullmatch(stripped):
        raise OutageFileError(path, f"{text[:40]!r} is not an ISO 8601 time", row=row, field=field)
    try:
        value = datetime.fromisoformat(stripped)
    except ValueError:
        raise OutageFileError(
            path, f"{stripped!r} is not an ISO 8601 time (e.g. 2026-11-23T08:00Z)", row=row, field=field
        ) from None
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)  # the file's times are declared UTC
    return to_epoch_us(value)


def _parse_customers(text: str, path: str, row: int) -> int:
    stripped = text.strip()
    if not _DIGITS.fullmatch(stripped):
        raise OutageFileError(
            path, f"{text[:40]!r} is not a non-negative whole number of customers", row=row, field="customers"
        )
    value = int(stripped)
    if value > _MAX_CUSTOMERS:
        raise OutageFileError(path, f"{value} customers is more than any system has", row=row, field="customers")
    return value


def read_outage_csv(path: Path | str) -> OutageTable:
    """Return the rows of the outage CSV at ``path``, checked.

    Raises :class:`OutageFileError` naming the file, the data row (1-based) and the field at the
    first problem; an unreadable or non-UTF-8 file names the file (and the row where known).
    """
    name = str(path)
    events: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    customers: list[int] = []
    feeders: list[str] = []
    causes: list[str] = []
    numbers: list[int] = []
    row = 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise OutageFileError(name, f"the file is empty: it needs the header {','.join(COLUMNS)}")
            names = [h.strip().lower() for h in header]
            missing = [c for c in COLUMNS if c not in names]
            if missing:
                raise OutageFileError(
                    name,
                    f"missing column(s) {', '.join(missing)} (the header needs {','.join(COLUMNS)})",
                    field=missing[0],
                )
            at = {c: names.index(c) for c in COLUMNS}
            width = max(at.values()) + 1
            for row, fields in enumerate(reader, start=1):
                if not fields or all(not f.strip() for f in fields):
                    continue  # a blank line
                if len(fields) < width:
                    short = next(c for c in COLUMNS if at[c] >= len(fields))
                    raise OutageFileError(name, f"the row has {len(fields)} field(s), too few", row=row, field=short)
                event = fields[at["event"]].strip()
                if not event:
                    raise OutageFileError(name, "empty event id", row=row, field="event")
                start = _parse_file_time(fields[at["start"]], name, row, "start")
                end = _parse_file_time(fields[at["end"]], name, row, "end")
                if end < start:
                    raise OutageFileError(
                        name,
                        f"end {fields[at['end']].strip()} is before start {fields[at['start']].strip()}",
                        row=row,
                        field="end",
                    )
                events.append(event)
                starts.append(start)
                ends.append(end)
                customers.append(_parse_customers(fields[at["customers"]], name, row))
                feeders.append(fields[at["feeder"]].strip())
                causes.append(fields[at["cause"]].strip())
                numbers.append(row)
    except OSError as exc:
        raise OutageFileError(name, f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise OutageFileError(name, "is not UTF-8 text") from None  # read ahead in blocks: no row
    except csv.Error as exc:
        raise OutageFileError(name, f"is not CSV: {exc}", row=row + 1) from None
    return OutageTable(
        event=np.array(events, dtype=object),
        start_us=np.array(starts, dtype=np.int64),
        end_us=np.array(ends, dtype=np.int64),
        customers=np.array(customers, dtype=np.int64),
        feeder=np.array(feeders, dtype=object),
        cause=np.array(causes, dtype=object),
        row=np.array(numbers, dtype=np.int64),
    )


@dataclass(frozen=True)
class Indices:
    """IEEE 1366 indices of one set of events over one period (``None`` where undefined)."""

    saidi_min: float
    saifi: float
    caidi_min: float | None
    asai: float
    maifi_e: float
    customer_minutes: float
    #: customer interruptions: the customers of the sustained rows, summed (SAIFI's numerator)
    customers_interrupted: float = 0.0


def _check_served(customers_served: int) -> None:
    if customers_served <= 0:
        raise InputError(f"customers served: {customers_served} must be a positive number of customers")


def compute_indices(
    table: OutageTable,
    *,
    customers_served: int,
    start: datetime,
    end: datetime,
    exclude_days: Iterable[date] = (),
    tz: ZoneInfo | None = None,
) -> Indices:
    """Return SAIDI, SAIFI, CAIDI, ASAI, MAIFI_E and customer minutes over events that began in ``[start, end)``.

    Implements the IEEE 1366 sustained-interruption indices (SAIFI, SAIDI, CAIDI, ASAI) on
    sustained rows and MAIFI_E on momentary rows (see the module docstring for the formulas).
    Events that began on a day of ``exclude_days`` (calendar days in ``tz``, default UTC) are
    left out: the indices without major event days.
    """
    _check_served(customers_served)
    start_us, end_us = to_epoch_us(start), to_epoch_us(end)
    if end_us <= start_us:
        raise InputError(f"the period's end {end.isoformat()} must be after its start {start.isoformat()}")
    begin = table.event_begin_us()
    keep = (begin >= start_us) & (begin < end_us)
    excluded = set(exclude_days)
    if excluded and keep.any():
        days = _local_days(begin, tz or ZoneInfo("UTC"))
        keep &= np.array([d not in excluded for d in days], dtype=bool)
    momentary = table.momentary()
    sustained = keep & ~momentary
    n_t = float(customers_served)
    n_i = table.customers.astype(np.float64)
    minutes = (table.end_us - table.start_us).astype(np.float64) / _US_PER_MIN
    customer_minutes = float(np.sum(n_i[sustained] * minutes[sustained]))
    interrupted = float(np.sum(n_i[sustained]))
    saidi = customer_minutes / n_t
    saifi = interrupted / n_t
    period_min = (end_us - start_us) / _US_PER_MIN
    asai = (n_t * period_min - customer_minutes) / (n_t * period_min)
    maifi_e = float(np.sum(n_i[keep & momentary])) / n_t
    return Indices(
        saidi_min=saidi,
        saifi=saifi,
        caidi_min=saidi / saifi if saifi > 0 else None,
        asai=asai,
        maifi_e=maifi_e,
        customer_minutes=customer_minutes,
        customers_interrupted=interrupted,
    )


def _local_days(epoch_us: npt.NDArray[np.int64], zone: ZoneInfo) -> list[date]:
    """Return the calendar day in ``zone`` of each instant (vectorised through pandas)."""
    if not epoch_us.size:
        return []
    # microsecond resolution: nanoseconds would refuse years before 1677 or after 2262
    local = pd.DatetimeIndex(epoch_us.astype("datetime64[us]")).tz_localize(UTC).tz_convert(zone)
    return list(local.date)


def daily_saidi(
    table: OutageTable, *, customers_served: int, start: datetime, end: datetime, tz: ZoneInfo
) -> dict[date, float]:
    """Return the daily SAIDI (minutes) of each day with sustained customer minutes, events begun in ``[start, end)``.

    IEEE 1366's SAIDI/day: each sustained row's customer minutes count on the calendar day
    (in ``tz``) on which its event began, divided by the customers served. Days without
    sustained interruptions are absent (their daily SAIDI is zero).
    """
    _check_served(customers_served)
    begin = table.event_begin_us()
    keep = (begin >= to_epoch_us(start)) & (begin < to_epoch_us(end)) & ~table.momentary()
    cmi = table.customers[keep].astype(np.float64) * (table.end_us[keep] - table.start_us[keep]) / _US_PER_MIN
    out: dict[date, float] = {}
    for day, value in zip(_local_days(begin[keep], tz), cmi, strict=True):
        out[day] = out.get(day, 0.0) + float(value)
    return {day: value / customers_served for day, value in sorted(out.items())}


def t_med(daily: Iterable[float]) -> float | None:
    """Return T_MED = exp(alpha + 2.5 beta) from daily SAIDI values (IEEE 1366 2.5 beta method).

    alpha and beta are the mean and the sample standard deviation (n - 1) of ln(daily SAIDI)
    over the non-zero values; ``None`` with fewer than two of them (beta undefined).
    """
    values = np.array([v for v in daily if v > 0], dtype=np.float64)
    if values.size < 2:
        return None
    logs = np.log(values)
    alpha = float(np.mean(logs))
    beta = float(np.std(logs, ddof=1))
    return math.exp(alpha + 2.5 * beta)


def _years_before(moment: datetime, zone: ZoneInfo, years: int) -> datetime:
    local = moment.astimezone(zone)
    if local.year - years < 1:
        return datetime(1, 1, 2, tzinfo=UTC)  # all the history there can be
    try:
        earlier = local.replace(year=local.year - years)
    except ValueError:  # 29 February
        earlier = local.replace(year=local.year - years, day=28)
    return earlier.astimezone(UTC)


def t_med_for_period(table: OutageTable, *, customers_served: int, start: datetime, tz: ZoneInfo) -> float | None:
    """Return T_MED for a period beginning at ``start``: from the daily SAIDI of the five years before it.

    IEEE 1366's 2.5 beta method uses the five most recent years of daily SAIDI (all that
    exists when fewer); here they are the events that began in ``[start - 5 years, start)``.
    """
    history = daily_saidi(table, customers_served=customers_served, start=_years_before(start, tz, 5), end=start, tz=tz)
    return t_med(history.values())


def major_event_days(
    table: OutageTable, *, customers_served: int, start: datetime, end: datetime, tz: ZoneInfo, threshold: float | None
) -> list[date]:
    """Return the days of ``[start, end)`` whose daily SAIDI exceeds ``threshold`` (T_MED), in order."""
    if threshold is None:
        return []
    daily = daily_saidi(table, customers_served=customers_served, start=start, end=end, tz=tz)
    return [day for day, value in daily.items() if value > threshold]


@dataclass(frozen=True)
class ReliabilityReport:
    """What ``opendso reliability --json`` prints: indices with and without major event days.

    ``distinct_customers`` (the customers with at least one sustained interruption, known only
    from records that name the customers individually) adds CAIFI and CTAIDI.
    """

    indices: Indices
    without_med: Indices
    t_med_min: float | None
    major_event_days: list[date]
    ens_mwh: float | None = None
    distinct_customers: int | None = None

    @property
    def caifi(self) -> float | None:
        """CAIFI (IEEE 1366-2022, 4.3.5): customer interruptions / distinct customers interrupted."""
        if not self.distinct_customers:
            return None
        return self.indices.customers_interrupted / self.distinct_customers

    @property
    def ctaidi_min(self) -> float | None:
        """CTAIDI (IEEE 1366-2022, 4.3.4): customer minutes of interruption / distinct customers interrupted."""
        if not self.distinct_customers:
            return None
        return self.indices.customer_minutes / self.distinct_customers

    def to_json(self) -> dict[str, Any]:
        """Return the report with exactly the keys of the command-line contract (and CAIFI, CTAIDI when known)."""
        i, w = self.indices, self.without_med
        extra: dict[str, Any] = {}
        if self.distinct_customers is not None:
            extra = {
                "caifi": self.caifi,
                "ctaidi_min": self.ctaidi_min,
                "customers_interrupted_distinct": self.distinct_customers,
            }
        return {
            "saidi_min": i.saidi_min,
            "saifi": i.saifi,
            "caidi_min": i.caidi_min,
            "asai": i.asai,
            "maifi_e": i.maifi_e,
            "customer_minutes": i.customer_minutes,
            "ens_mwh": self.ens_mwh,
            "t_med_min": self.t_med_min,
            "major_event_days": [d.isoformat() for d in self.major_event_days],
            "without_med": {
                "saidi_min": w.saidi_min,
                "saifi": w.saifi,
                "caidi_min": w.caidi_min,
                "maifi_e": w.maifi_e,
            },
            **extra,
        }


def reliability_report(
    table: OutageTable, *, customers_served: int, start: datetime, end: datetime, tz: ZoneInfo | None = None
) -> ReliabilityReport:
    """Return the indices over ``[start, end)``, T_MED, the major event days and the indices without them."""
    zone = tz or ZoneInfo("UTC")
    indices = compute_indices(table, customers_served=customers_served, start=start, end=end, tz=zone)
    threshold = t_med_for_period(table, customers_served=customers_served, start=start, tz=zone)
    meds = major_event_days(
        table, customers_served=customers_served, start=start, end=end, tz=zone, threshold=threshold
    )
    without = compute_indices(
        table, customers_served=customers_served, start=start, end=end, exclude_days=meds, tz=zone
    )
    return ReliabilityReport(indices=indices, without_med=without, t_med_min=threshold, major_event_days=meds)


def indices_by_feeder(
    table: OutageTable,
    *,
    customers_served: Mapping[str, int],
    start: datetime,
    end: datetime,
    exclude_days: Iterable[date] = (),
    tz: ZoneInfo | None = None,
) -> dict[str, Indices]:
    """Return the indices of each feeder of ``customers_served`` (its own N_T), over events begun in ``[start, end)``.

    Major event days are a system classification (IEEE 1366 finds them on system daily
    SAIDI): pass the system's in ``exclude_days`` for the per-feeder indices without them.
    Rows of feeders not in ``customers_served`` raise :class:`InputError` (their N_T is unknown).
    """
    known = set(customers_served)
    unknown = sorted({str(f) for f in table.feeder} - known)
    if unknown:
        raise InputError(f"feeder(s) without customers served: {', '.join(unknown[:10])}")
    days = list(exclude_days)
    return {
        feeder: compute_indices(
            table.select(np.asarray(table.feeder == feeder, dtype=bool)),
            customers_served=served,
            start=start,
            end=end,
            exclude_days=days,
            tz=tz,
        )
        for feeder, served in customers_served.items()
    }
