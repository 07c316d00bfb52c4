"""Volt/VAR optimisation (advisory): transformer taps, switched shunts and DER reactive power.

:func:`optimise_volt_var` chooses, for one state of the grid (the model's input, or one step of
its profiles), the tap position of every transformer with a tap changer, the status of every
switched shunt (capacitor or reactor bank) and the reactive power of every generator (``sym_gen``)
within a power-factor limit, so that every energised node's voltage stays within
``[u_min_pu, u_max_pu]`` and the active losses are as small as possible. With ``cvr`` the
objective also counts the loads' voltage-dependent consumption (conservation voltage
reduction, CVR factor ``cvr_factor``: consumption ~ U^cvr_factor), which pushes voltages to the low
end of the band.

Method: successive linear programming (SLP) with a trust region, each linear programme a
mixed-integer one solved by HiGHS (through highspy):

1. Around the present state, one batch power flow of power-grid-model (Newton-Raphson) gives
   the sensitivities by finite differences: each tap group one step up and one down, each
   generator's Q up and down by a small amount (central differences, so the loss gradient is
   exact for the quadratic dependence of losses on Q), each shunt switched over.
2. The MILP minimises the linearised losses (plus the CVR term) subject to the linearised
   voltages in the band (less a small margin), the trust region and the control limits. Tap
   changes and shunt states are integer variables, so discrete taps are never rounded after the
   fact. Band violations carry slack variables with a large penalty, so a state that is out of
   band as found is driven into the band first and its losses second.
3. The MILP's answer is checked with a full power flow; it is accepted when the merit (losses
   plus penalised violations) falls, otherwise the trust region shrinks. The loop stops when the
   trust region is small or the merit no longer falls.

Transformers in parallel (the same two electrical nodes, bus couplers closed) form one tap
group and keep equal taps, so the optimisation never creates circulating reactive current.

Advisory only: the result is a record of set-points (:class:`VvoResult`); nothing is sent. A
closed loop would run this on the estimated state of the real-time cycle (a ``Monitor``
subscriber, like ANM), hand the tap and shunt changes to the switching dispatcher as commands on
a ``CommandPath`` of its own (``vvo``) and the DER Q set-points to the per-DER set-point arbiter,
which merges them with ANM, demand response and market requests by priority before the set-point
gate (range, ramp, ownership, stale state) and the telemetry adapters' ``send_setpoint``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from power_grid_model import CalculationMethod, PowerGridModel
from power_grid_model.errors import PowerGridError
from scipy.sparse import csc_matrix

from opendso.calc.powerflow import PowerFlowResult, run_power_flow
from opendso.errors import CalculationError, InputError
from opendso.grid.model import Grid, electrical_nodes

__all__ = [
    "DerSetpoint",
    "ShuntSetting",
    "TapSetting",
    "VvoResult",
    "VvoSettings",
    "grid_at_step",
    "optimise_volt_var",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: Branch components whose active losses are counted (p_from + p_to).
LOSS_COMPONENTS: tuple[str, ...] = ("line", "link", "transformer", "generic_branch", "asym_line")

#: Penalty on a band violation, in W of objective per p.u. of violation: larger than any loss.
_VIOLATION_PENALTY_W_PER_PU = 1e10

#: The solver named in results.
SOLVER = "HiGHS (highspy)"


@dataclass(frozen=True)
class VvoSettings:
    """What Volt/VAR optimisation may do and must respect (voltages per unit of the node's rating).

    ``power_factor_min`` bounds each generator's reactive power to ``|q| <= p * tan(acos(pf))``
    at its present active power (inductive and capacitive alike; IEEE 1547-2018 clause 5.3 asks
    DER for a power factor of at least 0.9 either way). ``margin_pu`` keeps the linearised
    voltages this far inside the band so linearisation errors do not leave the band.
    """

    u_min_pu: float = 0.9
    u_max_pu: float = 1.1
    power_factor_min: float = 0.9
    taps: bool = True
    shunts: bool = True
    der_q: bool = True
    cvr: bool = False
    cvr_factor: float = 0.8
    margin_pu: float = 0.002
    max_iterations: int = 40
    tap_trust: int = 4
    q_trust: float = 0.5

    def check(self) -> None:
        """Raise :class:`~opendso.errors.InputError` naming the first setting that makes no sense."""
        if not 0 < self.u_min_pu < self.u_max_pu:
            raise InputError(f"u_min {self.u_min_pu} / u_max {self.u_max_pu}: need 0 < u_min < u_max")
        if self.u_max_pu - self.u_min_pu <= 2 * self.margin_pu:
            raise InputError(f"voltage band {self.u_min_pu}..{self.u_max_pu} is narrower than twice the margin")
        if not 0 < self.power_factor_min <= 1:
            raise InputError(f"power factor limit {self.power_factor_min}: must be in (0, 1]")
        if not 0 <= self.cvr_factor <= 3:
            raise InputError(f"CVR factor {self.cvr_factor}: must be in [0, 3]")
        if self.max_iterations < 1:
            raise InputError(f"max_iterations {self.max_iterations}: must be at least 1")


@dataclass(frozen=True)
class TapSetting:
    """The tap of one transformer before and after (``tap_min``..``tap_max`` from the model)."""

    transformer: str
    tap_before: int
    tap_after: int
    tap_min: int
    tap_max: int


@dataclass(frozen=True)
class ShuntSetting:
    """The status (1 in, 0 out) of one switched shunt before and after."""

    shunt: str
    status_before: int
    status_after: int


@dataclass(frozen=True)
class DerSetpoint:
    """The reactive power of one generator before and after (generator convention: + exports Mvar)."""

    der: str
    node: str
    p_mw: float
    q_before_mvar: float
    q_after_mvar: float
    q_limit_mvar: float


@dataclass(frozen=True)
class StateFigures:
    """Losses, voltage extremes and consumption of one power-flow state (energised nodes only)."""

    losses_mw: float
    u_min_pu: float
    u_max_pu: float
    violation_pu: float
    load_mw: float
    load_cvr_mw: float

    def to_dict(self) -> dict[str, float]:
        """The figures as a JSON object."""
        return {
            "losses_mw": self.losses_mw,
            "u_min_pu": self.u_min_pu,
            "u_max_pu": self.u_max_pu,
            "violation_pu": self.violation_pu,
            "load_mw": self.load_mw,
            "load_cvr_mw": self.load_cvr_mw,
        }


@dataclass(frozen=True)
class VvoResult:
    """The advisory Volt/VAR set-points, the figures before and after, and the final power flow."""

    grid: str
    step: int | None
    settings: VvoSettings
    taps: tuple[TapSetting, ...]
    shunts: tuple[ShuntSetting, ...]
    ders: tuple[DerSetpoint, ...]
    before: StateFigures
    after: StateFigures
    iterations: int
    power_flows: int
    seconds: float
    powerflow: PowerFlowResult = field(repr=False)

    @property
    def in_band(self) -> bool:
        """Whether every energised node is within the band after optimisation (1e-6 p.u. tolerance)."""
        return self.after.violation_pu <= 1e-6

    def to_dict(self, *, with_powerflow: bool = True) -> dict[str, Any]:
        """Return the result in the JSON layout of ``opendso vvo --json``."""
        s = self.settings
        out: dict[str, Any] = {
            "grid": self.grid,
            "step": self.step,
            "advisory": True,
            "solver": SOLVER,
            "settings": {
                "u_min_pu": s.u_min_pu,
                "u_max_pu": s.u_max_pu,
                "power_factor_min": s.power_factor_min,
                "cvr": s.cvr,
                "cvr_factor": s.cvr_factor,
                "taps": s.taps,
                "shunts": s.shunts,
                "der_q": s.der_q,
            },
            "in_band": self.in_band,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "losses_saved_mw": self.before.losses_mw - self.after.losses_mw,
            "iterations": self.iterations,
            "power_flows": self.power_flows,
            "seconds": self.seconds,
            "taps": [t.__dict__.copy() for t in self.taps],
            "shunts": [x.__dict__.copy() for x in self.shunts],
            "ders": [d.__dict__.copy() for d in self.ders],
        }
        if with_powerflow:
            out["powerflow"] = self.powerflow.to_dict()
        return out


def grid_at_step(grid: Grid, step: int) -> Grid:
    """Return the grid with the values of its profiles at ``step`` written into its input arrays."""
    if grid.profiles is None:
        raise InputError(f"{grid.name}: the grid has no time profiles, so --step cannot be used")
    if not 0 <= step < grid.profiles.steps:
        raise InputError(f"{grid.name}: step {step} outside the profile range 0..{grid.profiles.steps - 1}")
    update = grid.profiles.update_data(step, step + 1)
    arrays: dict[str, np.ndarray] = {}
    for component, columns in update.items():
        arr = grid.component(component).copy()
        ids = columns.get("id")
        if ids is None:
            rows = np.arange(arr.size)
        else:
            order = np.argsort(arr["id"])
            rows = order[np.searchsorted(arr["id"], ids[0], sorter=order)]
        for attribute, values in columns.items():
            if attribute != "id":
                arr[attribute][rows] = values[0]
        arrays[component] = arr
    return grid.with_input(**arrays)


@dataclass
class _Controls:
    """The control variables: tap groups, shunts, generators, with their present values and bounds."""

    tap_rows: list[npt.NDArray[np.int64]]  # transformer rows per group
    tap: FloatArray  # present tap per group
    tap_lo: FloatArray
    tap_hi: FloatArray
    shunt_rows: npt.NDArray[np.int64]
    shunt: FloatArray  # present status per shunt (0/1)
    gen_rows: npt.NDArray[np.int64]
    q: FloatArray  # present q per generator, var
    q_lim: FloatArray  # |q| limit per generator, var

    @property
    def n_tap(self) -> int:
        return len(self.tap_rows)

    @property
    def n_shunt(self) -> int:
        return int(self.shunt_rows.size)

    @property
    def n_gen(self) -> int:
        return int(self.gen_rows.size)


def _controls(data: Mapping[str, np.ndarray], settings: VvoSettings) -> _Controls:
    tr = data.get("transformer")
    groups: list[npt.NDArray[np.int64]] = []
    if settings.taps and tr is not None and tr.size:
        usable = (
            (tr["tap_max"] != tr["tap_min"]) & (tr["tap_size"] > 0) & (tr["from_status"] == 1) & (tr["to_status"] == 1)
        )
        label = electrical_nodes(data)
        node_ids = data["node"]["id"]
        order = np.argsort(node_ids)
        ends = [label[order[np.searchsorted(node_ids, tr[end], sorter=order)]] for end in ("from_node", "to_node")]
        keys: dict[tuple[int, int], list[int]] = {}
        for row in np.flatnonzero(usable):
            a, b = int(ends[0][row]), int(ends[1][row])
            keys.setdefault((min(a, b), max(a, b)), []).append(int(row))
        groups = [np.asarray(rows, dtype=np.int64) for rows in keys.values()]
    tap = np.array([float(tr["tap_pos"][g[0]]) for g in groups]) if groups and tr is not None else np.zeros(0)
    lo = np.zeros(len(groups))
    hi = np.zeros(len(groups))
    if groups and tr is not None:
        for k, g in enumerate(groups):
            a = np.minimum(tr["tap_min"][g], tr["tap_max"][g]).astype(float)
            b = np.maximum(tr["tap_min"][g], tr["tap_max"][g]).astype(float)
            lo[k], hi[k] = a.max(), b.min()
            tap[k] = float(np.clip(np.round(np.mean(tr["tap_pos"][g])), lo[k], hi[k]))
    sh = data.get("shunt")
    shunt_rows = (
        np.flatnonzero(np.ones(sh.size, dtype=bool)) if settings.shunts and sh is not None else np.zeros(0, np.int64)
    )
    shunt = sh["status"][shunt_rows].astype(float) if sh is not None and shunt_rows.size else np.zeros(0)
    gen = data.get("sym_gen")
    if settings.der_q and gen is not None and gen.size:
        gen_rows = np.flatnonzero(gen["status"] == 1).astype(np.int64)
        p = np.abs(gen["p_specified"][gen_rows].astype(float))
        q_lim = p * math.tan(math.acos(settings.power_factor_min))
        q = np.clip(gen["q_specified"][gen_rows].astype(float), -q_lim, q_lim)
        keep = q_lim > 1.0  # a generator without active power (PV at night) offers no Q here
        gen_rows, q, q_lim = gen_rows[keep], q[keep], q_lim[keep]
    else:
        gen_rows, q, q_lim = np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    return _Controls(groups, tap, lo, hi, shunt_rows.astype(np.int64), shunt, gen_rows, q, q_lim)


class _Evaluator:
    """Batch power flows of control states on one power-grid-model model, and their figures."""

    def __init__(self, grid: Grid, data: Mapping[str, np.ndarray], ctl: _Controls, settings: VvoSettings) -> None:
        self.grid = grid
        self.data = data
        self.ctl = ctl
        self.settings = settings
        self.model = PowerGridModel(dict(data), system_frequency=grid.frequency_hz)
        self.components = [c for c in LOSS_COMPONENTS if c in data and data[c].size]
        self.loads = data.get("sym_load")
        self.power_flows = 0
        load_node_ids = self.loads["node"] if self.loads is not None else np.zeros(0, np.int32)
        node_ids = data["node"]["id"]
        order = np.argsort(node_ids)
        self.load_node_rows = order[np.searchsorted(node_ids, load_node_ids, sorter=order)]

    def _update(self, tap: FloatArray, shunt: FloatArray, q: FloatArray) -> dict[str, dict[str, np.ndarray]]:
        """Columnar batch update for scenarios (rows of ``tap``, ``shunt``, ``q``)."""
        n = tap.shape[0]
        update: dict[str, dict[str, np.ndarray]] = {}
        ctl = self.ctl
        if ctl.n_tap:
            tr = self.data["transformer"]
            pos = np.broadcast_to(tr["tap_pos"], (n, tr.size)).astype(np.int8).copy()
            for k, rows in enumerate(ctl.tap_rows):
                pos[:, rows] = tap[:, k : k + 1].astype(np.int8)
            update["transformer"] = {"id": np.broadcast_to(tr["id"], (n, tr.size)).copy(), "tap_pos": pos}
        if ctl.n_shunt:
            sh = self.data["shunt"]
            status = np.broadcast_to(sh["status"], (n, sh.size)).astype(np.int8).copy()
            status[:, ctl.shunt_rows] = shunt.astype(np.int8)
            update["shunt"] = {"id": np.broadcast_to(sh["id"], (n, sh.size)).copy(), "status": status}
        if ctl.n_gen:
            gen = self.data["sym_gen"]
            qs = np.broadcast_to(gen["q_specified"], (n, gen.size)).astype(float).copy()
            qs[:, ctl.gen_rows] = q
            update["sym_gen"] = {"id": np.broadcast_to(gen["id"], (n, gen.size)).copy(), "q_specified": qs}
        return update

    def run(
        self, tap: FloatArray, shunt: FloatArray, q: FloatArray
    ) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
        """Per scenario: node voltages (n, nodes), losses in W (n,) and the energised mask (n, nodes)."""
        update = self._update(tap, shunt, q)
        n = tap.shape[0]
        wanted: dict[str, Any] = {"node": ["u_pu", "energized"]}
        wanted.update({c: ["p_from", "p_to"] for c in self.components})
        self.power_flows += n
        out: Any
        try:
            if update:
                out = self.model.calculate_power_flow(
                    update_data=cast(Any, update),
                    calculation_method=CalculationMethod.newton_raphson,
                    output_component_types=cast(Any, wanted),
                    threading=0,
                    error_tolerance=1e-9,
                    max_iterations=30,
                )
            else:
                single: Any = self.model.calculate_power_flow(
                    calculation_method=CalculationMethod.newton_raphson, output_component_types=cast(Any, wanted)
                )
                out = {c: {k: v[None, ...] for k, v in cols.items()} for c, cols in single.items()}
        except PowerGridError as exc:
            raise CalculationError(f"{self.grid.name}: power flow of a Volt/VAR candidate failed: {exc}") from exc
        node = out["node"]
        u = np.asarray(node["u_pu"], dtype=float)
        energised = np.asarray(node["energized"]).astype(bool)
        losses = np.zeros(n)
        for c in self.components:
            br = out[c]
            losses += (np.asarray(br["p_from"], dtype=float) + np.asarray(br["p_to"], dtype=float)).sum(axis=1)
        return u, losses, energised

    def figures(self, u: FloatArray, losses_w: float, energised: npt.NDArray[np.bool_]) -> StateFigures:
        """Figures of one state."""
        s = self.settings
        ue = u[energised]
        viol = float(np.maximum(ue - s.u_max_pu, 0).sum() + np.maximum(s.u_min_pu - ue, 0).sum())
        load_mw, cvr_mw = self._load(u)
        return StateFigures(
            losses_mw=losses_w / 1e6,
            u_min_pu=float(ue.min()) if ue.size else math.nan,
            u_max_pu=float(ue.max()) if ue.size else math.nan,
            violation_pu=viol,
            load_mw=load_mw,
            load_cvr_mw=cvr_mw,
        )

    def _load(self, u: FloatArray) -> tuple[float, float]:
        """Scheduled load (MW) and its voltage-dependent estimate P0 * U^cvr_factor (MW)."""
        if self.loads is None or not self.loads.size:
            return 0.0, 0.0
        on = self.loads["status"] == 1
        p = self.loads["p_specified"].astype(float) * on
        ul = u[..., self.load_node_rows]
        cvr = (p * np.power(np.maximum(ul, 1e-3), self.settings.cvr_factor)).sum(axis=-1)
        return float(p.sum()) / 1e6, float(cvr) / 1e6

    def cvr_w(self, u: FloatArray) -> FloatArray:
        """Voltage-dependent consumption estimate per scenario, in W."""
        if self.loads is None or not self.loads.size:
            return np.zeros(u.shape[0])
        p = self.loads["p_specified"].astype(float) * (self.loads["status"] == 1)
        ul = u[:, self.load_node_rows]
        out: FloatArray = (p * np.power(np.maximum(ul, 1e-3), self.settings.cvr_factor)).sum(axis=1)
        return out

    def merit(self, u: FloatArray, losses: FloatArray, energised: npt.NDArray[np.bool_]) -> FloatArray:
        """The objective the loop accepts steps by: losses (+ CVR consumption) + penalised violations, W."""
        s = self.settings
        over = np.where(energised, np.maximum(u - s.u_max_pu, 0) + np.maximum(s.u_min_pu - u, 0), 0).sum(axis=1)
        m = losses + _VIOLATION_PENALTY_W_PER_PU * over
        if s.cvr:
            m = m + self.cvr_w(u)
        out: FloatArray = m
        return out


def optimise_volt_var(grid: Grid, *, step: int | None = None, settings: VvoSettings | None = None) -> VvoResult:
    """Return advisory taps, shunt states and DER Q set-points that keep voltages in band at least loss.

    ``step`` picks one step of the grid's profiles (else the model's input values are the state
    as found). Raises :class:`~opendso.errors.InputError` for a bad step or settings and
    :class:`~opendso.errors.CalculationError` when the as-found state does not solve.
    """
    settings = settings or VvoSettings()
    settings.check()
    t0 = time.perf_counter()
    state = grid_at_step(grid, step) if step is not None else grid
    data = state.pgm_input()
    ctl = _controls(data, settings)
    ev = _Evaluator(state, data, ctl, settings)

    found = run_power_flow(state)  # the state exactly as found (unequal parallel taps, Q beyond the limit)
    if not found.converged:
        raise CalculationError(f"{grid.name}: the state as found does not solve: {found.error}")
    before = ev.figures(*_state_of(found, ev.components))
    ev.power_flows += 1
    # the starting point: parallel taps made equal, Q within the power-factor limit
    tap, shunt, q = ctl.tap.copy(), ctl.shunt.copy(), ctl.q.copy()
    u0, l0, e0 = ev.run(tap[None, :], shunt[None, :], q[None, :])
    best_merit = float(ev.merit(u0, l0, e0)[0])
    tap_trust = float(max(1, settings.tap_trust))
    q_trust = settings.q_trust  # fraction of each generator's Q range
    iterations = 0
    n_var = ctl.n_tap + ctl.n_shunt + ctl.n_gen
    while n_var and iterations < settings.max_iterations:
        iterations += 1
        dq = np.maximum(1e-3 * ctl.q_lim, 10.0)
        # scenarios: base, taps +/-1, shunts toggled, q +/- dq
        rows_tap = [tap.copy()]
        rows_sh = [shunt.copy()]
        rows_q = [q.copy()]
        tap_steps = np.zeros((ctl.n_tap, 2))
        for k in range(ctl.n_tap):
            up = min(tap[k] + 1, ctl.tap_hi[k])
            dn = max(tap[k] - 1, ctl.tap_lo[k])
            tap_steps[k] = (up, dn)
            for v in (up, dn):
                t = tap.copy()
                t[k] = v
                rows_tap.append(t)
                rows_sh.append(shunt.copy())
                rows_q.append(q.copy())
        for j in range(ctl.n_shunt):
            s = shunt.copy()
            s[j] = 1 - s[j]
            rows_tap.append(tap.copy())
            rows_sh.append(s)
            rows_q.append(q.copy())
        for i in range(ctl.n_gen):
            for sign in (1.0, -1.0):
                qq = q.copy()
                qq[i] += sign * dq[i]
                rows_tap.append(tap.copy())
                rows_sh.append(shunt.copy())
                rows_q.append(qq)
        u, losses, energised = ev.run(np.array(rows_tap), np.array(rows_sh), np.array(rows_q))
        base_en = energised[0]
        obj = losses + (ev.cvr_w(u) if settings.cvr else 0.0)
        ub = u[:, base_en]
        sens = np.zeros((ub.shape[1], n_var))
        grad = np.zeros(n_var)
        r = 1
        for k in range(ctl.n_tap):
            up, dn = tap_steps[k]
            span = up - dn
            if span > 0:
                sens[:, k] = (ub[r] - ub[r + 1]) / span
                grad[k] = (obj[r] - obj[r + 1]) / span
            r += 2
        for j in range(ctl.n_shunt):
            col = ctl.n_tap + j
            delta = 1.0 - 2.0 * shunt[j]  # +1 when switching in
            sens[:, col] = (ub[r] - ub[0]) * delta
            grad[col] = (obj[r] - obj[0]) * delta
            r += 1
        for i in range(ctl.n_gen):
            col = ctl.n_tap + ctl.n_shunt + i
            sens[:, col] = (ub[r] - ub[r + 1]) / (2 * dq[i])
            grad[col] = (obj[r] - obj[r + 1]) / (2 * dq[i])
            r += 2
        x = _solve_milp(ctl, settings, tap, shunt, q, ub[0], sens, grad, tap_trust, q_trust)
        if x is None:
            log.warning("event=vvo_milp_failed grid=%s iteration=%d", grid.name, iterations)
            break
        new_tap = tap + np.round(x[: ctl.n_tap])
        new_shunt = np.round(x[ctl.n_tap : ctl.n_tap + ctl.n_shunt])
        new_q = np.clip(q + x[ctl.n_tap + ctl.n_shunt :], -ctl.q_lim, ctl.q_lim)
        if np.array_equal(new_tap, tap) and np.array_equal(new_shunt, shunt) and np.allclose(new_q, q, atol=1.0):
            break
        un, ln, en = ev.run(new_tap[None, :], new_shunt[None, :], new_q[None, :])
        merit = float(ev.merit(un, ln, en)[0])
        if merit < best_merit - 1e-3:  # 1 mW: below that the power flow's tolerance speaks
            improved = best_merit - merit
            tap, shunt, q = new_tap, new_shunt, new_q
            best_merit = merit
            log.debug("event=vvo_step iteration=%d merit_w=%.3f", iterations, merit)
            if improved < 1e-6 * max(abs(merit), 1.0):
                break
        else:
            tap_trust = max(1.0, math.floor(tap_trust / 2))
            q_trust /= 2
            if q_trust < 1e-3 and (tap_trust <= 1 or not ctl.n_tap):
                break

    # the final state through the ordinary power flow (full output for the record)
    final = _apply(data, ctl, tap, shunt, q)
    final_grid = state.with_input(**final)
    pf = run_power_flow(final_grid)
    ev.power_flows += 1
    if not pf.converged:
        raise CalculationError(f"{grid.name}: the optimised state does not solve: {pf.error}")
    after = ev.figures(*_state_of(pf, ev.components))
    return VvoResult(
        grid=grid.name,
        step=step,
        settings=settings,
        taps=_tap_records(grid, data, ctl, tap),
        shunts=_shunt_records(grid, data, ctl, shunt),
        ders=_der_records(grid, data, ctl, q),
        before=before,
        after=after,
        iterations=iterations,
        power_flows=ev.power_flows,
        seconds=time.perf_counter() - t0,
        powerflow=pf,
    )


def _state_of(pf: PowerFlowResult, components: list[str]) -> tuple[FloatArray, float, npt.NDArray[np.bool_]]:
    """Node voltages, losses (W) and the energised mask of one power-flow result."""
    node = pf.output["node"]
    losses = sum(float((pf.output[c]["p_from"] + pf.output[c]["p_to"]).sum()) for c in components if c in pf.output)
    return np.asarray(node["u_pu"], dtype=float), losses, np.asarray(node["energized"]).astype(bool)


def _solve_milp(
    ctl: _Controls,
    settings: VvoSettings,
    tap: FloatArray,
    shunt: FloatArray,
    q: FloatArray,
    u: FloatArray,
    sens: FloatArray,
    grad: FloatArray,
    tap_trust: float,
    q_trust: float,
) -> FloatArray | None:
    """One linearised step: variables [dtap, shunt status, dq, slack_low, slack_high]; None if HiGHS fails."""
    n_tap, n_sh, n_gen = ctl.n_tap, ctl.n_shunt, ctl.n_gen
    n_x = n_tap + n_sh + n_gen
    n_u = u.size
    # generator columns in units of each one's Q limit, costs in kW: keeps HiGHS well scaled
    scale = np.concatenate([np.ones(n_tap + n_sh), ctl.q_lim])
    lo = np.concatenate(
        [
            np.maximum(ctl.tap_lo - tap, -tap_trust),
            np.zeros(n_sh),
            np.maximum(-1.0 - q / ctl.q_lim, -2 * q_trust),
            np.zeros(2 * n_u),
        ]
    )
    hi = np.concatenate(
        [
            np.minimum(ctl.tap_hi - tap, tap_trust),
            np.ones(n_sh),
            np.minimum(1.0 - q / ctl.q_lim, 2 * q_trust),
            np.full(2 * n_u, np.inf),
        ]
    )
    # shunt columns are absolute statuses: the sensitivity is per unit change from the present status
    a_x = sens * scale
    offset = u.copy()
    if n_sh:
        offset -= sens[:, n_tap : n_tap + n_sh] @ shunt
    # rows: lower band (u + S dx + s_lo >= u_min + m), upper band (u + S dx - s_hi <= u_max - m)
    eye = np.eye(n_u)
    zero = np.zeros((n_u, n_u))
    a = np.vstack([np.hstack([a_x, eye, zero]), np.hstack([a_x, zero, -eye])])
    row_lo = np.concatenate([np.full(n_u, settings.u_min_pu + settings.margin_pu) - offset, np.full(n_u, -np.inf)])
    row_hi = np.concatenate([np.full(n_u, np.inf), np.full(n_u, settings.u_max_pu - settings.margin_pu) - offset])
    cost = np.concatenate([grad * scale, np.full(2 * n_u, _VIOLATION_PENALTY_W_PER_PU)]) / 1e3
    integer = np.concatenate([np.ones(n_tap + n_sh, dtype=bool), np.zeros(n_gen + 2 * n_u, dtype=bool)])
    x = _highs_milp(cost, a, row_lo, row_hi, lo, hi, integer)
    return None if x is None else x[:n_x] * scale


#: Whether this process has built a HiGHS object (its banner is printed only by the first).
_HIGHS_STATE = {"banner_shown": False}


def _new_highs() -> Any:
    """Return a ``highspy.Highs``; the first one is built with stdout closed at the file level.

    HiGHS's C++ constructor prints its banner on stdout once per process, before any option
    can switch output off; the command line's stdout carries JSON, so it must not get there.
    """
    import highspy

    if _HIGHS_STATE["banner_shown"]:
        return highspy.Highs()  # type: ignore[no-untyped-call]
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            h = highspy.Highs()  # type: ignore[no-untyped-call]
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    _HIGHS_STATE["banner_shown"] = True
    return h


def _highs_milp(
    cost: FloatArray,
    a: FloatArray,
    row_lo: FloatArray,
    row_hi: FloatArray,
    col_lo: FloatArray,
    col_hi: FloatArray,
    integer: npt.NDArray[np.bool_],
) -> FloatArray | None:
    """Minimise ``cost @ x`` s.t. ``row_lo <= a @ x <= row_hi``, column bounds, integrality; HiGHS, silent."""
    import highspy

    inf = highspy.kHighsInf
    csc = csc_matrix(a)
    lp = highspy.HighsLp()
    lp.num_col_ = int(a.shape[1])
    lp.num_row_ = int(a.shape[0])
    lp.col_cost_ = cost
    lp.col_lower_ = np.where(np.isinf(col_lo), -inf, col_lo)
    lp.col_upper_ = np.where(np.isinf(col_hi), inf, col_hi)
    lp.row_lower_ = np.where(np.isinf(row_lo), -inf, row_lo)
    lp.row_upper_ = np.where(np.isinf(row_hi), inf, row_hi)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = csc.indptr
    lp.a_matrix_.index_ = csc.indices
    lp.a_matrix_.value_ = csc.data
    lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in integer]
    h = _new_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", 30.0)
    h.setOptionValue("mip_rel_gap", 1e-6)
    h.passModel(lp)
    h.run()
    status = h.getModelStatus()
    if status not in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kTimeLimit):
        return None
    x = np.asarray(h.getSolution().col_value, dtype=float)
    return x if x.size == cost.size else None


def _apply(
    data: Mapping[str, np.ndarray], ctl: _Controls, tap: FloatArray, shunt: FloatArray, q: FloatArray
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if ctl.n_tap:
        tr = data["transformer"].copy()
        for k, rows in enumerate(ctl.tap_rows):
            tr["tap_pos"][rows] = int(tap[k])
        out["transformer"] = tr
    if ctl.n_shunt:
        sh = data["shunt"].copy()
        sh["status"][ctl.shunt_rows] = shunt.astype(np.int8)
        out["shunt"] = sh
    if ctl.n_gen:
        gen = data["sym_gen"].copy()
        gen["q_specified"][ctl.gen_rows] = q
        out["sym_gen"] = gen
    return out


def _tap_records(grid: Grid, data: Mapping[str, np.ndarray], ctl: _Controls, tap: FloatArray) -> tuple[TapSetting, ...]:
    if not ctl.n_tap:
        return ()
    tr = data["transformer"]
    names = grid.names_of("transformer")
    return tuple(
        TapSetting(
            transformer=str(names[row]),
            tap_before=int(tr["tap_pos"][row]),
            tap_after=int(tap[k]),
            tap_min=int(ctl.tap_lo[k]),
            tap_max=int(ctl.tap_hi[k]),
        )
        for k, rows in enumerate(ctl.tap_rows)
        for row in rows
    )


def _shunt_records(
    grid: Grid, data: Mapping[str, np.ndarray], ctl: _Controls, shunt: FloatArray
) -> tuple[ShuntSetting, ...]:
    if not ctl.n_shunt:
        return ()
    sh = data["shunt"]
    names = grid.names_of("shunt")
    return tuple(
        ShuntSetting(shunt=str(names[row]), status_before=int(sh["status"][row]), status_after=int(shunt[j]))
        for j, row in enumerate(ctl.shunt_rows)
    )


def _der_records(grid: Grid, data: Mapping[str, np.ndarray], ctl: _Controls, q: FloatArray) -> tuple[DerSetpoint, ...]:
    if not ctl.n_gen:
        return ()
    gen = data["sym_gen"]
    names = grid.names_of("sym_gen")
    node_names = grid.names_of("node")
    node_rows = grid.node_positions(gen["node"][ctl.gen_rows])
    return tuple(
        DerSetpoint(
            der=str(names[row]),
            node=str(node_names[node_rows[i]]),
            p_mw=float(gen["p_specified"][row]) / 1e6,
            q_before_mvar=float(gen["q_specified"][row]) / 1e6,
            q_after_mvar=float(q[i]) / 1e6,
            q_limit_mvar=float(ctl.q_lim[i]) / 1e6,
        )
        for i, row in enumerate(ctl.gen_rows)
    )
