"""Baselines: what a participant would have consumed without the event, per interval, with its uncertainty.

A baseline is the reference every delivery of flexibility is measured against (a demand-response
event, a UFTP FlexOrder, a pilot): delivered = measured - baseline. All values are in W in UFTP's
sign (consumption positive, production negative), per ISP (15 minutes), for several participants
(columns) at once; every method is vectorised over intervals and participants.

The methods, and where they come from:

- **High X of Y** (:func:`high_x_of_y_baseline`), the customer baseline load (CBL) of the North
  American markets: of the ``Y`` most recent *eligible* days before the event day (same day type,
  weekday or weekend/holiday; event days and days flagged excluded skipped; only days within
  ``lookback_days``), take the ``X`` days with the highest consumption over the event window and
  average them per interval. The published rules this follows: PG&E's customer description of its
  CBL (powersaver.pge.com, FAQ: the 10 previous weekdays, or 5 weekend days/holidays, without
  events or outages; the 5, or 3, with the highest use averaged (the weekend average weighted
  there, plain here); then a same-day adjustment), the rule of NYISO's "average day" CBL (high 5 of
  10 weekdays, weather adjustment capped at +-20 %); PJM's
  Economic Load Response CBL (PJM Manual 11, Energy & Ancillary Services Market Operations, the
  customer baseline load of Economic Load Response: high 4 of 5 weekdays in a 45-day window with a
  same-day additive adjustment); CAISO's "10 in 10" (X = Y = 10) with a multiplicative load point
  adjustment from the hours before the event, capped (+-20 % as first filed), on which AEMO's
  baseline methodology register for wholesale demand response says its four methods are built.
- **Same-day adjustment** (``adjustment``): the day-based baseline is scaled (multiplicative) or
  shifted (additive) so that over an adjustment window before the event (by default the 4
  intervals ending 1 h before the start) it matches what was measured on the event day, the
  factor or shift capped at ``adjustment_cap`` (0.2 = +-20 % of the baseline there). The upward-only
  additive variant (``ADDITIVE_UPWARD``) never lowers the baseline, as the Energy Networks
  Association's Flexibility Services Standard Agreement (UK) does ("the adjustment can only be
  positive"; its example: baseline 500 kW, 600 kW measured in the hour starting 2 h before the
  event: +100 kW; 400 kW measured: no adjustment). A multiplicative adjustment of a net producer
  (baseline <= 0 in the window) is meaningless: use an additive one there.
- **Meter before** (:func:`meter_before_baseline`): the mean measured consumption of the
  interval(s) just before the event, held flat over the event (the "meter before / meter after"
  baseline of ENTSO-E's and the Nordic flexibility markets' simple products).
- **Forecast** (:func:`forecast_baseline`): the median of a
  :class:`~opendso.planning.model.QuantileForecast` as the baseline, its quantiles as the band.

Uncertainty of the day-based methods comes from **backcasting**: each of the most recent eligible
non-event days is treated as if it had been the event day (its own candidate days, selection and
adjustment), and its error measured - baseline is recorded. The empirical ``levels`` quantiles of
those errors (per interval when there are at least ``pooled_below`` such days, otherwise pooled
over the intervals of the window) are added to the baseline to give ``lower_w`` and ``upper_w``.
A day can be backcast only when it has its own ``y`` eligible days within ``lookback_days``; the
search reaches back at most ``lookback_days + 2 * backcast_days + 14`` days.

Days are calendar days in ``time_zone`` (the event window is taken at the same wall-clock times on
each candidate day). A candidate day whose event (or adjustment) window lacks a reading (a row
missing from the history, or a wall-clock time that does not exist or repeats on a daylight-saving
change) is not eligible; a reading that is present but NaN is an :class:`~opendso.errors.InputError` naming the
participant and time. Times must be timezone-aware and on the ISP grid.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pandas as pd

from opendso.errors import InputError
from opendso.markets.model import ISP
from opendso.planning.model import QuantileForecast

__all__ = [
    "Adjustment",
    "Baseline",
    "BaselineMethod",
    "BaselineSpec",
    "compute_baseline",
    "forecast_baseline",
    "high_x_of_y_baseline",
    "meter_before_baseline",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

_ISP_NS = int(ISP.total_seconds()) * 1_000_000_000
_DAY_NS = 86_400 * 1_000_000_000
_NAT = np.iinfo(np.int64).min


class BaselineMethod(StrEnum):
    """How a product's baseline is made."""

    HIGH_X_OF_Y = "high_x_of_y"
    METER_BEFORE = "meter_before"
    FORECAST = "forecast"


