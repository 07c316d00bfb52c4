"""The forecast record: quantiles of several targets over the same 15-minute intervals.

Every forecaster (OpenSTEF's models, the persistence and weekly-profile baselines) returns a
:class:`QuantileForecast`; the congestion forecast samples correlated scenarios from it through
:meth:`QuantileForecast.inverse_cdf`. Targets are named by the forecaster (for instance a grid
load or generator, a node, a feeder), values are in watts, positive as the target's own sign
convention (a load consumes, a generator produces).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from opendso.errors import InputError

__all__ = ["DEFAULT_QUANTILES", "QuantileForecast", "parse_target", "target_name"]

#: The quantile levels forecasters give unless told otherwise.
DEFAULT_QUANTILES: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)

#: The grid components a target of a power flow can be: a load or a generator.
TARGET_COMPONENTS = ("sym_load", "sym_gen")


def target_name(component: str, name: str) -> str:
    """The forecast target of element ``name`` of ``component`` (``sym_load`` or ``sym_gen``): ``component:name``."""
    if component not in TARGET_COMPONENTS:
        raise InputError(f"forecast target: component must be one of {TARGET_COMPONENTS}, got {component!r}")
    return f"{component}:{name}"


def parse_target(target: str) -> tuple[str, str]:
    """Split a target made by :func:`target_name` into (component, element name); InputError for any other."""
    component, sep, name = target.partition(":")
    if not sep or component not in TARGET_COMPONENTS or not name:
        raise InputError(f"forecast target {target!r} is not 'sym_load:NAME' or 'sym_gen:NAME'")
    return component, name


@dataclass(frozen=True, eq=False)
class QuantileForecast:
    """Quantile forecasts of ``targets`` at the interval starts ``time``.

    ``time``: (T,) ``datetime64[s]`` interval starts in UTC, strictly increasing. ``quantiles``:
    (Q,) strictly increasing levels in (0, 1), including 0.5. ``values``: (Q, T, N) in watts,
    non-decreasing along the quantile axis (checked; a forecaster sorts its quantiles before it
    builds the record). ``issued``: when the forecast was made (timezone-aware).
    """

    targets: tuple[str, ...]
    time: npt.NDArray[np.datetime64]
    quantiles: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    issued: datetime

    def __post_init__(self) -> None:
        q, t, n = len(self.quantiles), len(self.time), len(self.targets)
        if self.values.shape != (q, t, n):
            raise InputError(f"quantile forecast: values have shape {self.values.shape}, expected {(q, t, n)}")
        if len(set(self.targets)) != n:
            raise InputError("quantile forecast: target names repeat")
        levels = np.asarray(self.quantiles, dtype=float)
        if q == 0 or not np.all((levels > 0) & (levels < 1)) or np.any(np.diff(levels) <= 0):
            raise InputError(f"quantile forecast: quantiles must increase strictly within (0, 1), got {levels}")
        if not np.any(np.isclose(levels, 0.5)):
            raise InputError("quantile forecast: the quantiles must include 0.5 (the median)")
        if t > 1 and np.any(np.diff(self.time.astype("datetime64[s]").astype(np.int64)) <= 0):
            raise InputError("quantile forecast: times must increase strictly")
        if not np.all(np.isfinite(self.values)):
            raise InputError("quantile forecast: values must be finite")
        if q > 1 and np.any(np.diff(self.values, axis=0) < -1e-9 * (1.0 + np.abs(self.values[1:]))):
            raise InputError("quantile forecast: values decrease along the quantile axis (quantile crossing)")
        if self.issued.tzinfo is None:
            raise InputError("quantile forecast: issued must be timezone-aware")

    @property
    def steps(self) -> int:
        """Number of intervals."""
        return len(self.time)

    def index(self, target: str) -> int:
        """Column of ``target``; :class:`InputError` naming it when the forecast has no such target."""
        try:
            return self.targets.index(target)
        except ValueError:
            raise InputError(f"quantile forecast: no target {target!r}") from None

    def median(self) -> npt.NDArray[np.float64]:
        """(T, N) the 0.5 quantile."""
        return np.asarray(self.values[int(np.argmin(np.abs(self.quantiles - 0.5)))], dtype=float)

    def quantile(self, level: float) -> npt.NDArray[np.float64]:
        """(T, N) the ``level`` quantile, interpolated linearly between the forecast's levels (clamped outside)."""
        return np.asarray(self.inverse_cdf(np.full((1, self.steps, len(self.targets)), float(level)))[0], dtype=float)

    def inverse_cdf(self, u: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Map probabilities ``u`` (S, T, N) in [0, 1] to values (S, T, N) through each target's forecast distribution.

        Piecewise linear between the forecast's quantile levels; below the lowest and above the
        highest level the outer quantile is held (no extrapolated tails).
        """
        u = np.asarray(u, dtype=float)
        if u.ndim != 3 or u.shape[1:] != (self.steps, len(self.targets)):
            raise InputError(
                f"quantile forecast: probabilities of shape {u.shape}, expected (S, {self.steps}, {len(self.targets)})"
            )
        levels = np.asarray(self.quantiles, dtype=float)
        q = len(levels)
        if q == 1:
            return np.broadcast_to(self.values[0], u.shape).copy()
        clipped = np.clip(u, levels[0], levels[-1])
        upper = np.clip(np.searchsorted(levels, clipped, side="right"), 1, q - 1)
        lower = upper - 1
        lo_level, hi_level = levels[lower], levels[upper]
        weight = (clipped - lo_level) / (hi_level - lo_level)
        t_idx = np.arange(self.steps)[None, :, None]
        n_idx = np.arange(len(self.targets))[None, None, :]
        lo_value = self.values[lower, t_idx, n_idx]
        hi_value = self.values[upper, t_idx, n_idx]
        return np.asarray(lo_value + weight * (hi_value - lo_value), dtype=float)
