"""Network approval of market schedules: added injections at nodes checked by a batch power flow.

The local market (:mod:`opendso.markets.local`) and the TSO-DSO interface
(:mod:`opendso.markets.tso`) ask the same question: with these extra consumptions (W, UFTP sign:
positive = more consumption, negative = more production) at these nodes, on top of a base state
of the grid's loads and generators, does any line, transformer or node leave its limits? An
:class:`InjectionCheck` answers it for many scenarios at once, with one power-grid-model batch
power flow (Newton-Raphson): the model is built once with one zero constant-power probe load per
node (:func:`opendso.calc.powerflow.with_probe_loads`), and each call sends a batch update of the
base injections and the probes.

What counts as a violation (:func:`violations`): a branch loading above ``limits.loading_max``
(as power-grid-model reports it: current-based for lines, power-based for transformers), an
energised node's voltage above ``limits.u_max_pu`` or below ``limits.u_min_pu``, *and* worse than
the same element in the scenario's own base state (the probes at zero). A market result may not
cause or worsen a violation; one the base state already has (a forecast overload nobody traded
into) does not block trades that leave it as it is or relieve it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from power_grid_model import PowerGridModel

from opendso.calc.powerflow import batch_power_flow, with_probe_loads
from opendso.calc.timeseries import ViolationLimits
from opendso.errors import InputError
from opendso.grid.model import Grid

__all__ = [
    "BaseInjections",
    "CheckResult",
    "InjectionCheck",
    "Violation",
    "base_at_step",
    "element_value",
    "violations",
]

FloatArray = npt.NDArray[np.float64]

#: Branches whose loading is judged, named ``<component>:<name>``.
BRANCHES = ("line", "transformer")
#: Slack for "worse than the base state" and "beyond the limit" (loading fraction, p.u.).
EPS = 1e-9


@dataclass(frozen=True)
class BaseInjections:
    """P and Q (W, var) of every ``sym_load`` and ``sym_gen`` in input order, one row per scenario."""

    load_p: FloatArray
    load_q: FloatArray
    gen_p: FloatArray
    gen_q: FloatArray

    @property
    def scenarios(self) -> int:
        """Number of rows."""
        return int(self.load_p.shape[0])

    def take(self, rows: npt.ArrayLike) -> BaseInjections:
        """The rows ``rows`` (an index array) of every table."""
        r = np.asarray(rows, dtype=np.int64)
        return BaseInjections(self.load_p[r], self.load_q[r], self.gen_p[r], self.gen_q[r])


def base_at_step(grid: Grid, step: int) -> BaseInjections:
    """The loads' and generators' P and Q at profile step ``step`` of the grid's profiles (one row).

    Elements without a profile keep their input values. :class:`InputError` when the grid has no
    profiles or ``step`` is outside them.
    """
    profiles = grid.profiles
    if profiles is None or not 0 <= step < profiles.steps:
        raise InputError(f"grid {grid.name}: profile step {step} is outside its profiles")
    out: dict[str, tuple[FloatArray, FloatArray]] = {}
    for component in ("sym_load", "sym_gen"):
        array = grid.component(component)
        p = np.nan_to_num(array["p_specified"].astype(np.float64))[None, :].copy()
        q = np.nan_to_num(array["q_specified"].astype(np.float64))[None, :].copy()
        ids = array["id"]
        order = np.argsort(ids)
        for a in profiles.assignments:
            if a.component != component or a.attribute not in ("p_specified", "q_specified"):
                continue
            rows = order[np.searchsorted(ids, a.ids, sorter=order)]
            table = p if a.attribute == "p_specified" else q
            table[0, rows] = a.evaluate(profiles.values[step : step + 1])[0]
        out[component] = (p, q)
    return BaseInjections(out["sym_load"][0], out["sym_load"][1], out["sym_gen"][0], out["sym_gen"][1])


@dataclass(frozen=True)
class CheckResult:
    """The figures of every scenario (S rows).

    ``loading`` (S, B) in :attr:`InjectionCheck.branches` order; ``u_pu`` and ``energised`` (S, N)
    in the grid's node order; ``branch_p_from_w`` etc. (S, B) the active and reactive power into
    each branch at its from and to end (W, var).
    """

    loading: FloatArray
    u_pu: FloatArray
    energised: npt.NDArray[np.bool_]
    branch_p_from_w: FloatArray
    branch_q_from_w: FloatArray
    branch_p_to_w: FloatArray
    branch_q_to_w: FloatArray


class InjectionCheck:
    """Batch power flows of a grid with extra consumption at chosen nodes (see the module docstring).

    ``nodes``: node names of ``grid`` the probes sit at (each once); an unknown name raises
    :class:`InputError`. ``limits``: what counts as a violation.
    """

    def __init__(self, grid: Grid, nodes: Sequence[str], *, limits: ViolationLimits | None = None) -> None:
        self.grid = grid
        self.limits = limits or ViolationLimits()
        names = [str(n) for n in grid.names_of("node").tolist()]
        row_of = {n: k for k, n in enumerate(names)}
        unknown = [n for n in nodes if n not in row_of]
        if unknown:
            raise InputError(f"grid {grid.name}: no node {', '.join(map(repr, unknown[:5]))}")
        if len(set(nodes)) != len(nodes):
            raise InputError("network check: a node is listed twice")
        self.nodes = tuple(nodes)
        self.node_names = tuple(names)
        node_ids = grid.component("node")["id"][[row_of[n] for n in nodes]].astype(np.int32)
        data, self._probe_ids = with_probe_loads(grid, node_ids)
        self._load_ids = grid.component("sym_load")["id"].astype(np.int32)
        self._gen_ids = grid.component("sym_gen")["id"].astype(np.int32)
        self._components = [c for c in BRANCHES if grid.count(c)]
        self.branches = tuple(f"{c}:{n}" for c in self._components for n in grid.names_of(c).tolist())
        self._model = PowerGridModel(data, system_frequency=grid.frequency_hz)

    def run(self, base: BaseInjections, extra_w: npt.ArrayLike) -> CheckResult:
        """Solve every scenario: ``base`` (S rows, or 1 row used for all) plus ``extra_w`` (S, nodes) W of consumption.

        A power flow that fails raises :class:`CalculationError` naming the grid.
        """
        extra = np.atleast_2d(np.asarray(extra_w, dtype=np.float64))
        s = extra.shape[0]
        if extra.shape[1] != len(self.nodes) or not np.all(np.isfinite(extra)):
            raise InputError(f"network check: extra consumption must be finite, shape (S, {len(self.nodes)})")
        if base.scenarios not in (1, s):
            raise InputError(f"network check: base has {base.scenarios} rows for {s} scenarios")
        rows = np.zeros(s, dtype=np.int64) if base.scenarios == 1 else np.arange(s)
        b = base.take(rows)
        load_p = np.concatenate([b.load_p, extra], axis=1)
        load_q = np.concatenate([b.load_q, np.zeros_like(extra)], axis=1)
        ids = np.concatenate([self._load_ids, self._probe_ids])
        update: dict[str, Any] = {
            "sym_load": {"id": np.broadcast_to(ids, (s, ids.size)).copy(), "p_specified": load_p, "q_specified": load_q}
        }
        if self._gen_ids.size:
            update["sym_gen"] = {
                "id": np.broadcast_to(self._gen_ids, (s, self._gen_ids.size)).copy(),
                "p_specified": b.gen_p,
                "q_specified": b.gen_q,
            }
        wanted: dict[str, Any] = {"node": ["u_pu", "energized"]}
        wanted.update({c: ["loading", "p_from", "q_from", "p_to", "q_to"] for c in self._components})
        res, _ = batch_power_flow(
            self._model, update, output=wanted, what=f"{self.grid.name}: network check", error_tolerance=1e-9
        )

        def cat(field: str) -> FloatArray:
            if not self._components:
                return np.zeros((s, 0))
            return np.concatenate([np.asarray(res[c][field], dtype=np.float64) for c in self._components], axis=1)

        return CheckResult(
            loading=cat("loading"),
            u_pu=np.asarray(res["node"]["u_pu"], dtype=np.float64),
            energised=np.asarray(res["node"]["energized"]).astype(bool),
            branch_p_from_w=cat("p_from"),
            branch_q_from_w=cat("q_from"),
            branch_p_to_w=cat("p_to"),
            branch_q_to_w=cat("q_to"),
        )


@dataclass(frozen=True)
class Violation:
    """The worst violation of one scenario: the element (``line:NAME``, ``transformer:NAME``, ``node:NAME``),
    its value (loading fraction or p.u.) and the limit it broke."""

    element: str
    value: float
    limit: float

    @property
    def excess(self) -> float:
        """How far beyond the limit (always > 0)."""
        return abs(self.value - self.limit)


def violations(
    check: InjectionCheck, result: CheckResult, base: CheckResult, *, base_rows: npt.ArrayLike | None = None
) -> list[Violation | None]:
    """Per scenario of ``result``: its worst violation not already in its base state (``base`` row), or None.

    ``base_rows``: which row of ``base`` each scenario compares with (default: row 0 for all).
    """
    s = result.loading.shape[0]
    rows = np.zeros(s, dtype=np.int64) if base_rows is None else np.asarray(base_rows, dtype=np.int64)
    lim = check.limits
    b_load = base.loading[rows]
    b_u = base.u_pu[rows]
    load_cap = np.maximum(lim.loading_max, b_load)
    over = np.where(result.loading > load_cap + EPS, result.loading - lim.loading_max, 0.0)
    live = result.energised
    u_hi_cap = np.maximum(lim.u_max_pu, b_u)
    u_lo_cap = np.minimum(lim.u_min_pu, b_u)
    high = np.where(live & (result.u_pu > u_hi_cap + EPS), result.u_pu - lim.u_max_pu, 0.0)
    low = np.where(live & (result.u_pu < u_lo_cap - EPS), lim.u_min_pu - result.u_pu, 0.0)
    out: list[Violation | None] = []
    for k in range(s):
        candidates: list[tuple[float, Violation]] = []
        if over.shape[1] and over[k].max() > 0:
            j = int(np.argmax(over[k]))
            candidates.append(
                (float(over[k, j]), Violation(check.branches[j], float(result.loading[k, j]), lim.loading_max))
            )
        if high[k].max(initial=0.0) > 0:
            j = int(np.argmax(high[k]))
            v = Violation(f"node:{check.node_names[j]}", float(result.u_pu[k, j]), lim.u_max_pu)
            candidates.append((float(high[k, j]), v))
        if low[k].max(initial=0.0) > 0:
            j = int(np.argmax(low[k]))
            v = Violation(f"node:{check.node_names[j]}", float(result.u_pu[k, j]), lim.u_min_pu)
            candidates.append((float(low[k, j]), v))
        out.append(max(candidates, key=lambda c: c[0])[1] if candidates else None)
    return out


def element_value(check: InjectionCheck, result: CheckResult, element: str) -> FloatArray:
    """The loading or voltage of ``element`` in every scenario."""
    kind, _, name = element.partition(":")
    if kind == "node":
        return result.u_pu[:, check.node_names.index(name)]
    return result.loading[:, check.branches.index(element)]
