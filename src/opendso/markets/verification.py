"""Verification of delivery: what a participant delivered against its baseline, and what it fell short of.

One verification serves demand-response events, UFTP flexibility orders and pilots alike. Inputs
are arrays (T intervals x N participants, W, UFTP sign: consumption positive):

- ``ordered_w``: the ordered *change* of consumption per ISP (a :class:`~opendso.markets.model.FlexOption`'s
  ``power_w``: ``-200_000`` = 200 kW less consumption);
- ``measured_w``: the measured consumption;
- a :class:`~opendso.markets.baselines.Baseline` over the same ISPs.

Results, per ISP and participant:

- **delivered** = measured - baseline (UFTP's ``DeliveredFlexPower``, same sign as the order), and
  the **reduction** = baseline - measured as demand response reports it; both with the band that
  follows from the baseline's (a baseline in [lower, upper] gives delivered in
  [measured - upper, measured - lower]);
- the **deficiency** (UFTP's ``PowerDeficiency``, "flex power sold but not delivered", W >= 0):
  ``|ordered| - clip(delivered * sign(ordered), 0, |ordered|)``; delivery beyond the order earns nothing
  extra, delivery the wrong way counts as none;
- the deficiency **beyond the tolerance**: ``max(0, deficiency - tolerance * |ordered|)`` (a product's
  tolerance, 5 % by default: an ISP delivered within it counts as full);
- per participant: ordered, delivered (in the ordered direction, at most the order) and
  not-delivered energy in kWh, the delivered **share** (delivered / ordered energy; 1 when nothing was
  ordered), its range over the baseline's band, and whether delivery was **full** (every ISP within
  the tolerance).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from opendso.errors import InputError
from opendso.markets.baselines import Baseline
from opendso.markets.model import ISP

__all__ = ["DEFAULT_TOLERANCE", "Verification", "verify_delivery"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: The share of an ordered ISP that may go undelivered and still count as full delivery.
DEFAULT_TOLERANCE = 0.05

_ISP_H = ISP.total_seconds() / 3600.0


@dataclass(frozen=True, eq=False)
class Verification:
    """The verified delivery of ``participants`` over ``baseline.steps`` ISPs (see the module docstring).

    Arrays (T, N) in W unless named ``_kwh`` (N,) or ``share``/``full`` (N,).
    """

    participants: tuple[str, ...]
    start: datetime
    tolerance: float
    ordered_w: FloatArray
    measured_w: FloatArray
    baseline_w: FloatArray
    baseline_lower_w: FloatArray
    baseline_upper_w: FloatArray
    delivered_w: FloatArray
    delivered_low_w: FloatArray
    delivered_high_w: FloatArray
    reduction_w: FloatArray
    reduction_low_w: FloatArray
    reduction_high_w: FloatArray
    deficiency_w: FloatArray
    deficiency_beyond_tolerance_w: FloatArray
    ordered_kwh: FloatArray
    delivered_kwh: FloatArray
    not_delivered_kwh: FloatArray
    not_delivered_beyond_tolerance_kwh: FloatArray
    share: FloatArray
    share_low: FloatArray
    share_high: FloatArray
    full: npt.NDArray[np.bool_]

    @property
    def steps(self) -> int:
        """Number of ISPs."""
        return int(self.ordered_w.shape[0])

    def to_json(self) -> dict[str, Any]:
        """The verification as JSON: per participant, its series (W) and totals."""
        series = (
            "ordered_w",
            "measured_w",
            "baseline_w",
            "baseline_lower_w",
            "baseline_upper_w",
            "delivered_w",
            "delivered_low_w",
            "delivered_high_w",
            "reduction_w",
            "reduction_low_w",
            "reduction_high_w",
            "deficiency_w",
            "deficiency_beyond_tolerance_w",
        )
        totals = (
            "ordered_kwh",
            "delivered_kwh",
            "not_delivered_kwh",
            "not_delivered_beyond_tolerance_kwh",
            "share",
            "share_low",
            "share_high",
        )
        return {
            "start": self.start.isoformat().replace("+00:00", "Z"),
            "isp_minutes": int(ISP.total_seconds() // 60),
            "tolerance": self.tolerance,
            "participants": [
                {
                    "id": p,
                    **{name: getattr(self, name)[:, j].tolist() for name in series},
                    **{name: float(getattr(self, name)[j]) for name in totals},
                    "full": bool(self.full[j]),
                }
                for j, p in enumerate(self.participants)
            ],
        }


def _as_matrix(what: str, values: object, shape: tuple[int, int], baseline: Baseline) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"verification: {what} must be numbers (W)") from None
    if arr.ndim == 1 and shape[1] == 1:
        arr = arr[:, None]
    if arr.shape != shape:
        raise InputError(
            f"verification: {what} has shape {arr.shape}, the baseline has {shape} (ISPs x participants): "
            "the intervals do not line up"
        )
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        k, j = (int(v) for v in bad[0])
        when = (baseline.start + k * ISP).isoformat().replace("+00:00", "Z")
        raise InputError(
            f"verification: {what} of participant {baseline.participants[j]!r} in interval {k} (ISP starting {when})"
            " is not a finite number"
        )
    return arr


def _shortfall(ordered: FloatArray, delivered: FloatArray) -> FloatArray:
    """Deficiency (W >= 0) per ISP: the part of ``|ordered|`` not delivered in the ordered direction."""
    size = np.abs(ordered)
    useful = np.clip(delivered * np.sign(ordered), 0.0, size)
    return np.asarray(size - useful, dtype=float)


def _share(ordered_kwh: FloatArray, deficiency: FloatArray) -> FloatArray:
    missing = deficiency.sum(axis=0) * _ISP_H / 1e3
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(ordered_kwh > 0, 1.0 - missing / np.where(ordered_kwh > 0, ordered_kwh, 1.0), 1.0)
    return np.asarray(share, dtype=float)


def verify_delivery(
    ordered_w: object,
    measured_w: object,
    baseline: Baseline,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Verification:
    """Verify measured consumption against ``baseline`` for an order of ``ordered_w`` (see the module docstring).

    ``ordered_w`` and ``measured_w``: (T, N) like the baseline (or (T,) for one participant), W,
    UFTP sign, ISP by ISP from ``baseline.start``. :class:`InputError` for arrays that do not line up
    with the baseline, for NaN (naming the participant and the interval) and a tolerance outside [0, 1).
    """
    if not isinstance(baseline, Baseline):
        raise InputError(f"verification: baseline must be a Baseline, got {type(baseline).__name__}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not 0.0 <= tolerance < 1.0:
        raise InputError(f"verification: tolerance must be a fraction in [0, 1), got {tolerance!r}")
    shape = baseline.power_w.shape
    ordered = _as_matrix("ordered power", ordered_w, shape, baseline)
    measured = _as_matrix("measured power", measured_w, shape, baseline)
    base, low, high = baseline.power_w, baseline.lower_w, baseline.upper_w

    delivered = measured - base
    deficiency = _shortfall(ordered, delivered)
    beyond = np.maximum(0.0, deficiency - tolerance * np.abs(ordered))
    ordered_kwh = np.abs(ordered).sum(axis=0) * _ISP_H / 1e3
    not_delivered_kwh = deficiency.sum(axis=0) * _ISP_H / 1e3
    # the share's range over the band: the deficiency with the baseline at either end
    share_a = _share(ordered_kwh, _shortfall(ordered, measured - low))
    share_b = _share(ordered_kwh, _shortfall(ordered, measured - high))
    result = Verification(
        participants=baseline.participants,
        start=baseline.start,
        tolerance=float(tolerance),
        ordered_w=ordered,
        measured_w=measured,
        baseline_w=base,
        baseline_lower_w=low,
        baseline_upper_w=high,
        delivered_w=delivered,
        delivered_low_w=measured - high,
        delivered_high_w=measured - low,
        reduction_w=base - measured,
        reduction_low_w=low - measured,
        reduction_high_w=high - measured,
        deficiency_w=deficiency,
        deficiency_beyond_tolerance_w=beyond,
        ordered_kwh=ordered_kwh,
        delivered_kwh=ordered_kwh - not_delivered_kwh,
        not_delivered_kwh=not_delivered_kwh,
        not_delivered_beyond_tolerance_kwh=beyond.sum(axis=0) * _ISP_H / 1e3,
        share=_share(ordered_kwh, deficiency),
        share_low=np.minimum(share_a, share_b),
        share_high=np.maximum(share_a, share_b),
        full=~np.any(beyond > 0.0, axis=0),
    )
    log.debug(
        "event=verification participants=%d intervals=%d full=%d not_delivered_kwh=%.3f",
        len(baseline.participants),
        baseline.steps,
        int(result.full.sum()),
        float(not_delivered_kwh.sum()),
    )
    return result