class Adjustment(StrEnum):
    """The same-day adjustment of a day-based baseline."""

    NONE = "none"
    ADDITIVE = "additive"
    ADDITIVE_UPWARD = "additive_upward"
    MULTIPLICATIVE = "multiplicative"


@dataclass(frozen=True, eq=False)
class Baseline:
    """The baseline of ``participants`` over ``steps`` ISPs from ``start``, with its uncertainty band.

    ``power_w``, ``lower_w``, ``upper_w``: (T, N) in W, UFTP sign (consumption positive);
    ``lower_w``/``upper_w`` are the ``levels`` quantiles (by default 10 % and 90 %). ``method`` and
    ``parameters`` say how it was made; ``selected_days`` (day-based methods) the days averaged for
    each participant; ``backcast_days`` how many days the band was estimated from (0: no band).
    """

    method: str
    parameters: Mapping[str, Any]
    participants: tuple[str, ...]
    start: datetime
    power_w: FloatArray
    lower_w: FloatArray
    upper_w: FloatArray
    levels: tuple[float, float]
    selected_days: tuple[tuple[date, ...], ...] = ()
    backcast_days: int = 0

    def __post_init__(self) -> None:
        shape = (self.power_w.shape[0], len(self.participants))
        if self.power_w.ndim != 2 or self.power_w.shape != shape:
            raise InputError(f"baseline: power has shape {self.power_w.shape}, expected (T, {len(self.participants)})")
        if self.lower_w.shape != shape or self.upper_w.shape != shape:
            raise InputError("baseline: the band does not have the shape of the baseline")
        if self.start.tzinfo is None:
            raise InputError("baseline: start must be timezone-aware")

    @property
    def steps(self) -> int:
        """Number of ISPs."""
        return int(self.power_w.shape[0])

    @property
    def times(self) -> list[datetime]:
        """The ISP start times (UTC)."""
        return [self.start + k * ISP for k in range(self.steps)]

    def column(self, participant: str) -> int:
        """Column of ``participant``; :class:`InputError` naming it when the baseline has none."""
        try:
            return self.participants.index(participant)
        except ValueError:
            raise InputError(f"baseline: no participant {participant!r}") from None

    def select(self, participant: str) -> Baseline:
        """The baseline of one participant (a (T, 1) record)."""
        j = self.column(participant)
        days = (self.selected_days[j],) if self.selected_days else ()
        return Baseline(
            method=self.method,
            parameters=self.parameters,
            participants=(participant,),
            start=self.start,
            power_w=self.power_w[:, j : j + 1].copy(),
            lower_w=self.lower_w[:, j : j + 1].copy(),
            upper_w=self.upper_w[:, j : j + 1].copy(),
            levels=self.levels,
            selected_days=days,
            backcast_days=self.backcast_days,
        )

    def to_json(self) -> dict[str, Any]:
        """The baseline as JSON (W, one list per participant)."""
        return {
            "method": self.method,
            "parameters": {k: _jsonable(v) for k, v in self.parameters.items()},
            "start": self.start.isoformat().replace("+00:00", "Z"),
            "isp_minutes": int(ISP.total_seconds() // 60),
            "levels": list(self.levels),
            "backcast_days": self.backcast_days,
            "participants": [
                {
                    "id": p,
                    "power_w": self.power_w[:, j].tolist(),
                    "lower_w": self.lower_w[:, j].tolist(),
                    "upper_w": self.upper_w[:, j].tolist(),
                    "selected_days": [d.isoformat() for d in self.selected_days[j]] if self.selected_days else [],
                }
                for j, p in enumerate(self.participants)
            ],
        }


def _jsonable(value: object) -> object:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class BaselineSpec:
    """A product's choice of baseline: the method and its parameters (see the module docstring).

    ``x``/``y``/``lookback_days``: the high-X-of-Y day selection; ``adjustment``,
    ``adjustment_intervals``, ``adjustment_gap``, ``adjustment_cap`` (``None``: uncapped): the
    same-day adjustment window (``adjustment_intervals`` ISPs ending ``adjustment_gap`` before the
    start) and cap; ``before_intervals``/``before_gap``: the meter-before window; ``levels``: the
    band's quantiles; ``backcast_days`` (0: no band), ``min_backcast_days``, ``pooled_below``: the
    backcast; ``time_zone``: the zone of calendar days and day types.
    """

    method: BaselineMethod = BaselineMethod.HIGH_X_OF_Y
    x: int = 4
    y: int = 5
    lookback_days: int = 45
    adjustment: Adjustment = Adjustment.NONE
    adjustment_intervals: int = 4
    adjustment_gap: timedelta = timedelta(hours=1)
    adjustment_cap: float | None = 0.2
    before_intervals: int = 1
    before_gap: timedelta = timedelta(0)
    levels: tuple[float, float] = (0.1, 0.9)
    backcast_days: int = 20
    min_backcast_days: int = 5
    pooled_below: int = 20
    time_zone: str = "UTC"

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "method", BaselineMethod(self.method))
            object.__setattr__(self, "adjustment", Adjustment(self.adjustment))
        except ValueError as exc:
            raise InputError(f"baseline spec: {exc}") from None
        _check_days(self)

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON (times in seconds)."""
        return {k: _jsonable(getattr(self, k)) for k in self.__dataclass_fields__}


def _positive_int(what: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    return value


def _check_days(spec: BaselineSpec) -> None:
    _positive_int("baseline spec x", spec.x)
    _positive_int("baseline spec y", spec.y)
    if spec.x > spec.y:
        raise InputError(f"baseline spec: x ({spec.x}) must not exceed y ({spec.y})")
    _positive_int("baseline spec lookback_days", spec.lookback_days)
    _positive_int("baseline spec adjustment_intervals", spec.adjustment_intervals)
    _positive_int("baseline spec before_intervals", spec.before_intervals)
    _positive_int("baseline spec backcast_days", spec.backcast_days, 0)
    _positive_int("baseline spec min_backcast_days", spec.min_backcast_days, 1)
    _positive_int("baseline spec pooled_below", spec.pooled_below, 1)
    _check_gap("baseline spec adjustment_gap", spec.adjustment_gap)
    _check_gap("baseline spec before_gap", spec.before_gap)
    _check_cap(spec.adjustment_cap)
    _check_levels(spec.levels)
    _zone(spec.time_zone)


def _check_gap(what: str, gap: timedelta) -> None:
    if not isinstance(gap, timedelta) or gap < timedelta(0) or gap % ISP:
        raise InputError(f"{what} must be a whole number of ISPs (15 min) >= 0, got {gap!r}")


def _check_cap(cap: float | None) -> None:
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int | float) or not 0.0 <= cap < 10.0):
        raise InputError(f"baseline adjustment cap must be a fraction >= 0 (0.2 = +-20 %) or None, got {cap!r}")


def _check_levels(levels: tuple[float, float]) -> tuple[float, float]:
    if len(levels) != 2 or not 0.0 < levels[0] < levels[1] < 1.0:
        raise InputError(f"baseline levels must be two quantiles 0 < low < high < 1, got {levels!r}")
    return float(levels[0]), float(levels[1])


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"baseline time zone {name!r} is not an IANA time zone") from None


# --- input checks -----------------------------------------------------------------------------


def _event_start(value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"baseline event start: {value!r} is a naive time: give a time zone (UTC)")
    start = value.astimezone(UTC)
    if (start - datetime(1970, 1, 1, tzinfo=UTC)) % ISP:
        raise InputError(f"baseline event start {start.isoformat()} is not on the 15-minute ISP grid")
    return start


def _history(history: pd.DataFrame) -> tuple[npt.NDArray[np.int64], FloatArray, tuple[str, ...]]:
    """History as (sorted UTC ns index, (R, N) values, participant names), or InputError."""
    if not isinstance(history, pd.DataFrame) or not isinstance(history.index, pd.DatetimeIndex):
        raise InputError("baseline history: a DataFrame indexed by times (one column per participant) is needed")
    if history.index.tz is None:
        raise InputError("baseline history: the index holds naive times: give timezone-aware (UTC) times")
    if history.shape[1] == 0:
        raise InputError("baseline history: no participants (columns)")
    names = tuple(str(c) for c in history.columns)
    if len(set(names)) != len(names):
        raise InputError("baseline history: a participant (column) appears twice")
    index = history.index.tz_convert("UTC")
    ns = np.asarray(index.asi8, dtype=np.int64)
    off = np.flatnonzero(ns % _ISP_NS)
    if off.size:
        raise InputError(f"baseline history: time {index[off[0]].isoformat()} is not on the 15-minute ISP grid")
    if ns.size > 1 and np.any(np.diff(ns) <= 0):
        bad = int(np.flatnonzero(np.diff(ns) <= 0)[0]) + 1
        raise InputError(f"baseline history: times must increase strictly (at {index[bad].isoformat()})")
    try:
        values = np.asarray(history.to_numpy(dtype=float), dtype=float)
    except (TypeError, ValueError):
        raise InputError("baseline history: readings must be numbers (W)") from None
    return ns, values, names


def _intervals(value: int) -> int:
    return _positive_int("baseline intervals", value)


@dataclass
class _Lookup:
    """Readings of the history at wall-clock windows of days back from the event day."""

    ns: npt.NDArray[np.int64]
    values: FloatArray
    names: tuple[str, ...]
    zone: str
    wall0: int

    def window(
        self, offsets_ns: npt.NDArray[np.int64], days_back: npt.NDArray[np.int64]
    ) -> tuple[FloatArray, npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """Values (K, W, N), present mask (K, W), UTC ns (K, W): event wall clock + ``offsets_ns``, days back."""
        walls = (self.wall0 + offsets_ns)[None, :] - days_back[:, None] * _DAY_NS  # (K, W)
        utc = _wall_to_utc(walls.ravel(), self.zone).reshape(walls.shape)
        present = np.zeros(walls.shape, dtype=bool)
        vals = np.full((*walls.shape, self.values.shape[1]), np.nan)
        if len(self.ns):
            pos = np.clip(np.searchsorted(self.ns, utc), 0, len(self.ns) - 1)
            present = (utc != _NAT) & (self.ns[pos] == utc)
            vals[present] = self.values[pos[present]]
        return vals, present, utc


def _wall_to_utc(wall_ns: npt.NDArray[np.int64], zone: str) -> npt.NDArray[np.int64]:
    """UTC ns of naive wall-clock ns in ``zone``; NaT (int64 min) where the time does not exist or repeats."""
    if zone == "UTC":
        return wall_ns.astype(np.int64)
    local = pd.DatetimeIndex(wall_ns.astype("datetime64[ns]")).tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
    return np.asarray(local.tz_convert("UTC").asi8, dtype=np.int64)


def _event_wall(start: datetime, zone: str) -> tuple[int, date]:
    local = pd.Timestamp(start).tz_convert(zone)
    return int(local.tz_localize(None).value), local.date()


def _check_nan(
    vals: FloatArray, rows: npt.NDArray[np.bool_], utc: npt.NDArray[np.int64], names: tuple[str, ...], what: str
) -> None:
    """InputError naming participant and time of the first NaN reading among the rows used."""
    bad = np.isnan(vals) & rows[..., None]
    if not bad.any():
        return
    k, w, n = (int(i[0]) for i in np.nonzero(bad))
    when = pd.Timestamp(int(utc[k, w]), tz="UTC").isoformat()
    raise InputError(
        f"baseline history: the reading of participant {names[n]!r} at {when} (ISP starting then, {what}) is NaN:"
        " fill or remove it"
    )


def _is_business(day: date, holidays: frozenset[date]) -> bool:
    return day.weekday() < 5 and day not in holidays


def _band(
    errors: FloatArray, power: FloatArray, levels: tuple[float, float], pooled_below: int
) -> tuple[FloatArray, FloatArray, bool]:
    """Lower/upper = power + quantiles of ``errors`` (B, T, N): per interval, or pooled when B is small."""
    b = errors.shape[0]
    if b >= pooled_below:
        q = np.quantile(errors, levels, axis=0)  # (2, T, N)
        return power + q[0], power + q[1], False
    pooled = errors.reshape(-1, errors.shape[2])  # (B*T, N)
    q = np.quantile(pooled, levels, axis=0)  # (2, N)
    return power + q[0][None, :], power + q[1][None, :], True


# --- high X of Y -----------------------------------------------------------------------------------


def high_x_of_y_baseline(
    history: pd.DataFrame,
    event_start: datetime,
    intervals: int,
    *,
    x: int = 4,
    y: int = 5,
    lookback_days: int = 45,
    adjustment: Adjustment = Adjustment.NONE,
    adjustment_intervals: int = 4,
    adjustment_gap: timedelta = timedelta(hours=1),
    adjustment_cap: float | None = 0.2,
    excluded: Collection[date] = (),
    holidays: Collection[date] = (),
    time_zone: str = "UTC",
    levels: tuple[float, float] = (0.1, 0.9),
    backcast_days: int = 20,
    min_backcast_days: int = 5,
    pooled_below: int = 20,
) -> Baseline:
    """The high-X-of-Y customer baseline load of every column of ``history``, optionally adjusted, with its band.

    ``history``: measured consumption in W (UFTP sign), indexed by aware times on the ISP grid, one
    column per participant; it must hold the candidate days' event windows (and adjustment windows
    when adjusting) and, for an adjustment, the event day's adjustment window. ``excluded``: days
    (in ``time_zone``) not to use, above all past event days; ``holidays`` count as weekend days.
    The band comes from backcasting on up to ``backcast_days`` recent eligible days (at least
    ``min_backcast_days``; ``backcast_days=0`` gives no band). :class:`InputError` when fewer than
    ``y`` eligible days lie within ``lookback_days``, for naive or misaligned times and NaN readings.
    """
    spec = BaselineSpec(
        x=x,
        y=y,
        lookback_days=lookback_days,
        adjustment=adjustment,
        adjustment_intervals=adjustment_intervals,
        adjustment_gap=adjustment_gap,
        adjustment_cap=adjustment_cap,
        levels=levels,
        backcast_days=backcast_days,
        min_backcast_days=min_backcast_days,
        pooled_below=pooled_below,
        time_zone=time_zone,
    )
    start = _event_start(event_start)
    t = _intervals(intervals)
    ns, values, names = _history(history)
    wall0, event_day = _event_wall(start, spec.time_zone)
    lookup = _Lookup(ns, values, names, spec.time_zone, wall0)
    adjusting = spec.adjustment is not Adjustment.NONE
    excluded_days = frozenset(excluded)
    holiday_days = frozenset(holidays)

    # candidate days: 1..k_max days back, as far as the history reaches; the backcast days need their own lookback
    first_day = pd.Timestamp(int(ns[0]), tz="UTC").tz_convert(spec.time_zone).date() if ns.size else event_day
    reach = spec.lookback_days + (2 * spec.backcast_days + 14 if spec.backcast_days else 0)
    k_max = max(0, min(reach, (event_day - first_day).days))
    ks = np.arange(0, k_max + 1, dtype=np.int64)
    win_off = np.arange(t, dtype=np.int64) * _ISP_NS
    adj_end = -int(spec.adjustment_gap.total_seconds()) * 1_000_000_000
    adj_off = adj_end - np.arange(spec.adjustment_intervals, 0, -1, dtype=np.int64) * _ISP_NS
    w_vals, w_present, w_utc = lookup.window(win_off, ks)  # (K+1, T, N)
    if adjusting:
        a_vals, a_present, a_utc = lookup.window(adj_off, ks)
    else:
        a_vals, a_present = np.zeros((len(ks), 0, len(names))), np.ones((len(ks), 0), dtype=bool)
        a_utc = np.zeros((len(ks), 0), dtype=np.int64)

    event_business = _is_business(event_day, holiday_days)
    days = [event_day - timedelta(days=int(k)) for k in ks]
    same_type = np.array([_is_business(d, holiday_days) == event_business for d in days])
    allowed = same_type & np.array([d not in excluded_days for d in days])
    allowed[0] = False
    complete = w_present.all(axis=1) & a_present.all(axis=1)
    eligible = np.flatnonzero(allowed & complete)  # positions in ks, most recent first
    _check_nan(w_vals, allowed[:, None] & w_present, w_utc, names, "event window of a candidate day")
    if adjusting:
        _check_nan(a_vals, allowed[:, None] & a_present, a_utc, names, "adjustment window of a candidate day")
        if not a_present[0].all():
            missing = pd.Timestamp(int(a_utc[0, int(np.flatnonzero(~a_present[0])[0])]), tz="UTC")
            raise InputError(
                f"baseline: no measurement at {missing.isoformat()} in the adjustment window before the event"
            )
        _check_nan(a_vals[:1], a_present[:1], a_utc[:1], names, "adjustment window of the event day")

    within = eligible[ks[eligible] <= spec.lookback_days]
    if within.size < spec.y:
        raise InputError(
            f"baseline high {spec.x} of {spec.y}: too few eligible days: {within.size} "
            f"{'weekday' if event_business else 'weekend/holiday'} days with complete readings within "
            f"{spec.lookback_days} days before {event_day.isoformat()} (event days and excluded days skipped),"
            f" need {spec.y}"
        )

    # rows: 0 = the event, then the backcast days (each eligible day i with its own y eligible days before it)
    e_days = ks[eligible]
    rows = [(-1, np.arange(spec.y))]
    if spec.backcast_days:
        for i in range(len(eligible) - spec.y):
            cand = np.arange(i + 1, i + 1 + spec.y)
            if e_days[cand[-1]] - e_days[i] <= spec.lookback_days:
                rows.append((i, cand))
            if len(rows) > spec.backcast_days:
                break
    cand_idx = np.stack([c for _, c in rows])  # (R, y) positions in `eligible`
    W = w_vals[eligible]  # (E, T, N)
    energy = W.sum(axis=1)  # (E, N)
    cand_energy = energy[cand_idx]  # (R, y, N)
    order = np.argsort(-cand_energy, axis=1, kind="stable")[:, : spec.x, :]  # ties: the more recent day
    sel = np.take_along_axis(cand_idx[:, :, None], order, axis=1)  # (R, x, N) positions in `eligible`
    n_idx = np.arange(len(names))[None, :]
    # mean of the x selected days, gathered one rank at a time to keep memory at (R, N, T)
    power = sum((W[sel[:, s, :], :, n_idx] for s in range(spec.x)), np.zeros((len(rows), len(names), t))) / spec.x
    power = np.transpose(power, (0, 2, 1))  # (R, T, N)
    if adjusting:
        A = a_vals[eligible]
        base_adj = sum((A[sel[:, s, :], :, n_idx].mean(axis=2) for s in range(spec.x)), np.zeros(sel[:, 0, :].shape))
        base_adj = base_adj / spec.x  # (R, N)
        meas_rows = np.concatenate([a_vals[:1], A[[i for i, _ in rows[1:]]]], axis=0) if len(rows) > 1 else a_vals[:1]
        meas_adj = meas_rows.mean(axis=1)  # (R, N)
        power = _adjust(power, base_adj, meas_adj, spec.adjustment, spec.adjustment_cap)

    baseline = power[0]
    n_back = len(rows) - 1
    lower, upper = baseline.copy(), baseline.copy()
    pooled = False
    if spec.backcast_days:
        if n_back < spec.min_backcast_days:
            raise InputError(
                f"baseline high {spec.x} of {spec.y}: too few eligible days to estimate the uncertainty: "
                f"{n_back} days could be backcast, need {spec.min_backcast_days} "
                f"(give more history, or backcast_days=0 for no band)"
            )
        measured = W[[i for i, _ in rows[1:]]]  # (B, T, N)
        lower, upper, pooled = _band(measured - power[1:], baseline, spec.levels, spec.pooled_below)
    selected = tuple(tuple(sorted(days[int(eligible[s])] for s in sel[0, :, j])) for j in range(len(names)))
    log.debug(
        "event=baseline method=high_x_of_y x=%d y=%d participants=%d intervals=%d backcast=%d pooled=%s",
        spec.x,
        spec.y,
        len(names),
        t,
        n_back,
        pooled,
    )
    params: dict[str, Any] = {
        "x": spec.x,
        "y": spec.y,
        "lookback_days": spec.lookback_days,
        "adjustment": spec.adjustment,
        "time_zone": spec.time_zone,
        "pooled_band": pooled,
    }
    if adjusting:
        params |= {
            "adjustment_intervals": spec.adjustment_intervals,
            "adjustment_gap": spec.adjustment_gap,
            "adjustment_cap": spec.adjustment_cap,
        }
    return Baseline(
        method=str(BaselineMethod.HIGH_X_OF_Y),
        parameters=params,
        participants=names,
        start=start,
        power_w=baseline,
        lower_w=np.minimum(lower, upper),
        upper_w=np.maximum(lower, upper),
        levels=spec.levels,
        selected_days=selected,
        backcast_days=n_back,
    )


def _adjust(
    power: FloatArray, base_adj: FloatArray, meas_adj: FloatArray, how: Adjustment, cap: float | None
) -> FloatArray:
    """Scale or shift ``power`` (R, T, N) so its adjustment-window mean ``base_adj`` meets ``meas_adj``, capped."""
    if how is Adjustment.MULTIPLICATIVE:
        tiny = np.abs(base_adj) < 1e-9
        ratio = np.where(tiny, 1.0, meas_adj / np.where(tiny, 1.0, base_adj))
        if cap is not None:
            ratio = np.clip(ratio, 1.0 - cap, 1.0 + cap)
        return power * ratio[:, None, :]
    shift = meas_adj - base_adj
    if cap is not None:
        limit = cap * np.abs(base_adj)
        shift = np.clip(shift, -limit, limit)
    if how is Adjustment.ADDITIVE_UPWARD:
        shift = np.maximum(shift, 0.0)
    return power + shift[:, None, :]


# --- meter before ----------------------------------------------------------------------------------


def meter_before_baseline(
    history: pd.DataFrame,
    event_start: datetime,
    intervals: int,
    *,
    before_intervals: int = 1,
    before_gap: timedelta = timedelta(0),
    lookback_days: int = 45,
    excluded: Collection[date] = (),
    holidays: Collection[date] = (),
    time_zone: str = "UTC",
    levels: tuple[float, float] = (0.1, 0.9),
    backcast_days: int = 20,
    min_backcast_days: int = 5,
    pooled_below: int = 20,
) -> Baseline:
    """The meter-before baseline: the mean of the ISPs just before the start (``before_gap`` earlier), held flat.

    The band comes from backcasting the same rule on up to ``backcast_days`` recent eligible days of
    the event's day type within ``lookback_days`` (``backcast_days=0``: no band). :class:`InputError`
    when the event day's readings before the start are missing, for naive or misaligned times and NaN.
    """
    spec = BaselineSpec(
        method=BaselineMethod.METER_BEFORE,
        lookback_days=lookback_days,
        before_intervals=before_intervals,
        before_gap=before_gap,
        levels=levels,
        backcast_days=backcast_days,
        min_backcast_days=min_backcast_days,
        pooled_below=pooled_below,
        time_zone=time_zone,
    )
    start = _event_start(event_start)
    t = _intervals(intervals)
    ns, values, names = _history(history)
    wall0, event_day = _event_wall(start, spec.time_zone)
    lookup = _Lookup(ns, values, names, spec.time_zone, wall0)
    first_day = pd.Timestamp(int(ns[0]), tz="UTC").tz_convert(spec.time_zone).date() if ns.size else event_day
    k_max = max(0, min(spec.lookback_days if spec.backcast_days else 0, (event_day - first_day).days))
    ks = np.arange(0, k_max + 1, dtype=np.int64)
    end = -int(spec.before_gap.total_seconds()) * 1_000_000_000
    b_off = end - np.arange(spec.before_intervals, 0, -1, dtype=np.int64) * _ISP_NS
    b_vals, b_present, b_utc = lookup.window(b_off, ks)
    if not b_present[0].all():
        raise InputError(
            f"baseline meter before: no measurements in the {spec.before_intervals} ISP(s) before {start.isoformat()}"
        )
    _check_nan(b_vals[:1], b_present[:1], b_utc[:1], names, "window before the event")
    level = b_vals[0].mean(axis=0)  # (N,)
    baseline = np.broadcast_to(level, (t, len(names))).copy()
    lower, upper = baseline.copy(), baseline.copy()
    n_back = 0
    pooled = False
    if spec.backcast_days:
        win_off = np.arange(t, dtype=np.int64) * _ISP_NS
        w_vals, w_present, w_utc = lookup.window(win_off, ks)
        holiday_days = frozenset(holidays)
        excluded_days = frozenset(excluded)
        event_business = _is_business(event_day, holiday_days)
        days = [event_day - timedelta(days=int(k)) for k in ks]
        allowed = np.array(
            [_is_business(d, holiday_days) == event_business and d not in excluded_days for d in days], dtype=bool
        )
        allowed[0] = False
        _check_nan(w_vals, allowed[:, None] & w_present, w_utc, names, "event window of a backcast day")
        _check_nan(b_vals, allowed[:, None] & b_present, b_utc, names, "window before a backcast day")
        eligible = np.flatnonzero(allowed & w_present.all(axis=1) & b_present.all(axis=1))[: spec.backcast_days]
        n_back = int(eligible.size)
        if n_back < spec.min_backcast_days:
            raise InputError(
                f"baseline meter before: too few eligible days to estimate the uncertainty: {n_back} days with "
                f"complete readings within {spec.lookback_days} days, need {spec.min_backcast_days}"
                f" (give more history, or backcast_days=0 for no band)"
            )
        back = b_vals[eligible].mean(axis=1)  # (B, N)
        errors = w_vals[eligible] - back[:, None, :]
        lower, upper, pooled = _band(errors, baseline, spec.levels, spec.pooled_below)
    log.debug("event=baseline method=meter_before participants=%d intervals=%d backcast=%d", len(names), t, n_back)
    return Baseline(
        method=str(BaselineMethod.METER_BEFORE),
        parameters={
            "before_intervals": spec.before_intervals,
            "before_gap": spec.before_gap,
            "lookback_days": spec.lookback_days,
            "time_zone": spec.time_zone,
            "pooled_band": pooled,
        },
        participants=names,
        start=start,
        power_w=baseline,
        lower_w=np.minimum(lower, upper),
        upper_w=np.maximum(lower, upper),
        levels=spec.levels,
        backcast_days=n_back,
    )


# --- forecast ------------------------------------------------------------------------------------------


def forecast_baseline(
    forecast: QuantileForecast,
    event_start: datetime,
    intervals: int,
    *,
    participants: Sequence[str] | None = None,
    levels: tuple[float, float] = (0.1, 0.9),
) -> Baseline:
    """The forecast baseline: the forecast's median over the event, its ``levels`` quantiles as the band.

    ``participants``: the forecast targets to use (all when ``None``). A ``sym_gen:`` target is a
    production forecast (positive = producing): it is turned to UFTP's consumption sign (negated,
    and its quantiles swapped). :class:`InputError` when the forecast does not cover every ISP of
    the event or lacks a target.
    """
    lo, hi = _check_levels(levels)
    start = _event_start(event_start)
    t = _intervals(intervals)
    names = tuple(participants) if participants is not None else forecast.targets
    if not names:
        raise InputError("forecast baseline: no participants")
    cols = [forecast.index(n) for n in names]
    times = np.asarray(forecast.time, dtype="datetime64[s]").astype(np.int64)
    want = int(start.timestamp()) + np.arange(t, dtype=np.int64) * int(ISP.total_seconds())
    pos = np.searchsorted(times, want)
    ok = (pos < len(times)) & (times[np.clip(pos, 0, max(len(times) - 1, 0))] == want) if len(times) else pos < 0
    if not np.all(ok):
        first = datetime.fromtimestamp(int(want[np.flatnonzero(~ok)[0]]), tz=UTC)
        raise InputError(f"forecast baseline: the forecast has no interval starting {first.isoformat()}")
    med = forecast.median()[pos][:, cols]
    q_lo = forecast.quantile(lo)[pos][:, cols]
    q_hi = forecast.quantile(hi)[pos][:, cols]
    gen = np.array([n.startswith("sym_gen:") for n in names])
    power = np.where(gen, -med, med)
    lower = np.where(gen, -q_hi, q_lo)
    upper = np.where(gen, -q_lo, q_hi)
    return Baseline(
        method=str(BaselineMethod.FORECAST),
        parameters={"issued": forecast.issued.astimezone(UTC).isoformat().replace("+00:00", "Z")},
        participants=names,
        start=start,
        power_w=np.asarray(power, dtype=float),
        lower_w=np.asarray(lower, dtype=float),
        upper_w=np.asarray(upper, dtype=float),
        levels=(lo, hi),
    )


# --- dispatch -------------------------------------------------------------------------------------------


def compute_baseline(
    spec: BaselineSpec,
    history: pd.DataFrame | None,
    event_start: datetime,
    intervals: int,
    *,
    excluded: Collection[date] = (),
    holidays: Collection[date] = (),
    forecast: QuantileForecast | None = None,
    participants: Sequence[str] | None = None,
) -> Baseline:
    """The baseline a product's ``spec`` asks for, over ``intervals`` ISPs from ``event_start``.

    Day-based methods read ``history`` (see :func:`high_x_of_y_baseline`); the forecast method
    reads ``forecast`` (and ``participants``, its targets). :class:`InputError` when the input the
    method needs is missing.
    """
    if not isinstance(spec, BaselineSpec):
        raise InputError(f"baseline: spec must be a BaselineSpec, got {type(spec).__name__}")
    if spec.method is BaselineMethod.FORECAST:
        if forecast is None:
            raise InputError("baseline: the forecast method needs a forecast")
        return forecast_baseline(forecast, event_start, intervals, participants=participants, levels=spec.levels)
    if history is None:
        raise InputError(f"baseline: the {spec.method} method needs the measured history")
    if participants is not None:
        missing = [p for p in participants if p not in history.columns]
        if missing:
            raise InputError(f"baseline history: no readings for participant(s) {', '.join(map(repr, missing))}")
        history = history.loc[:, list(participants)]
    if spec.method is BaselineMethod.METER_BEFORE:
        return meter_before_baseline(
            history,
            event_start,
            intervals,
            before_intervals=spec.before_intervals,
            before_gap=spec.before_gap,
            lookback_days=spec.lookback_days,
            excluded=excluded,
            holidays=holidays,
            time_zone=spec.time_zone,
            levels=spec.levels,
            backcast_days=spec.backcast_days,
            min_backcast_days=spec.min_backcast_days,
            pooled_below=spec.pooled_below,
        )
    return high_x_of_y_baseline(
        history,
        event_start,
        intervals,
        x=spec.x,
        y=spec.y,
        lookback_days=spec.lookback_days,
        adjustment=spec.adjustment,
        adjustment_intervals=spec.adjustment_intervals,
        adjustment_gap=spec.adjustment_gap,
        adjustment_cap=spec.adjustment_cap,
        excluded=excluded,
        holidays=holidays,
        time_zone=spec.time_zone,
        levels=spec.levels,
        backcast_days=spec.backcast_days,
        min_backcast_days=spec.min_backcast_days,
        pooled_below=spec.pooled_below,
    )
