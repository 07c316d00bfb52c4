"""Backtests: the OpenSTEF forecast against the persistence and weekly-profile baselines on held-out days.

The models train once on the ``train_days`` before ``start`` (nothing at or after ``start``);
then on each of ``days`` held-out days a forecast is issued at midnight UTC by the model and by
both baselines, every one reading the history only before its issue time, and scored over its
whole horizon (48 h by default) against the measurements. Scores pool all held-out forecasts of
a target (:mod:`opendso.planning.metrics`). A target *beats both* when its rMAE and its rCRPS are
below those of each baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from opendso.errors import InputError
from opendso.planning.baselines import persistence_forecast, weekly_profile_forecast
from opendso.planning.forecast import ForecastSettings, OpenStefForecaster
from opendso.planning.metrics import Score, band_coverage, score
from opendso.planning.model import QuantileForecast
from opendso.planning.weather import PvPlant

__all__ = ["BacktestResult", "TargetBacktest", "run_backtest"]

log = logging.getLogger(__name__)

METHODS = ("model", "persistence", "weekly_profile")


@dataclass(frozen=True)
class TargetBacktest:
    """The scores of one target: the model's and each baseline's, and the model's 10-90 % band coverage."""

    target: str
    kind: str
    model: Score
    persistence: Score
    weekly_profile: Score
    coverage_10_90: float

    @property
    def beats_both(self) -> bool:
        """True when the model's rMAE and rCRPS are both below those of each baseline."""
        return all(
            self.model.rmae < base.rmae and self.model.rcrps < base.rcrps
            for base in (self.persistence, self.weekly_profile)
        )

    def to_json(self) -> dict[str, Any]:
        """One entry of the backtest's ``targets`` list (the README's contract)."""
        return {
            "target": self.target,
            "kind": self.kind,
            "model": self.model.to_json(),
            "persistence": self.persistence.to_json(),
            "weekly_profile": self.weekly_profile.to_json(),
            "coverage_10_90": None if not np.isfinite(self.coverage_10_90) else round(self.coverage_10_90, 4),
            "beats_both": self.beats_both,
        }


@dataclass(frozen=True)
class BacktestResult:
    """Every target's scores over the held-out days from ``start``."""

    start: datetime
    days: int
    targets: tuple[TargetBacktest, ...]

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per kind: the number of targets, how many beat both baselines, the median rMAE and rCRPS of each method."""
        out: dict[str, dict[str, Any]] = {}
        for kind in sorted({t.kind for t in self.targets}):
            group = [t for t in self.targets if t.kind == kind]
            entry: dict[str, Any] = {"targets": len(group), "beats_both": sum(t.beats_both for t in group)}
            for method in METHODS:
                scores = [getattr(t, method) for t in group]
                entry[method] = {
                    metric: _round(float(np.nanmedian([getattr(s, metric) for s in scores])))
                    for metric in ("rmae", "rcrps")
                }
            out[kind] = entry
        return out

    def to_json(self, grid: str) -> dict[str, Any]:
        """``{"grid", "days", "start", "targets": [...], "summary": {kind: ...}}``: the CLI's JSON contract."""
        return {
            "grid": grid,
            "days": self.days,
            "start": pd.Timestamp(self.start).isoformat(),
            "targets": [t.to_json() for t in self.targets],
            "summary": self.summary(),
        }


def run_backtest(
    history: pd.DataFrame,
    *,
    start: datetime,
    days: int,
    kinds: Mapping[str, str],
    settings: ForecastSettings | None = None,
    weather: pd.DataFrame | None = None,
    plants: Mapping[str, PvPlant] | None = None,
    targets: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BacktestResult:
    """Backtest the OpenSTEF forecast and both baselines on ``days`` days from ``start`` (midnight UTC issues).

    ``history``: the measurements (columns are targets); ``kinds`` names each target's kind;
    ``weather``: the weather the forecasts see (a forecast of it, for a fair test). The history
    must hold the ``train_days + lag_days`` before ``start`` and the horizon after the last issue.
    """
    settings = settings or ForecastSettings()
    if days < 1:
        raise InputError(f"backtest: days must be >= 1, got {days}")
    chosen = list(history.columns) if targets is None else list(targets)
    unknown = [t for t in chosen if t not in history.columns or t not in kinds]
    if unknown:
        raise InputError(f"backtest: unknown target(s) {', '.join(map(repr, unknown[:5]))}")
    start_ts = pd.Timestamp(start).tz_convert("UTC").floor("D")
    last_needed = start_ts + pd.Timedelta(days=days - 1) + pd.Timedelta(minutes=15 * (settings.horizon_steps - 1))
    first_needed = start_ts - pd.Timedelta(days=settings.train_days + settings.lag_days)
    if history.index[0] > first_needed or history.index[-1] < last_needed:
        raise InputError(
            f"backtest: the history spans {history.index[0]} to {history.index[-1]}; "
            f"{days} day(s) from {start_ts.date()} need {first_needed} to {last_needed}"
        )
    frame = history[chosen]
    forecaster = OpenStefForecaster(settings=settings, plants=dict(plants or {}))
    forecaster.fit(frame, until=start_ts.to_pydatetime(), weather=weather, progress=progress)
    levels = np.asarray(settings.quantiles, dtype=float)
    pooled: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {m: [] for m in METHODS}
    for day in range(days):
        issued = (start_ts + pd.Timedelta(days=day)).to_pydatetime()
        forecasts: dict[str, QuantileForecast] = {
            "model": forecaster.predict(frame, issued, weather=weather),
            "persistence": persistence_forecast(
                frame, issued, horizon_steps=settings.horizon_steps, quantiles=settings.quantiles
            ),
            "weekly_profile": weekly_profile_forecast(
                frame, issued, horizon_steps=settings.horizon_steps, quantiles=settings.quantiles
            ),
        }
        times = pd.DatetimeIndex(forecasts["model"].time).tz_localize("UTC")
        truth = frame.reindex(times).to_numpy(dtype=float)
        for method, forecast in forecasts.items():
            pooled[method].append((truth, np.moveaxis(forecast.values, 0, -1)))
        log.debug("event=backtest_day issued=%s", issued.isoformat())
    results = []
    for k, target in enumerate(chosen):
        per_method: dict[str, Score] = {}
        for method in METHODS:
            y = np.concatenate([t[:, k] for t, _ in pooled[method]])
            q = np.concatenate([p[:, k, :] for _, p in pooled[method]])
            per_method[method] = score(y, q, levels)
        y = np.concatenate([t[:, k] for t, _ in pooled["model"]])
        q = np.concatenate([p[:, k, :] for _, p in pooled["model"]])
        lo = q[:, int(np.argmin(np.abs(levels - 0.1)))]
        hi = q[:, int(np.argmin(np.abs(levels - 0.9)))]
        results.append(
            TargetBacktest(
                target=target,
                kind=kinds[target],
                model=per_method["model"],
                persistence=per_method["persistence"],
                weekly_profile=per_method["weekly_profile"],
                coverage_10_90=band_coverage(y, lo, hi),
            )
        )
    return BacktestResult(start=start_ts.to_pydatetime(), days=days, targets=tuple(results))


def _round(value: float) -> float | None:
    return None if not np.isfinite(value) else round(value, 5)
