"""The congestion forecast: per element and 15-minute interval, the probability of a violation and its size.

:func:`forecast_congestion` takes a :class:`~opendso.planning.model.QuantileForecast` of the
grid's loads and generators (targets ``sym_load:NAME`` / ``sym_gen:NAME``, active power in W) and
runs ``scenarios`` correlated scenarios of the whole horizon through power-grid-model's batch
power flow (one batch call per chunk of (scenario, interval) pairs; the admittance matrix is
factorised once per call). For every line, transformer and energised node and every interval it
gives:

- ``probability``: the share of scenarios in which the element is beyond its limit (loading above
  ``loading_max`` as power-grid-model reports it: power-based for transformers, current-based for
  lines; a node's voltage outside ``u_min_pu .. u_max_pu``);
- ``excess``: the mean size of the violation over the scenarios that violate (loading above the
  limit as a fraction of the rating, or p.u. beyond the band), and for branches ``excess_mva``,
  the same in MVA of the element's rating;
- ``median``: the loading or voltage of the *median scenario* (every target at its forecast
  median), one deterministic power flow per interval;
- ``relieve``: where the probability reaches ``relief_probability``, the change of active power
  (MW) or reactive power (Mvar) of net injection at a node that alone would bring the mean
  violation back to its limit, for the most effective nodes holding forecast loads or generators.
  It comes from sensitivities of the element's loading or voltage to P and Q injected at each
  node, by finite differences in one batch power flow around the median scenario of that
  interval (a negative ``p_mw`` means less injection there: curtail generation or add load; None
  where that quantity has under a quarter of the other's effect, e.g. Q on a transformer carrying
  mostly P).

Where the probability comes from matters: :mod:`opendso.planning.scenarios` samples the targets
through a Gaussian copula fitted on the PIT of past forecast errors, so targets co-vary as they
did; :func:`forecast_congestion_comonotone` is the naive comparison where every target is at the
same rank (net injections perfectly correlated), which overstates the spread of the sums and so
the congestion (``tests/test_congestion.py`` measures by how much).

Reactive power follows active power: each element's Q is its P times its Q/P ratio at that
interval in the grid's profiles (its input Q/P where the profile gives no P, or the interval is
outside the profiles), as measured P and Q of one load vary together. Loads and generators that
have no target keep their profile values at the interval (their input values outside the
profiles' year).

:func:`reliability` checks calibration on held-out days: predicted probability bins against the
observed frequency of violations, and the Brier score against climatology. :func:`congestion_outlook`
is the end-to-end chain the command line and the API run: history, weekly-profile forecast,
copula fitted on the previous days' forecast errors, congestion forecast.
"""

from __future__ import annotations

import logging
import math
import time as timer
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
from power_grid_model import CalculationMethod, PowerGridModel

from opendso.calc.powerflow import batch_power_flow, with_probe_loads
from opendso.calc.timeseries import ViolationLimits
from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.planning.model import QuantileForecast, parse_target
from opendso.planning.scenarios import GaussianCopula, comonotone_batches, fit_copula, scenario_batches

