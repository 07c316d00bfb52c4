"""The two baselines every forecast must beat: persistence and the weekly profile.

Both read only the history strictly before the moment the forecast is issued, and both give
quantiles, so that they can be scored by the same probabilistic metric (rCRPS) as the model:

- **persistence** repeats the last available day: the value at ``t`` is the one measured at
  ``t - k * 24 h`` with ``k`` the smallest whole number of days that reaches back into the
  history (``k = 1`` for the first day of the horizon, 2 for the second, ...). This is the usual
  day-ahead persistence of load forecasting (the "same time yesterday" of the last day seen).
- **weekly profile** averages the same quarter-hour of the week over the last ``weeks`` weeks
  available (by default four).

The quantiles come from the empirical distribution of each baseline's own residuals over the
``residual_days`` (default 28) days before the issue time, per target and hour of day, at the same
lead (for persistence, the residuals of the ``k``-day persistence used at that step): the point
forecast plus the residual quantile. A target never negative in that window is never forecast
negative (generation at night).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt
import pandas as pd

from opendso.errors import InputError
from opendso.planning.model import DEFAULT_QUANTILES, QuantileForecast

__all__ = ["RESIDUAL_DAYS", "STEP", "persistence_forecast", "weekly_profile_forecast"]

#: The forecasts' interval length.
STEP = pd.Timedelta(minutes=15)

#: Days of past residuals the baselines' quantiles are taken from.
RESIDUAL_DAYS = 28

_DAY = 96  # quarter-hours per day
_WEEK = 7 * _DAY

FloatArray = npt.NDArray[np.float64]


def persistence_forecast(
    history: pd.DataFrame,
    issued: datetime,
    *,
    horizon_steps: int = 192,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    residual_days: int = RESIDUAL_DAYS,
) -> QuantileForecast:
    """Quantile forecast repeating the last available day of ``history`` before ``issued``.

    ``history``: a DataFrame indexed by UTC times (15-minute steps, gaps allowed), one column per
    target, as :func:`~opendso.planning.history.profile_history` returns. Only rows strictly
    before ``issued`` are read. The forecast's intervals start at ``issued`` rounded up to the
    quarter-hour, ``horizon_steps`` of them. :class:`InputError` when less than a day of history
    precedes ``issued``, or for a malformed history or issue time.
    """
    past, start, levels = _prepare(history, issued, horizon_steps, quantiles)
    n_past = past.shape[0]
    if n_past < _DAY:
        raise InputError(f"persistence forecast: needs at least one day of history before {start}, got {n_past} steps")
    # step h of the horizon lies n_past + h quarter-hours after the first past row; k days back must fall in the past
    h = np.arange(horizon_steps)
    k = (h // _DAY) + 1
    point = past[n_past + h - k * _DAY]
    lags = np.unique(k)
    residual_q = np.empty((len(levels), horizon_steps, past.shape[1]))
    for lag in lags:
        residuals = _residual_window(past - _shifted(past, lag * _DAY), residual_days)
        by_hour = _hourly_quantiles(residuals, n_past, levels)
        steps = np.flatnonzero(k == lag)
        residual_q[:, steps, :] = by_hour[:, _hour_of(n_past + steps, start, n_past), :]
    return _assemble(history.columns, past, point, residual_q, levels, start, issued, residual_days)


def weekly_profile_forecast(
    history: pd.DataFrame,
    issued: datetime,
    *,
    horizon_steps: int = 192,
    weeks: int = 4,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    residual_days: int = RESIDUAL_DAYS,
) -> QuantileForecast:
    """Quantile forecast averaging the same quarter-hour of the week over the last ``weeks`` weeks before ``issued``.

    Same conventions as :func:`persistence_forecast`; missing weeks (gaps) are left out of the
    mean. :class:`InputError` when less than a week of history precedes ``issued``.
    """
    if weeks < 1:
        raise InputError(f"weekly profile forecast: weeks must be >= 1, got {weeks}")
    past, start, levels = _prepare(history, issued, horizon_steps, quantiles)
    n_past = past.shape[0]
    if n_past < _WEEK:
        raise InputError(
            f"weekly profile forecast: needs at least one week of history before {start}, got {n_past} steps"
        )
    h = np.arange(horizon_steps)
    first_week = (h // _WEEK) + 1
    point = np.full((horizon_steps, past.shape[1]), np.nan)
    stack = []
    for w in range(weeks):
        rows = n_past + h - (first_week + w) * _WEEK
        valid = rows >= 0
        sample = np.full_like(point, np.nan)
        sample[valid] = past[rows[valid]]
        stack.append(sample)
    point = _nanmean(np.stack(stack))
    # residuals of the same weekly mean at past times (weeks 1..weeks back from each past row)
    fitted = _nanmean(np.stack([_shifted(past, (w + 1) * _WEEK) for w in range(weeks)]))
    residuals = _residual_window(past - fitted, residual_days)
    by_hour = _hourly_quantiles(residuals, n_past, levels)
    residual_q = by_hour[:, _hour_of(n_past + h, start, n_past), :]
    return _assemble(history.columns, past, point, residual_q, levels, start, issued, residual_days)


# -- helpers ------------------------------------------------------------------------------------------


def _prepare(
    history: pd.DataFrame, issued: datetime, horizon_steps: int, quantiles: Sequence[float]
) -> tuple[FloatArray, pd.Timestamp, FloatArray]:
    """The past on a regular 15-minute grid ending just before the first interval, that interval's start, the levels."""
    if not isinstance(history.index, pd.DatetimeIndex) or history.index.tz is None:
        raise InputError("forecast history must be indexed by timezone-aware times")
    if history.shape[1] == 0:
        raise InputError("forecast history has no targets")
    if horizon_steps < 1:
        raise InputError(f"forecast horizon must be at least one step, got {horizon_steps}")
    if getattr(issued, "tzinfo", None) is None:
        raise InputError(f"forecast issue time {issued} must be timezone-aware")
    levels = np.asarray(sorted(float(q) for q in quantiles), dtype=float)
    issued_ts = pd.Timestamp(issued).tz_convert("UTC")
    start = issued_ts.ceil(STEP)
    before = history.loc[history.index < issued_ts].sort_index()
    if before.empty:
        raise InputError(f"forecast history has nothing before {issued_ts}")
    index = pd.DatetimeIndex(before.index)
    grid = pd.date_range(index[0].floor(STEP), start - STEP, freq=STEP)
    # rows falling inside a quarter-hour are taken at its start; later duplicates win
    binned = before.groupby(index.floor(STEP)).last()
    past = binned.reindex(grid).to_numpy(dtype=float)
    return past, start, levels


