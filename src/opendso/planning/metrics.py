"""Forecast skill as OpenSTEF measures it: rMAE and rCRPS from openstef-beam, and the coverage of a band.

Definitions (``openstef_beam.metrics``, used as they are, not rewritten):

- **rMAE** (``metrics_deterministic.rmae``): the mean absolute error of the median forecast
  divided by the range of the measurements, their 95th minus their 5th percentile:
  ``mean(|y - ŷ₀.₅|) / (P95(y) - P5(y))``.
- **rCRPS** (``metrics_probabilistic.rcrps``): the continuous ranked probability score of the
  quantile forecast, twice the interval-weighted mean pinball loss over the forecast's quantile
  levels, divided by the same range ``P95(y) - P5(y)``.

Both are taken over every quarter-hour of every held-out forecast of a target pooled together,
so that days of different level weigh by their errors, not by their own ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from opendso.errors import InputError
from opendso.planning.model import QuantileForecast

__all__ = ["Score", "band_coverage", "score"]


@dataclass(frozen=True)
class Score:
    """rMAE and rCRPS of one forecaster on one target (NaN when the measurements have no range)."""

    rmae: float
    rcrps: float

    def to_json(self) -> dict[str, float | None]:
        """``{"rmae", "rcrps"}`` rounded to 5 decimals (None for NaN)."""
        return {
            k: (None if not np.isfinite(v) else round(float(v), 5))
            for k, v in (("rmae", self.rmae), ("rcrps", self.rcrps))
        }


def score(truth: npt.ArrayLike, quantiles: npt.ArrayLike, levels: npt.ArrayLike) -> Score:
    """:class:`Score` of quantile forecasts ``quantiles`` (samples, Q) at ``levels`` against ``truth`` (samples,).

    Samples where the truth is missing are left out. :class:`InputError` for shapes that do not match.
    """
    from openstef_beam.metrics import rcrps, rmae
    from openstef_core.types import Q

    y = np.asarray(truth, dtype=float)
    pred = np.asarray(quantiles, dtype=float)
    lv = np.asarray(levels, dtype=float)
    if pred.ndim != 2 or pred.shape != (y.size, lv.size):
        raise InputError(f"score: quantiles of shape {pred.shape}, expected {(y.size, lv.size)}")
    keep = np.isfinite(y) & np.all(np.isfinite(pred), axis=1)
    y, pred = y[keep], pred[keep]
    if y.size == 0:
        return Score(float("nan"), float("nan"))
    median = pred[:, int(np.argmin(np.abs(lv - 0.5)))]
    return Score(
        rmae=float(rmae(y, median)),
        rcrps=float(rcrps(y, pred, [Q(float(q)) for q in lv])),
    )


def forecast_samples(
    forecast: QuantileForecast, truth: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per target: (truth (T, N), quantiles (T, N, Q)) of a forecast and the truth at its times."""
    if truth.shape != (forecast.steps, len(forecast.targets)):
        raise InputError(f"score: truth of shape {truth.shape}, expected {(forecast.steps, len(forecast.targets))}")
    return truth, np.moveaxis(forecast.values, 0, -1)


def band_coverage(truth: npt.ArrayLike, lower: npt.ArrayLike, upper: npt.ArrayLike) -> float:
    """The share of finite ``truth`` values within [``lower``, ``upper``]."""
    y = np.asarray(truth, dtype=float)
    lo = np.asarray(lower, dtype=float)
    hi = np.asarray(upper, dtype=float)
    keep = np.isfinite(y)
    if not keep.any():
        return float("nan")
    return float(np.mean((y[keep] >= lo[keep]) & (y[keep] <= hi[keep])))