__all__ = [
    "HISTORY_WINDOW",
    "CongestionForecast",
    "ReliabilityTable",
    "Relief",
    "congestion_outlook",
    "fit_copula_before",
    "forecast_congestion",
    "forecast_congestion_comonotone",
    "issue_time_in_profiles",
    "reliability",
    "scenario_injections",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
ElementKind = Literal["line", "transformer", "node"]

#: Branch components judged for thermal violations.
BRANCHES: tuple[str, ...] = ("line", "transformer")
#: Update and output data per batch call are kept near this many bytes.
BATCH_BYTES = 48e6
#: Nodes reported per violation as the places to relieve it.
RELIEF_NODES = 3
#: P (or Q) relief is left out where its sensitivity is below this fraction of the other's.
RELIEF_WEAK = 0.25


@dataclass(frozen=True)
class Relief:
    """Change of net injection at ``node`` that alone relieves a violation: ``p_mw`` or ``q_mvar`` (None: no effect)."""

    node: str
    p_mw: float | None
    q_mvar: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the relief as a JSON-ready dict."""
        return {"node": self.node, "p_mw": self.p_mw, "q_mvar": self.q_mvar}


@dataclass(frozen=True, eq=False)
class CongestionForecast:
    """Per element (E) and interval (T): violation probability, mean size when violated, median-scenario value.

    ``kinds``/``names``/``ids``: the elements (lines, transformers, then nodes); ``probability``,
    ``excess``, ``median``: (E, T); ``excess`` NaN where no scenario violates; ``rating_mva``
    (E,): branch ratings (NaN for nodes); ``relief``: (element row, interval) -> nodes to relieve.
    """

    grid: str
    issued: datetime
    time: npt.NDArray[np.datetime64]
    scenarios: int
    method: str
    limits: ViolationLimits
    kinds: tuple[ElementKind, ...]
    names: tuple[str, ...]
    ids: npt.NDArray[np.int64]
    probability: FloatArray
    excess: FloatArray
    median: FloatArray
    rating_mva: FloatArray
    relief: dict[tuple[int, int], tuple[Relief, ...]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        """Number of intervals."""
        return int(self.time.size)

    def violated(self, threshold: float) -> npt.NDArray[np.bool_]:
        """(E, T) cells whose probability is at least ``threshold``."""
        return np.asarray(self.probability >= threshold)

    def to_dict(self, *, min_probability: float = 0.0) -> dict[str, Any]:
        """Return the forecast as JSON: the elements at risk with their per-interval series and violations.

        An element is listed when some interval's probability exceeds ``min_probability`` (0: any
        scenario violates); each listed element carries ``probability`` and ``median`` for every
        interval and one record per interval with a violation (``probability``, ``excess``,
        ``excess_mva`` for branches, ``median``, ``relieve``).
        """
        times = [str(np.datetime_as_string(t, unit="s")) + "Z" for t in self.time]
        elements = []
        for e in np.flatnonzero((self.probability > min_probability).any(axis=1)).tolist():
            violations = []
            for t in np.flatnonzero(self.probability[e] > min_probability).tolist():
                record: dict[str, Any] = {
                    "interval": t,
                    "time": times[t],
                    "probability": round(float(self.probability[e, t]), 4),
                    "excess": _num(self.excess[e, t]),
                    "median": _num(self.median[e, t]),
                }
                if self.kinds[e] != "node":
                    record["excess_mva"] = _num(self.excess[e, t] * self.rating_mva[e])
                record["relieve"] = [r.to_dict() for r in self.relief.get((e, t), ())]
                violations.append(record)
            elements.append(
                {
                    "element": self.names[e],
                    "kind": self.kinds[e],
                    "id": int(self.ids[e]),
                    "quantity": "u_pu" if self.kinds[e] == "node" else "loading",
                    "max_probability": round(float(self.probability[e].max()), 4),
                    "probability": [round(float(p), 4) for p in self.probability[e]],
                    "median": [_num(v) for v in self.median[e]],
                    "violations": violations,
                }
            )
        elements.sort(key=lambda r: (-cast(float, r["max_probability"]), cast(str, r["element"])))
        return {
            "grid": self.grid,
            "issued": self.issued.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "method": self.method,
            "scenarios": self.scenarios,
            "steps": self.steps,
            "time": times,
            "limits": {
                "u_min_pu": self.limits.u_min_pu,
                "u_max_pu": self.limits.u_max_pu,
                "loading_max": self.limits.loading_max,
            },
            "elements_judged": len(self.names),
            "elements": elements,
            "seconds": round(self.seconds, 3),
        }


def _num(x: float) -> float | None:
    return round(float(x), 6) if np.isfinite(x) else None


# -- the forecast -------------------------------------------------------------------------------------------
def forecast_congestion(
    grid: Grid,
    forecast: QuantileForecast,
    *,
    scenarios: int = 200,
    seed: int | None = 0,
    limits: ViolationLimits | None = None,
    copula: GaussianCopula | None = None,
    relief_probability: float = 0.1,
    threading: int = 0,
) -> CongestionForecast:
    """Return the congestion forecast of ``grid`` from ``forecast`` through ``scenarios`` copula scenarios.

    ``copula``: the dependence of the targets' errors (:func:`fit_copula_before` or
    :func:`~opendso.planning.scenarios.fit_copula`); None samples the targets independently
    (say so to the reader: it understates congestion on shared elements). :class:`InputError` for
    a target the grid does not have, a grid without loads or generators to forecast, or fewer than
    one scenario.
    """
    if scenarios < 1:
        raise InputError(f"scenarios: need at least one, got {scenarios}")

    def batches(size: int) -> Iterator[FloatArray]:
        return scenario_batches(forecast, copula, scenarios, seed=seed, batch=size)

    method = "gaussian copula" if copula is not None else "independent"
    return _run(grid, forecast, scenarios, batches, method, limits or ViolationLimits(), relief_probability, threading)


def forecast_congestion_comonotone(
    grid: Grid,
    forecast: QuantileForecast,
    *,
    scenarios: int = 200,
    limits: ViolationLimits | None = None,
    relief_probability: float = 0.1,
    threading: int = 0,
) -> CongestionForecast:
    """Return the naive congestion forecast: every target at the same rank (per-node quantiles taken together).

    For comparison only: see :func:`~opendso.planning.scenarios.comonotone_scenarios`.
    """
    if scenarios < 1:
        raise InputError(f"scenarios: need at least one, got {scenarios}")

    def batches(size: int) -> Iterator[FloatArray]:
        return comonotone_batches(forecast, scenarios, batch=size)

    limits = limits or ViolationLimits()
    return _run(grid, forecast, scenarios, batches, "comonotone", limits, relief_probability, threading)


@dataclass
class _Injections:
    """Per-interval P and Q of every load and generator, and how forecast targets map onto them."""

    component: str
    ids: npt.NDArray[np.int32]
    p: FloatArray  # (T, n) base P where no target applies
    ratio: FloatArray  # (T, n) Q/P
    target_cols: npt.NDArray[np.int64]  # forecast column of each target element row
    target_rows: npt.NDArray[np.int64]  # the element rows they drive
    share: FloatArray  # share of the target's value each row takes


def _injections(grid: Grid, forecast: QuantileForecast) -> list[_Injections]:
    """The loads and generators of ``grid`` at the forecast's intervals, with the targets mapped onto them."""
    steps = _profile_steps(grid, forecast.time)
    by_component: dict[str, list[tuple[int, str]]] = {"sym_load": [], "sym_gen": []}
    for col, target in enumerate(forecast.targets):
        component, name = parse_target(target)
        by_component[component].append((col, name))
    out: list[_Injections] = []
    for component, wanted in by_component.items():
        n = grid.count(component)
        if n == 0:
            if wanted:
                raise InputError(f"{grid.name}: no {component} for target(s) {wanted[0][1]!r} ...")
            continue
        array = grid.component(component)
        ids = array["id"].astype(np.int32)
        p0 = np.nan_to_num(array["p_specified"].astype(float))
        q0 = np.nan_to_num(array["q_specified"].astype(float))
        p = np.broadcast_to(p0, (steps.size, n)).copy()
        q = np.broadcast_to(q0, (steps.size, n)).copy()
        if grid.profiles is not None and (steps >= 0).any():
            inside = steps >= 0
            values = grid.profiles.values[steps[inside]]
            order = np.argsort(ids)
            for a in grid.profiles.assignments:
                if a.component != component or a.attribute not in ("p_specified", "q_specified"):
                    continue
                positions = order[np.searchsorted(ids, a.ids, sorter=order)]
                table = p if a.attribute == "p_specified" else q
                sub = table[inside]
                sub[:, positions] = a.evaluate(values)
                table[inside] = sub
        with np.errstate(invalid="ignore", divide="ignore"):
            static = np.where(p0 != 0, q0 / np.where(p0 != 0, p0, 1.0), 0.0)
            ratio = np.where(p != 0, q / np.where(p != 0, p, 1.0), static[None, :])
        names = grid.names_of(component).astype(str)
        by_name: dict[str, list[int]] = {}
        for row, name in enumerate(names.tolist()):
            by_name.setdefault(name, []).append(row)
        unknown = [name for _, name in wanted if name not in by_name]
        if unknown:
            raise InputError(
                f"{grid.name}: the forecast names {component}(s) the grid does not have: {', '.join(unknown[:5])}"
            )
        cols: list[int] = []
        rows_l: list[int] = []
        shares: list[float] = []
        for col, name in wanted:
            named = by_name[name]
            weight = np.abs(p0[named])
            weight = weight / weight.sum() if weight.sum() > 0 else np.full(len(named), 1.0 / len(named))
            cols.extend([col] * len(named))
            rows_l.extend(named)
            shares.extend(weight.tolist())
        out.append(
            _Injections(
                component,
                ids,
                p,
                ratio,
                np.array(cols, dtype=np.int64),
                np.array(rows_l, dtype=np.int64),
                np.array(shares, dtype=np.float64),
            )
        )
    if not out:
        raise InputError(f"{grid.name}: the grid has no loads or generators to forecast")
    return out