def _shifted(values: FloatArray, lag: int) -> FloatArray:
    """``values`` delayed by ``lag`` rows (NaN where the past does not reach)."""
    out = np.full_like(values, np.nan)
    if lag < values.shape[0]:
        out[lag:] = values[: values.shape[0] - lag]
    return out


def _residual_window(residuals: FloatArray, days: int) -> FloatArray:
    """The last ``days`` days of residuals, as rows aligned to the end of the past (NaN padded at the front)."""
    rows = days * _DAY
    if residuals.shape[0] >= rows:
        return residuals[-rows:]
    pad = np.full((rows - residuals.shape[0], residuals.shape[1]), np.nan)
    return np.concatenate([pad, residuals])


def _hourly_quantiles(window: FloatArray, n_past: int, levels: FloatArray) -> FloatArray:
    """(Q, 24, N) residual quantiles per hour of day; rows of ``window`` end at the last past row.

    Hours come from the row position relative to the first interval (whole days back), so the
    grid is fixed by the forecast's start; an hour without any residual gives 0.
    """
    rows = window.shape[0]
    # the window's last row is the quarter-hour just before the start: it is 1 step before start
    offsets = np.arange(rows) - rows  # -rows .. -1 steps relative to start
    hours = (offsets % _DAY) // 4
    out = np.zeros((len(levels), 24, window.shape[1]))
    for hour in range(24):
        out[:, hour, :] = _nanquantile_columns(window[hours == hour], levels)
    return out


def _nanquantile_columns(sample: FloatArray, levels: FloatArray) -> FloatArray:
    """(Q, N) quantiles of each column ignoring NaN, as ``np.nanquantile``'s linear method; 0 for an empty column.

    Vectorised over the columns (``np.nanquantile`` loops over them in Python when NaNs are present):
    sorting puts NaN last, so each column's finite values are its first ``n`` rows.
    """
    ordered = np.sort(sample, axis=0)
    count = np.isfinite(sample).sum(axis=0)
    position = levels[:, None] * np.maximum(count - 1, 0)[None, :]  # (Q, N)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, np.maximum(count - 1, 0)[None, :])
    weight = position - lower
    if ordered.shape[0] == 0:
        return np.zeros((len(levels), sample.shape[1]))
    low = np.take_along_axis(ordered, lower, axis=0)
    high = np.take_along_axis(ordered, upper, axis=0)
    q = low + weight * (high - low)
    return np.where(count[None, :] > 0, q, 0.0)


def _hour_of(rows: npt.NDArray[np.int64], start: pd.Timestamp, n_past: int) -> npt.NDArray[np.int64]:
    """The hour-of-day bucket (as :func:`_hourly_quantiles` counts it) of past-relative rows."""
    # bucket 0 holds the quarter-hours at whole days before the start; the start's own hour counts from it
    offsets = rows - n_past
    return np.asarray((offsets % _DAY) // 4, dtype=np.int64)


def _nanmean(stack: FloatArray) -> FloatArray:
    """Mean over axis 0 ignoring NaN (NaN where every value is missing), without a warning."""
    count = np.sum(np.isfinite(stack), axis=0)
    total = np.nansum(stack, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _assemble(
    columns: pd.Index,
    past: FloatArray,
    point: FloatArray,
    residual_q: FloatArray,
    levels: FloatArray,
    start: pd.Timestamp,
    issued: datetime,
    residual_days: int,
) -> QuantileForecast:
    """Point + residual quantiles, gaps filled by the recent mean, non-negative targets clipped, sorted."""
    recent = past[-residual_days * _DAY :]
    fallback = _nanmean(recent)
    if np.any(~np.isfinite(fallback)):
        missing = [str(c) for c, ok in zip(columns, np.isfinite(fallback), strict=True) if not ok]
        raise InputError(f"forecast history has no values for {', '.join(missing[:5])}")
    point = np.where(np.isfinite(point), point, fallback)
    values = point[None, :, :] + residual_q
    never_negative = np.nanmin(recent, axis=0) >= 0.0
    values = np.where(never_negative[None, None, :], np.maximum(values, 0.0), values)
    values = np.sort(values, axis=0)
    times = pd.date_range(start, periods=point.shape[0], freq=STEP)
    return QuantileForecast(
        targets=tuple(str(c) for c in columns),
        time=times.tz_convert("UTC").tz_localize(None).to_numpy().astype("datetime64[s]"),
        quantiles=levels,
        values=values,
        issued=issued if isinstance(issued, datetime) else pd.Timestamp(issued).to_pydatetime(),
    )
