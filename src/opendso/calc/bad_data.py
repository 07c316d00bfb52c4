"""The bad-data test: residuals of a state estimate, normalised by their variance, and the suspects.

Every scalar measurement (u, p, q, i magnitudes) gets a row in a residual table
(:data:`RESIDUAL_DTYPE`): measured value, sigma, residual ``r`` (measured - estimated), weighted
residual ``r / sigma`` and normalised residual ``r / sqrt(Omega_ii)``, where
``Omega_ii = sigma_i**2 * d r_i / d z_i`` is the residual variance. The sensitivity
``d r_i / d z_i`` (``1 - K_ii``, K the hat matrix) is measured, not derived: one sparse batch
run perturbs each measurement by one sigma, so it holds for whichever estimator ran. The
measurement with the largest normalised residual above the threshold (3 by default) is the
suspect (the classical largest-normalised-residual test); critical measurements (sensitivity
zero) cannot be tested and get NaN.

Cost: each normalised measurement is one scenario of the batch, a full estimation, and
power-grid-model runs the unperturbed case once more before the scenarios; so only the
``candidates`` (ten by default) with the largest weighted residuals are normalised. The
sensitivities cannot come cheaper from the estimate itself: power-grid-model does not expose its
gain matrix, and one scenario perturbing several measurements mixes their off-diagonal terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from power_grid_model import ComponentType, PowerGridModel, initialize_array
from power_grid_model.errors import PowerGridError

#: One row per scalar measurement in :attr:`~opendso.calc.estimation.EstimationResult.residuals`.
RESIDUAL_DTYPE = np.dtype(
    [
        ("sensor", "i4"),
        ("quantity", "U1"),  # u, p, q or i
        ("measured", "f8"),
        ("sigma", "f8"),
        ("residual", "f8"),  # measured - estimated (SI)
        ("weighted", "f8"),  # residual / sigma
        ("sensitivity", "f8"),  # d residual / d measured = 1 - K_ii (NaN when not computed)
        ("normalised", "f8"),  # residual / sqrt(Omega_ii); NaN for critical measurements
    ]
)

_QUANTITIES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    # component: (quantity, measured field, sigma field, residual field)
    "sym_voltage_sensor": (("u", "u_measured", "u_sigma", "u_residual"),),
    "sym_power_sensor": (("p", "p_measured", "p_sigma", "p_residual"), ("q", "q_measured", "q_sigma", "q_residual")),
    "sym_current_sensor": (("i", "i_measured", "i_sigma", "i_residual"),),
}


def residual_table(sensors: Mapping[str, np.ndarray], output: Mapping[str, np.ndarray]) -> np.ndarray:
    """Return one row per scalar magnitude measurement (u, p, q, i), in component then quantity order.

    ``normalised`` starts as the weighted residual and ``sensitivity`` as NaN: see
    :func:`normalise_residuals`.
    """
    parts: list[np.ndarray] = []
    for component, quantities in _QUANTITIES.items():
        array = sensors.get(component)
        if array is None:
            continue
        res = output[component]
        sigma_p = array["power_sigma"] if component == "sym_power_sensor" else None
        for quantity, meas, sig, resid in quantities:
            rows = np.zeros(array.size, dtype=RESIDUAL_DTYPE)
            rows["sensor"] = array["id"]
            rows["quantity"] = quantity
            rows["measured"] = array[meas]
            sigma = array[sig]
            if sigma_p is not None:
                sigma = np.where(np.isfinite(sigma), sigma, sigma_p)
            rows["sigma"] = sigma
            rows["residual"] = res[resid]
            # a sigma of 0 (a meter of a de-energised section) weighs nothing: NaN, not 0/0
            rows["weighted"] = np.divide(res[resid], sigma, out=np.full(array.size, np.nan), where=sigma > 0)
            rows["sensitivity"] = np.nan
            rows["normalised"] = rows["weighted"]
            parts.append(rows)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=RESIDUAL_DTYPE)


def normalise_residuals(
    model: PowerGridModel,
    sensors: Mapping[str, np.ndarray],
    residuals: np.ndarray,
    *,
    options: Mapping[str, Any],
    threading: int,
    candidates: int | None,
) -> None:
    """Fill ``sensitivity`` and ``normalised`` of the ``candidates`` rows with the largest weighted residuals.

    ``model`` is the model the estimate came from (with ``sensors`` in it) and ``options`` the
    estimation options it ran with. Only the ``candidates`` measurements with the largest
    weighted residuals are normalised (all with ``None``); the other rows keep their weighted
    residual, a lower bound of their normalised one (``sqrt(Omega_ii) <= sigma``), so the largest
    value is always a normalised candidate. Rows whose sensitivity is (near) zero, critical
    measurements, get NaN.
    """
    if not residuals.size:
        return
    if candidates is None or candidates >= residuals.size:
        rows = np.arange(residuals.size)
    else:
        weighted = np.nan_to_num(np.abs(residuals["weighted"]), nan=-1.0)
        rows = np.sort(np.argpartition(-weighted, candidates - 1)[:candidates]).astype(np.int64)
    sensitivity = _sensitivity(model, sensors, residuals, options, threading, rows)
    residuals["sensitivity"] = sensitivity
    ok = (sensitivity > 1e-6) & (residuals["sigma"] > 0)
    scale = residuals["sigma"] * np.sqrt(np.where(ok, sensitivity, 1.0))
    normalised = np.divide(residuals["residual"], scale, out=np.full(scale.shape, np.nan), where=ok)
    residuals["normalised"][rows] = np.where(ok[rows], normalised[rows], np.nan)


def largest_normalised(residuals: np.ndarray) -> float | None:
    """Return the largest absolute normalised residual (None when none could be computed)."""
    values = np.abs(residuals["normalised"])
    values = values[np.isfinite(values)]
    return float(values.max()) if values.size else None


def rows_above(residuals: np.ndarray, threshold: float) -> np.ndarray:
    """Return the residual rows above ``threshold``, largest normalised residual first."""
    norm = np.abs(residuals["normalised"])
    sel = np.isfinite(norm) & (norm > threshold)
    rows = residuals[sel]
    ranked: np.ndarray = rows[np.argsort(-np.abs(rows["normalised"]), kind="stable")]
    return ranked


def _sensitivity(
    model: PowerGridModel,
    sensors: Mapping[str, np.ndarray],
    residuals: np.ndarray,
    options: Mapping[str, Any],
    threading: int,
    rows: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:
    """Return d residual_i / d measured_i for the given residual rows (NaN elsewhere).

    One sparse batch with one scenario per row: scenario ``s`` moves measurement ``rows[s]`` by
    one sigma and reads back its own residual.
    """
    n_rows = residuals.size
    sens = np.full(n_rows, np.nan)
    if not rows.size:
        return sens
    # where each residual row comes from: component, quantity number and sensor position
    blocks: list[tuple[str, int, int, int]] = []  # (component, k, first row, size)
    start = 0
    for component, quantities in _QUANTITIES.items():
        array = sensors.get(component)
        if array is None:
            continue
        for k in range(len(quantities)):
            blocks.append((component, k, start, array.size))
            start += array.size
    update: dict[str, Any] = {}
    reads: list[tuple[str, str, npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
    for component in {b[0] for b in blocks}:
        array = sensors[component]
        mine = [(k, first, size) for c, k, first, size in blocks if c == component]
        scen: list[npt.NDArray[np.int64]] = []
        pos: list[npt.NDArray[np.int64]] = []
        kind: list[npt.NDArray[np.int64]] = []
        for k, first, size in mine:
            hit = np.flatnonzero((rows >= first) & (rows < first + size))
            scen.append(hit)
            pos.append(rows[hit] - first)
            kind.append(np.full(hit.size, k))
        s_all, p_all, k_all = np.concatenate(scen), np.concatenate(pos), np.concatenate(kind)
        if not s_all.size:
            continue
        order = np.argsort(s_all, kind="stable")
        s_all, p_all, k_all = s_all[order], p_all[order], k_all[order]
        upd = initialize_array("update", component, s_all.size)
        upd["id"] = array["id"][p_all]
        for k, (_, meas, _, resid) in enumerate(_QUANTITIES[component]):
            sel = k_all == k
            upd[meas][sel] = array[meas][p_all[sel]] + residuals["sigma"][rows[s_all[sel]]]
            reads.append((component, resid, s_all[sel], p_all[sel], rows[s_all[sel]]))
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.add.at(indptr, s_all + 1, 1)
        update[component] = {"data": upd, "indptr": np.cumsum(indptr)}
    try:
        # only the residuals read back, as columns: the batch produces nothing else
        wanted = {c: [q[3] for q in _QUANTITIES[c]] for c in update}
        batch = model.calculate_state_estimation(
            update_data=update,
            output_component_types=cast(Any, wanted),
            threading=threading,
            continue_on_batch_error=True,
            **options,
        )
    except PowerGridError:
        return sens
    failed = _failed_scenarios(model, rows.size)
    for component, resid, scenarios, positions, residual_rows in reads:
        perturbed = batch[ComponentType(component)][resid][scenarios, positions]
        value = (perturbed - residuals["residual"][residual_rows]) / residuals["sigma"][residual_rows]
        sens[residual_rows] = np.where(failed[scenarios], np.nan, value)
    clipped: npt.NDArray[np.float64] = np.clip(sens, 0.0, 1.0)
    return clipped


def _failed_scenarios(model: PowerGridModel, n: int) -> npt.NDArray[np.bool_]:
    """Scenarios of the last batch that failed (continue_on_batch_error keeps the rest)."""
    failed = np.zeros(n, dtype=bool)
    error = model.batch_error
    if error is not None:
        failed[np.asarray(error.failed_scenarios, dtype=np.int64)] = True
    return failed