def _profile_steps(grid: Grid, time: npt.NDArray[np.datetime64]) -> npt.NDArray[np.int64]:
    """The profile step of each forecast interval (-1 outside the profiles), counted from the first profile time."""
    if grid.profiles is None or grid.profiles.steps == 0:
        return np.full(time.size, -1, dtype=np.int64)
    from opendso.planning.history import profile_times

    times = profile_times(grid)
    first = times[0].tz_convert("UTC").tz_localize(None).to_datetime64().astype("datetime64[s]").astype(np.int64)
    step = int((times[1] - times[0]).total_seconds()) if len(times) > 1 else 900
    offset = time.astype("datetime64[s]").astype(np.int64) - first
    steps = offset // step
    ok = (offset % step == 0) & (steps >= 0) & (steps < grid.profiles.steps)
    return np.where(ok, steps, -1).astype(np.int64)


def scenario_injections(grid: Grid, forecast: QuantileForecast, values: FloatArray) -> dict[str, dict[str, FloatArray]]:
    """Return power-grid-model update columns (S*T rows) for scenario ``values`` (S, T, N) of the forecast's targets.

    Rows are scenario-major (row ``s * T + t``); every load and generator is listed in input order
    (so power-grid-model matches them by position): ``p_specified`` from the scenario where a target
    drives the element, from the profiles otherwise; ``q_specified`` from P and the element's Q/P.
    The same mapping judges the actuals in the tests, so the two are compared like with like.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 3 or values.shape[1:] != (forecast.steps, len(forecast.targets)):
        raise InputError(
            f"scenario values of shape {values.shape}, expected (S, {forecast.steps}, {len(forecast.targets)})"
        )
    return _update(_injections(grid, forecast), values)


def _update(injections: list[_Injections], values: FloatArray) -> dict[str, dict[str, FloatArray]]:
    s, t, _ = values.shape
    update: dict[str, dict[str, FloatArray]] = {}
    for inj in injections:
        p = np.broadcast_to(inj.p, (s, t, inj.p.shape[1])).copy()
        if inj.target_rows.size:
            p[:, :, inj.target_rows] = values[:, :, inj.target_cols] * inj.share
        q = p * inj.ratio[None]
        update[inj.component] = {"p_specified": p.reshape(s * t, -1), "q_specified": q.reshape(s * t, -1)}
    return update


@dataclass
class _Elements:
    """The judged elements: lines, transformers, then nodes, with their output slices."""

    kinds: list[ElementKind]
    names: list[str]
    ids: npt.NDArray[np.int64]
    branches: list[str]
    n_branch: int
    rating_mva: FloatArray


def _elements(grid: Grid) -> _Elements:
    kinds: list[ElementKind] = []
    names: list[str] = []
    ids: list[npt.NDArray[np.int64]] = []
    ratings: list[FloatArray] = []
    branches = [c for c in BRANCHES if grid.count(c)]
    node = grid.component("node")
    for c in branches:
        array = grid.component(c)
        kinds.extend([cast(ElementKind, c)] * array.size)
        names.extend(str(n) for n in grid.names_of(c))
        ids.append(array["id"].astype(np.int64))
        if c == "transformer":
            ratings.append(array["sn"].astype(float) / 1e6)
        else:
            u = node["u_rated"][grid.node_positions(array["from_node"])]
            ratings.append(math.sqrt(3.0) * u * array["i_n"].astype(float) / 1e6)
    n_branch = len(kinds)
    kinds.extend(["node"] * node.size)
    names.extend(str(n) for n in grid.names_of("node"))
    ids.append(node["id"].astype(np.int64))
    ratings.append(np.full(node.size, np.nan))
    return _Elements(kinds, names, np.concatenate(ids), branches, n_branch, np.concatenate(ratings))


class _Solver:
    """One power-grid-model model of the grid (plus optional probe loads) and its batch calls."""

    def __init__(
        self, grid: Grid, elements: _Elements, threading: int, probe_nodes: npt.NDArray[np.int64] | None = None
    ):
        if probe_nodes is not None and probe_nodes.size:
            data, self.probe_ids = with_probe_loads(grid, probe_nodes)
        else:
            data, self.probe_ids = dict(grid.pgm_input()), np.zeros(0, dtype=np.int32)
        self.model = PowerGridModel(data, system_frequency=grid.frequency_hz)
        self.grid = grid
        self.elements = elements
        self.threading = threading
        self.wanted: dict[str, Any] = {"node": ["u_pu", "energized"]}
        self.wanted.update({c: ["loading"] for c in elements.branches})

    def values(self, update: dict[str, dict[str, FloatArray]]) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Solve every row of ``update``: (rows, E) loading or u_pu (NaN: not solved), (rows, nodes) energised."""
        out, failed = self._call(update, CalculationMethod.iterative_current)
        if failed.size:
            sub = {c: {k: v[failed] for k, v in cols.items()} for c, cols in update.items()}
            again, still = self._call(sub, CalculationMethod.newton_raphson)
            ok = np.ones(failed.size, dtype=bool)
            ok[still] = False
            for c in out:
                for attr in out[c]:
                    out[c][attr][failed[ok]] = again[c][attr][ok]
            failed = failed[~ok]
        parts = [np.asarray(out[c]["loading"], dtype=float) for c in self.elements.branches]
        parts.append(np.asarray(out["node"]["u_pu"], dtype=float))
        result = np.concatenate(parts, axis=1)
        energised = np.asarray(out["node"]["energized"], dtype=bool)
        if failed.size:
            result[failed] = np.nan
            log.warning("event=congestion_unsolved grid=%s scenarios=%d", self.grid.name, failed.size)
        return result, energised

    def _call(
        self, update: dict[str, dict[str, FloatArray]], method: CalculationMethod
    ) -> tuple[dict[str, Any], npt.NDArray[np.int64]]:
        out, failed = batch_power_flow(
            self.model,
            update,
            output=self.wanted,
            what=f"{self.grid.name}: congestion forecast",
            method=method,
            threading=self.threading,
            tolerate_failures=True,
        )
        return out, failed


