"""Correlated scenarios from quantile forecasts: a Gaussian copula on past forecast errors.

A :class:`~opendso.planning.model.QuantileForecast` gives each target's marginal distribution
per interval, but congestion depends on how the targets move *together*: eight PV plants under
one cloud field rise and fall together, household loads much less so. Taking every target's
quantile at the same level (perfect correlation) overstates the spread of the sum and so the
probability of congestion; sampling each target independently understates it. The method here
is the one of Pinson, Madsen, Nielsen, Papaefthymiou and Klöckl (2009), "From probabilistic
forecasts to statistical scenarios of short-term wind power production", Wind Energy 12(1),
51-62, https://doi.org/10.1002/we.284:

1. **Probability integral transform (PIT).** For past forecasts and the values then measured,
   ``u = F_forecast(actual)`` per target and interval (:func:`pit`): uniform on (0, 1) when the
   forecast is calibrated. Where the forecast has no spread (all quantiles equal, e.g. PV at
   night) the PIT carries no information and is left out (NaN).
2. **Normal scores.** ``z = Phi^-1(u)``: standard normal per target if calibrated.
3. **Dependence.** The correlation of ``z`` across targets (pairwise over the intervals where
   both are informative), shrunk towards the identity with the Ledoit-Wolf intensity (Ledoit &
   Wolf 2004, "A well-conditioned estimator for large-dimensional covariance matrices"; sklearn's
   ``ledoit_wolf_shrinkage``) so that a few weeks of history give a well-conditioned matrix for
   hundreds of targets, then made positive definite. Optionally the temporal dependence: one
   lag-one autocorrelation ``rho`` of the normal scores (pooled over targets), so that a
   scenario's deviations persist from one quarter-hour to the next; the space-time covariance
   is then separable, ``Sigma (x) AR1(rho)`` (the exponential covariance of Pinson et al.).
4. **Sampling.** ``z ~ N(0, Sigma (x) AR1(rho))``, ``u = Phi(z)``, and each target's value is its
   forecast's inverse CDF at ``u`` (:meth:`QuantileForecast.inverse_cdf`): every scenario target
   follows its forecast's marginal exactly, the copula only sets how they co-vary.

:func:`comonotone_scenarios` is the naive comparison: every target at the same rank in every
scenario (loads at the mirrored rank, so net injections are perfectly correlated), as if per-target
quantiles could be taken together.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import ndtr, ndtri

from opendso.errors import InputError
from opendso.planning.model import QuantileForecast, parse_target

__all__ = [
    "GaussianCopula",
    "comonotone_batches",
    "comonotone_scenarios",
    "fit_copula",
    "pit",
    "sample_scenarios",
    "scenario_batches",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: PIT values are kept this far inside (0, 1) so that their normal scores stay finite.
PIT_EPS = 1e-4
#: Pairs of targets with fewer informative intervals in common than this get correlation 0.
MIN_PAIRS = 24


def pit(forecast: QuantileForecast, actual: npt.ArrayLike, *, seed: int | None = 0) -> FloatArray:
    """Return ``F_forecast(actual)``, the probability integral transform, (T, N) per interval and target.

    ``actual``: (T, N) values at the forecast's intervals and targets (NaN where not measured).
    The forecast CDF is piecewise linear between its quantiles, as :meth:`QuantileForecast.inverse_cdf`.
    Below the lowest quantile the PIT is drawn uniformly in (0, lowest level), above the highest in
    (highest level, 1) (the forecast says nothing about its tails); where the actual equals a run
    of equal quantiles it is drawn uniformly over that run (randomised PIT). NaN where the actual is
    missing or the forecast has no spread at that interval (nothing to learn there).
    """
    x = np.asarray(actual, dtype=float)
    q_values = np.asarray(forecast.values, dtype=float)
    levels = np.asarray(forecast.quantiles, dtype=float)
    if x.shape != q_values.shape[1:]:
        raise InputError(f"pit: actual values of shape {x.shape}, expected {q_values.shape[1:]}")
    rng = np.random.default_rng(seed)
    lo_v, hi_v = q_values[0], q_values[-1]
    spread = hi_v - lo_v
    scale = np.maximum(np.abs(hi_v), np.abs(lo_v))
    flat = spread <= 1e-9 * (1.0 + scale)
    # F(x-) and F(x): the levels strictly below and at-or-below x, interpolated between quantiles
    below = _cdf(q_values, levels, x, strict=True)
    at = _cdf(q_values, levels, x, strict=False)
    u = below + rng.random(x.shape) * (at - below)
    tail_lo = x < lo_v
    tail_hi = x > hi_v
    u = np.where(tail_lo, rng.random(x.shape) * levels[0], u)
    u = np.where(tail_hi, levels[-1] + rng.random(x.shape) * (1.0 - levels[-1]), u)
    u = np.where(flat | ~np.isfinite(x), np.nan, u)
    return np.clip(u, PIT_EPS, 1.0 - PIT_EPS)


def _cdf(q_values: FloatArray, levels: FloatArray, x: FloatArray, *, strict: bool) -> FloatArray:
    """The piecewise-linear forecast CDF at ``x`` (left limit when ``strict``), within [levels[0], levels[-1]]."""
    count = np.sum(q_values < x[None] if strict else q_values <= x[None], axis=0)  # quantiles below x
    q = len(levels)
    # between quantile count-1 and count: interpolate; at the ends clamp to the outer level
    upper = np.clip(count, 1, q - 1)
    lower = upper - 1
    t_idx = np.arange(x.shape[0])[:, None]
    n_idx = np.arange(x.shape[1])[None, :]
    v_lo = q_values[lower, t_idx, n_idx]
    v_hi = q_values[upper, t_idx, n_idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(v_hi > v_lo, (x - v_lo) / (v_hi - v_lo), 0.0 if strict else 1.0)
    w = np.clip(np.nan_to_num(w), 0.0, 1.0)
    u = levels[lower] + w * (levels[upper] - levels[lower])
    u = np.where(count == 0, levels[0], u)
    return np.asarray(np.where(count >= q, levels[-1], u), dtype=float)


@dataclass(frozen=True, eq=False)
class GaussianCopula:
    """The dependence of the targets' forecast errors: a correlation of normal scores and a lag-one autocorrelation.

    ``targets``: (N,) names; ``correlation``: (N, N) positive definite with unit diagonal;
    ``rho``: lag-one autocorrelation in time (0: intervals independent); ``shrinkage``: the
    Ledoit-Wolf intensity used; ``samples``: informative intervals it was fitted on.
    """

    targets: tuple[str, ...]
    correlation: FloatArray
    rho: float = 0.0
    shrinkage: float = 0.0
    samples: int = 0

    def __post_init__(self) -> None:
        n = len(self.targets)
        if self.correlation.shape != (n, n):
            raise InputError(f"copula: correlation of shape {self.correlation.shape}, expected {(n, n)}")
        if not -1.0 < self.rho < 1.0:
            raise InputError(f"copula: rho must lie in (-1, 1), got {self.rho}")

    @classmethod
    def independent(cls, targets: Sequence[str]) -> GaussianCopula:
        """The copula of independent targets (identity correlation), for a forecast without history."""
        return cls(tuple(targets), np.eye(len(targets)))

    def for_targets(self, targets: Sequence[str]) -> FloatArray:
        """The correlation among ``targets`` in their order; a target the copula does not know is independent."""
        index = {t: i for i, t in enumerate(self.targets)}
        rows = np.array([index.get(t, -1) for t in targets], dtype=np.int64)
        known = rows >= 0
        out = np.eye(len(targets))
        k = np.flatnonzero(known)
        out[np.ix_(k, k)] = self.correlation[np.ix_(rows[k], rows[k])]
        return out


def fit_copula(
    forecasts: Sequence[QuantileForecast],
    actuals: pd.DataFrame,
    *,
    temporal: bool = True,
    seed: int | None = 0,
) -> GaussianCopula:
    """Fit the Gaussian copula of the targets' errors from past ``forecasts`` and the ``actuals`` then measured.

    ``actuals``: a DataFrame indexed by UTC times with one column per target (as
    :func:`~opendso.planning.history.profile_history` gives); each forecast is scored at its own
    intervals (the ones the actuals cover). Every forecast must have the same targets. See the
    module docstring for the method. :class:`InputError` when no forecast is given, the targets
    differ, or the actuals cover none of the forecasts' intervals.
    """
    if not forecasts:
        raise InputError("fit_copula: no past forecasts to learn the dependence from")
    targets = forecasts[0].targets
    if any(f.targets != targets for f in forecasts):
        raise InputError("fit_copula: the past forecasts must all have the same targets")
    missing = [t for t in targets if t not in actuals.columns]
    if missing:
        raise InputError(f"fit_copula: no actuals for target(s) {', '.join(missing[:5])}")
    if not isinstance(actuals.index, pd.DatetimeIndex) or actuals.index.tz is None:
        raise InputError("fit_copula: actuals must be indexed by timezone-aware times")
    table = actuals[list(targets)]
    index = actuals.index.tz_convert("UTC").tz_localize(None)
    scores: list[FloatArray] = []
    for k, forecast in enumerate(forecasts):
        times = pd.DatetimeIndex(forecast.time.astype("datetime64[ns]"))
        rows = index.get_indexer(times)
        if (rows < 0).all():
            continue
        actual = np.full((len(times), len(targets)), np.nan)
        actual[rows >= 0] = table.to_numpy(dtype=float)[rows[rows >= 0]]
        u = pit(forecast, actual, seed=None if seed is None else seed + k)
        scores.append(ndtri(u))
    if not scores:
        raise InputError("fit_copula: the actuals cover none of the past forecasts' intervals")
    correlation, shrinkage, samples = _shrunk_correlation(np.concatenate(scores))
    rho = _lag_one(scores) if temporal else 0.0
    log.info("event=copula_fit targets=%d samples=%d shrinkage=%.3f rho=%.3f", len(targets), samples, shrinkage, rho)
    return GaussianCopula(targets, correlation, rho=rho, shrinkage=shrinkage, samples=samples)


def _shrunk_correlation(z: FloatArray) -> tuple[FloatArray, float, int]:
    """Pairwise-complete correlation of normal scores (K, N), shrunk to the identity (Ledoit-Wolf), made definite."""
    from sklearn.covariance import ledoit_wolf_shrinkage  # type: ignore[import-untyped]

    ok = np.isfinite(z)
    filled = np.where(ok, z, 0.0)
    m = ok.astype(float)
    pairs = m.T @ m
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(m.sum(0) > 0, filled.sum(0) / np.maximum(m.sum(0), 1.0), 0.0)
        centred = np.where(ok, z - mean, 0.0)
        cov = (centred.T @ centred) / np.maximum(pairs, 1.0)
        # each pair's variances over the intervals the pair shares
        var_i = ((centred**2).T @ m) / np.maximum(pairs, 1.0)
        corr = cov / np.sqrt(var_i * var_i.T)
    corr = np.where((pairs >= MIN_PAIRS) & np.isfinite(corr), corr, 0.0)
    np.fill_diagonal(corr, 1.0)
    corr = np.clip(corr, -1.0, 1.0)
    rows = ok.any(axis=1)
    samples = int(rows.sum())
    if samples >= 2:
        std = np.sqrt(np.maximum(np.diag(cov), 1e-12))
        shrinkage = float(ledoit_wolf_shrinkage(centred[rows] / std, assume_centered=True))
    else:
        shrinkage = 1.0
    shrunk = (1.0 - shrinkage) * corr + shrinkage * np.eye(corr.shape[0])
    return _nearest_correlation(shrunk), shrinkage, samples


def _nearest_correlation(c: FloatArray, floor: float = 1e-6) -> FloatArray:
    """``c`` with its eigenvalues raised to ``floor`` and its diagonal rescaled to 1 (a valid correlation)."""
    c = 0.5 * (c + c.T)
    w, v = np.linalg.eigh(c)
    if w.min() >= floor:
        return c
    fixed = (v * np.maximum(w, floor)) @ v.T
    d = np.sqrt(np.diag(fixed))
    return np.asarray(fixed / np.outer(d, d), dtype=float)


def _lag_one(scores: Sequence[FloatArray]) -> float:
    """The lag-one autocorrelation of the normal scores, pooled over forecasts and targets (within each forecast)."""
    a = np.concatenate([s[:-1] for s in scores if s.shape[0] > 1])
    b = np.concatenate([s[1:] for s in scores if s.shape[0] > 1])
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < MIN_PAIRS:
        return 0.0
    rho = float(np.corrcoef(a[ok], b[ok])[0, 1])
    return float(np.clip(rho, -0.99, 0.99)) if np.isfinite(rho) else 0.0


def sample_scenarios(
    forecast: QuantileForecast, copula: GaussianCopula | None, scenarios: int, *, seed: int | None = 0
) -> FloatArray:
    """Return ``scenarios`` correlated scenarios (S, T, N) of the forecast's targets, in W.

    Normal scores ``z = L e`` per interval (``L`` the Cholesky factor of the copula's correlation
    among the forecast's targets), chained in time as AR(1) with the copula's ``rho``, mapped to
    probabilities ``Phi(z)`` and through each target's forecast distribution. ``copula`` None:
    independent targets. :func:`scenario_batches` gives the same scenarios a batch at a time.
    """
    return np.concatenate(list(scenario_batches(forecast, copula, scenarios, seed=seed, batch=scenarios)))


def scenario_batches(
    forecast: QuantileForecast,
    copula: GaussianCopula | None,
    scenarios: int,
    *,
    seed: int | None = 0,
    batch: int = 64,
) -> Iterator[FloatArray]:
    """Yield the scenarios of :func:`sample_scenarios` in batches of at most ``batch`` (memory stays bounded).

    The draws come from one generator in order, so the scenarios depend on ``seed`` and ``batch``.
    """
    if scenarios < 1:
        raise InputError(f"scenarios: need at least one, got {scenarios}")
    n, t = len(forecast.targets), forecast.steps
    copula = copula or GaussianCopula.independent(forecast.targets)
    chol = np.linalg.cholesky(copula.for_targets(forecast.targets))
    rng = np.random.default_rng(seed)
    rho = copula.rho
    for first in range(0, scenarios, max(1, batch)):
        count = min(max(1, batch), scenarios - first)
        e = rng.standard_normal((count, t, n)) @ chol.T
        if rho != 0.0 and t > 1:
            from scipy.signal import lfilter

            # z_t = rho z_(t-1) + sqrt(1 - rho^2) e_t, started stationary: unit variance at every t
            innovations = e * np.sqrt(1.0 - rho * rho)
            innovations[:, 0] = e[:, 0]
            e = np.asarray(lfilter([1.0], [1.0, -rho], innovations, axis=1), dtype=float)
        yield forecast.inverse_cdf(ndtr(e))


def comonotone_scenarios(forecast: QuantileForecast, scenarios: int) -> FloatArray:
    """Return ``scenarios`` scenarios (S, T, N) with every target at the same rank: the naive 'quantiles together'.

    Scenario ``s`` takes level ``u_s = (s + 0.5) / S`` for every generator and ``1 - u_s`` for
    every load, at every interval: the net injections are perfectly correlated, which is what
    adding per-node quantiles as if they were one distribution assumes. Shown beside the copula
    scenarios to measure how much it overstates congestion.
    """
    return np.concatenate(list(comonotone_batches(forecast, scenarios, batch=scenarios)))


def comonotone_batches(forecast: QuantileForecast, scenarios: int, *, batch: int = 64) -> Iterator[FloatArray]:
    """Yield the scenarios of :func:`comonotone_scenarios` in batches of at most ``batch``."""
    if scenarios < 1:
        raise InputError(f"scenarios: need at least one, got {scenarios}")
    load = np.array([parse_target(t)[0] == "sym_load" for t in forecast.targets])
    for first in range(0, scenarios, max(1, batch)):
        u = (np.arange(first, min(first + max(1, batch), scenarios)) + 0.5) / scenarios
        levels = np.where(load[None, :], 1.0 - u[:, None], u[:, None])
        probabilities = np.broadcast_to(levels[:, None, :], (u.size, forecast.steps, len(forecast.targets)))
        yield forecast.inverse_cdf(np.ascontiguousarray(probabilities))