def _needed(
    values: FloatArray, energised: npt.NDArray[np.bool_], elements: _Elements, limits: ViolationLimits
) -> FloatArray:
    """(rows, E) the change of loading or voltage that brings each element to its limit (0 within; NaN unsolved)."""
    nb = elements.n_branch
    out = np.zeros_like(values)
    with np.errstate(invalid="ignore"):
        loading = values[:, :nb]
        out[:, :nb] = np.where(loading > limits.loading_max, limits.loading_max - loading, 0.0)
        u = values[:, nb:]
        over = energised & (u > limits.u_max_pu)
        under = energised & (u < limits.u_min_pu)
        out[:, nb:] = np.where(over, limits.u_max_pu - u, np.where(under, limits.u_min_pu - u, 0.0))
    out[~np.isfinite(values)] = np.nan
    return out


def _run(
    grid: Grid,
    forecast: QuantileForecast,
    s: int,
    batches: Callable[[int], Iterator[FloatArray]],
    method: str,
    limits: ViolationLimits,
    relief_probability: float,
    threading: int,
) -> CongestionForecast:
    started = timer.perf_counter()
    if not 0 < limits.u_min_pu < limits.u_max_pu or not limits.loading_max > 0:
        raise InputError(f"congestion limits: need 0 < u_min < u_max and loading_max > 0, got {limits}")
    injections = _injections(grid, forecast)
    elements = _elements(grid)
    solver = _Solver(grid, elements, threading)
    t = forecast.steps
    e = len(elements.names)
    per_row = 8 * (2 * sum(i.p.shape[1] for i in injections) + 2 * e) + 1
    rows_per_call = max(t, int(BATCH_BYTES // per_row) // t * t)
    # one batch of scenarios per power-flow call: sampling memory stays bounded too
    scen_per_call = max(1, rows_per_call // t)
    count = np.zeros((e, t))
    solved = np.zeros((e, t))
    total = np.zeros((e, t))
    for chunk in batches(scen_per_call):
        k = chunk.shape[0]
        values, energised = solver.values(_update(injections, chunk))
        needed = _needed(values, energised, elements, limits).reshape(k, t, e)
        ok = np.isfinite(needed)
        bad = ok & (needed != 0)
        count += bad.sum(axis=0).T
        solved += ok.sum(axis=0).T
        total += np.where(bad, np.abs(needed), 0.0).sum(axis=0).T
    with np.errstate(invalid="ignore", divide="ignore"):
        probability = np.where(solved > 0, count / np.maximum(solved, 1), np.nan)
        excess = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    # never-energised nodes are not judged: probability 0 and no median
    median_values, median_energised = solver.values(_update(injections, forecast.median()[None]))
    median = median_values.T.copy()
    nb = elements.n_branch
    median[nb:][~median_energised.T] = np.nan
    probability = np.nan_to_num(probability, nan=0.0)
    relief = _relief(
        grid, forecast, injections, elements, limits, probability, excess, median, relief_probability, threading
    )
    result = CongestionForecast(
        grid=grid.name,
        issued=forecast.issued,
        time=forecast.time.astype("datetime64[s]"),
        scenarios=s,
        method=method,
        limits=limits,
        kinds=tuple(elements.kinds),
        names=tuple(elements.names),
        ids=elements.ids,
        probability=probability,
        excess=excess,
        median=median,
        rating_mva=elements.rating_mva,
        relief=relief,
        seconds=timer.perf_counter() - started,
    )
    log.info(
        "event=congestion_forecast grid=%s method=%s scenarios=%d steps=%d elements_at_risk=%d seconds=%.2f",
        grid.name,
        method,
        s,
        t,
        int((probability > 0).any(axis=1).sum()),
        result.seconds,
    )
    return result


def _relief(
    grid: Grid,
    forecast: QuantileForecast,
    injections: list[_Injections],
    elements: _Elements,
    limits: ViolationLimits,
    probability: FloatArray,
    excess: FloatArray,
    median: FloatArray,
    threshold: float,
    threading: int,
) -> dict[tuple[int, int], tuple[Relief, ...]]:
    """Nodes to relieve each likely violation at, from finite-difference sensitivities around the median scenario."""
    cells = np.argwhere(probability >= threshold)
    if cells.size == 0:
        return {}
    # candidate nodes: those holding a forecast load or generator (where flexibility can act)
    node_ids: list[int] = []
    for inj in injections:
        array = grid.component(inj.component)
        node_ids.extend(array["node"][inj.target_rows].astype(np.int64).tolist())
    nodes = np.unique(np.array(node_ids, dtype=np.int64))
    if nodes.size == 0:
        return {}
    node_rows = grid.node_positions(nodes)
    u_rated = grid.component("node")["u_rated"][node_rows].astype(float)
    delta_w = np.maximum(1e3, 1e-3 * u_rated)  # 1 kW at LV, 20 kW at 20 kV: linear, yet far above the tolerance
    solver = _Solver(grid, elements, threading, probe_nodes=nodes)
    names = grid.names_of("node")[node_rows].astype(str)
    intervals = np.unique(cells[:, 1])
    k = nodes.size
    m = 1 + 2 * k  # per interval: the median scenario, +P at each node, +Q at each node
    full = _update(injections, forecast.median()[None])  # one row per interval of the horizon
    width = sum(v.shape[1] for cols in full.values() for v in cols.values()) + 2 * k
    per_interval = 8 * m * (width + 2 * len(elements.names))
    chunk = max(1, int(BATCH_BYTES // max(per_interval, 1)))
    out: dict[tuple[int, int], tuple[Relief, ...]] = {}
    for first in range(0, intervals.size, chunk):
        some = intervals[first : first + chunk]
        update = {c: {a: np.repeat(v[some], m, axis=0) for a, v in cols.items()} for c, cols in full.items()}
        probe_p = np.zeros((some.size * m, k))
        probe_q = np.zeros((some.size * m, k))
        base_rows = (np.arange(some.size) * m)[:, None]
        probe_p[base_rows + 1 + np.arange(k), np.arange(k)] = -delta_w  # a probe load of -delta: +delta injected
        probe_q[base_rows + 1 + k + np.arange(k), np.arange(k)] = -delta_w
        load = update.setdefault("sym_load", {})
        if load:
            load["p_specified"] = np.concatenate([load["p_specified"], probe_p], axis=1)
            load["q_specified"] = np.concatenate([load["q_specified"], probe_q], axis=1)
        else:
            load["p_specified"], load["q_specified"] = probe_p, probe_q
        values, _ = solver.values(update)
        values = values.reshape(some.size, m, -1)
        sens_p = (values[:, 1 : 1 + k] - values[:, :1]) / (delta_w[None, :, None] / 1e6)  # per MW, (I, k, E)
        sens_q = (values[:, 1 + k :] - values[:, :1]) / (delta_w[None, :, None] / 1e6)  # per Mvar
        where = {int(v): i for i, v in enumerate(some.tolist())}
        for e, t in cells[np.isin(cells[:, 1], some)].tolist():
            size = excess[e, t]
            if not np.isfinite(size):
                continue
            if elements.kinds[e] == "node":
                over = median[e, t] > 0.5 * (limits.u_min_pu + limits.u_max_pu)
                change = -size if over else size
            else:
                change = -size
            sp = sens_p[where[t], :, e]
            sq = sens_q[where[t], :, e]
            strength = np.maximum(np.abs(sp), np.abs(sq))
            floor = 1e-3 * np.nanmax(np.append(strength, 1e-300))
            useful = np.flatnonzero(np.isfinite(strength) & (strength > floor))
            best = useful[np.argsort(-strength[useful], kind="stable")][:RELIEF_NODES]
            # a quantity with under a quarter of the other's effect would need a change far beyond
            # where the linearisation holds: reported as None (no effect worth using)
            weak_p = np.abs(sp) < RELIEF_WEAK * np.abs(sq)
            weak_q = np.abs(sq) < RELIEF_WEAK * np.abs(sp)
            out[(e, t)] = tuple(
                Relief(
                    node=str(names[j]),
                    p_mw=None if weak_p[j] else _relief_size(change, sp[j]),
                    q_mvar=None if weak_q[j] else _relief_size(change, sq[j]),
                )
                for j in best.tolist()
            )
    return out


def _relief_size(change: float, sensitivity: float) -> float | None:
    if not np.isfinite(sensitivity) or abs(sensitivity) < 1e-9:
        return None
    return round(float(change / sensitivity), 6)


# -- calibration -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReliabilityTable:
    """Calibration of violation probabilities: per bin, mean forecast probability, observed frequency and count.

    ``brier``: mean squared error of the probabilities; ``brier_climatology``: the same for the
    climatological probability; ``skill``: ``1 - brier / brier_climatology`` (above 0: better
    than climatology).
    """

    edges: FloatArray
    forecast: FloatArray
    observed: FloatArray
    count: npt.NDArray[np.int64]
    brier: float
    brier_climatology: float

    @property
    def skill(self) -> float:
        """Brier skill score against climatology."""
        return 1.0 - self.brier / self.brier_climatology if self.brier_climatology > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Return the table as a JSON-ready dict."""
        return {
            "bins": [
                {
                    "from": float(self.edges[i]),
                    "to": float(self.edges[i + 1]),
                    "forecast": _num(self.forecast[i]),
                    "observed": _num(self.observed[i]),
                    "count": int(self.count[i]),
                }
                for i in range(self.count.size)
            ],
            "brier": self.brier,
            "brier_climatology": self.brier_climatology,
            "skill": self.skill,
        }


def reliability(
    probability: npt.ArrayLike,
    observed: npt.ArrayLike,
    *,
    climatology: npt.ArrayLike | None = None,
    bins: int = 10,
) -> ReliabilityTable:
    """Return the reliability table and Brier scores of violation ``probability`` against ``observed`` outcomes.

    ``probability`` and ``observed`` (booleans) of the same shape (e.g. element x interval over
    held-out days). ``climatology``: the reference probability per cell (e.g. the frequency of
    violation of the element at that quarter-hour of the day in past weeks); default the observed
    base rate (sample climatology). Bins split [0, 1] evenly; a bin with no cell gives NaN.
    """
    p = np.asarray(probability, dtype=float).ravel()
    o = np.asarray(observed, dtype=bool).ravel().astype(float)
    if p.shape != o.shape or p.size == 0:
        raise InputError(f"reliability: probability and observed need one shape, got {p.shape} and {o.shape}")
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise InputError("reliability: probabilities must lie in [0, 1]")
    clim = np.full_like(p, o.mean()) if climatology is None else np.asarray(climatology, dtype=float).ravel()
    if clim.shape != p.shape:
        raise InputError(f"reliability: climatology of shape {clim.shape}, expected {p.shape}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(which, weights=p, minlength=bins) / count
        freq = np.bincount(which, weights=o, minlength=bins) / count
    return ReliabilityTable(
        edges=edges,
        forecast=mean_p,
        observed=freq,
        count=count,
        brier=float(np.mean((p - o) ** 2)),
        brier_climatology=float(np.mean((clim - o) ** 2)),
    )


# -- end to end ------------------------------------------------------------------------------------------------
Forecaster = Callable[..., QuantileForecast]

#: History a weekly-profile forecast reads: four weeks for the mean, 28 days of residuals whose
#: own fitted values reach four weeks further back, and a week to spare. Forecasts are made from
#: this window only (identical results, several times faster on a year of history).
HISTORY_WINDOW = timedelta(weeks=9)


def _window(history: pd.DataFrame, issued: datetime, span: timedelta) -> pd.DataFrame:
    """The rows of ``history`` in ``[issued - span, issued)``."""
    if not isinstance(history.index, pd.DatetimeIndex) or history.index.tz is None:
        raise InputError("forecast history must be indexed by timezone-aware times")
    end = pd.Timestamp(issued).tz_convert("UTC")
    return history.loc[(history.index < end) & (history.index >= end - span)]


def fit_copula_before(
    history: pd.DataFrame,
    issued: datetime,
    *,
    days: int = 7,
    horizon_steps: int = 192,
    forecaster: Forecaster | None = None,
    seed: int | None = 0,
) -> GaussianCopula:
    """Fit the copula on the forecast errors of the ``days`` daily forecasts issued before ``issued``.

    Each past forecast is issued at the same time of day, one to ``days`` days earlier, with the
    same ``forecaster`` (default :func:`~opendso.planning.baselines.weekly_profile_forecast`) and
    horizon, and scored against ``history`` where it covers the intervals (only intervals before
    ``issued``: nothing from the future leaks in).
    """
    from opendso.planning.baselines import weekly_profile_forecast

    make = forecaster or weekly_profile_forecast
    past = _window(history, issued, timedelta(days=days) + HISTORY_WINDOW)
    forecasts = []
    for d in range(days, 0, -1):
        at = issued - timedelta(days=d)
        try:
            forecasts.append(make(past, at, horizon_steps=horizon_steps))
        except InputError:  # not enough history before that day: start later
            continue
    if not forecasts:
        raise InputError(f"copula: no past forecast can be issued in the {days} days before {issued.isoformat()}")
    return fit_copula(forecasts, past, seed=seed)


def congestion_outlook(
    grid: Grid,
    issued: datetime,
    *,
    steps: int = 192,
    scenarios: int = 200,
    seed: int | None = 0,
    limits: ViolationLimits | None = None,
    history: pd.DataFrame | None = None,
    copula_days: int = 7,
) -> CongestionForecast:
    """The congestion forecast of the next ``steps`` intervals from ``issued``, end to end.

    ``history``: measured P per load and generator (default: the grid's profiles with noise,
    :func:`~opendso.planning.history.profile_history`); the weekly-profile forecast from it; the
    copula from the forecast errors of the ``copula_days`` days before; ``scenarios`` scenarios
    through the batch power flow. :class:`InputError` when the grid has no profiles or not enough
    history precedes ``issued`` (a week, plus ``copula_days`` for the past forecasts), or it lies after the history.
    """
    from opendso.planning.baselines import weekly_profile_forecast
    from opendso.planning.history import profile_history

    if issued.tzinfo is None:
        raise InputError(f"congestion forecast: issue time {issued} must be timezone-aware")
    if not 1 <= steps <= 7 * 96:
        raise InputError(f"congestion forecast: steps must be 1..672, got {steps}")
    if not 1 <= scenarios <= 5000:
        raise InputError(f"congestion forecast: scenarios must be 1..5000, got {scenarios}")
    if history is None:
        history = profile_history(grid)
    if not isinstance(history.index, pd.DatetimeIndex) or history.index.tz is None or history.empty:
        raise InputError("congestion forecast: the history must be indexed by timezone-aware times")
    first, last = history.index.min(), history.index.max()
    at = pd.Timestamp(issued).tz_convert("UTC")
    if not first + timedelta(weeks=1, days=copula_days) <= at <= last + timedelta(minutes=15):
        raise InputError(
            f"congestion forecast: issue time {at.isoformat()} outside the history that can feed it "
            f"({(first + timedelta(weeks=1, days=copula_days)).isoformat()} .. {last.isoformat()})"
        )
    forecast = weekly_profile_forecast(_window(history, issued, HISTORY_WINDOW), issued, horizon_steps=steps)
    copula = fit_copula_before(history, issued, days=copula_days, horizon_steps=steps, seed=seed)
    return forecast_congestion(grid, forecast, scenarios=scenarios, seed=seed, limits=limits, copula=copula)


def issue_time_in_profiles(grid: Grid, when: datetime) -> datetime:
    """``when`` (aware) moved into the year of the grid's profiles: same month, day and time of day, at 15 minutes.

    Study grids carry one year of profiles (SimBench: 2016); the history and the forecast are
    made on that year, so "now" is read as the same moment of that year (29 February as the 28th
    in a year without it). :class:`InputError` when the grid has no profiles or ``when`` is naive.
    """
    from opendso.planning.history import profile_times

    if when.tzinfo is None:
        raise InputError(f"issue time {when} must be timezone-aware")
    first = profile_times(grid)[0]
    at = pd.Timestamp(when).tz_convert("UTC").floor("15min")
    day = min(at.day, 28) if (at.month, at.day) == (2, 29) else at.day
    moved = at.replace(year=first.year, day=day)
    moved_dt: datetime = moved.to_pydatetime()
    return moved_dt
