"""Time-series hosting capacity: the largest extra generation and load per node over the profiles' steps.

For every node, the largest extra generation and the largest extra load (added at the node at
unity power factor) such that every step of the first ``steps`` steps of the grid's profiles
keeps the voltage of every energised node within ``u_min_pu .. u_max_pu`` and the loading of every
branch at or below ``loading_max`` (as power-grid-model reports it: power-based for
transformers): a quasi-static time-series (QSTS) hosting capacity, every limit judged at every
step rather than on a few worst-case snapshots as in streamlined screening methods.

How it is computed, vectorised:

- one *probe* ``sym_load`` (constant power, p = q = 0) is added at each studied node of a chunk;
  generation is a negative probe load;
- a candidate size for each node of the chunk is judged in one power-grid-model batch call whose
  scenarios are (node, step) pairs: every scenario carries the profile update of its step and the
  probe powers (only its node's probe non-zero), so the admittance matrix is factorised once and
  the update stays independent of the scenario (power-grid-model reuses its topology);
- the size is bracketed by growing it (x4) from a first guess set by the node's voltage level,
  then bisected until the bracket is narrower than 1 % of the feasible size or 10 kW, whichever
  is larger. The rounds judge each node on a few *screened* steps only (the base case's highest
  and lowest voltages and highest loadings): a size infeasible there is infeasible; the size
  found is then checked at every step in one batch (chunked over steps, a node leaving at its
  first violating chunk). A step that fails joins the node's screened set and the bisection
  resumes between the last size checked at every step and the failed one. So the answer is
  always feasible at every step, and the screening changes only the time;
- a scenario the power flow does not solve (iterative current, then Newton-Raphson) counts as a
  voltage limit at the probed node (voltage collapse);
- the base case (no extra power at every step) does not depend on the chunk's nodes: the last one
  solved is kept in the process and reused by the next chunk of the same grid object, steps and
  limits (a Dask worker solves it once).

**The margin filter** (``margin_filter``, off by default: None judges every step by a power flow).
A year is 35,136 steps; most of them are far from any limit, yet the exact check solves them all
for every node, direction and verified size. With the filter, the base case keeps every element's
*phasor* at every step (node voltage in p.u.; line currents over ``i_n`` and transformer powers over
``sn``, both sides; a real loading for other branch kinds). Before a size is checked at every step,
the change it causes to every phasor is solved exactly at a few dozen steps (the node's screened
steps, both directions' screened steps and ``FIT_SPREAD_STEPS`` steps spread over the study) and
fitted as ``c_e / conj(U_n)`` (a constant-power injection's extra current scales with the inverse
of the probed node's voltage), ``r_e`` being the largest misfit seen. At every other step ``t`` the
element's phasor with the size is taken to lie within ``r_e + margin_filter x |shift|`` of
``X_e(t) + c_e / conj(U_n(t))``; only steps where that disc reaches a limit (the voltage band, or a
magnitude of ``loading_max``) are judged by a power flow, the closest first. Whenever the disc
holds the true phasor, the size found is feasible at every step as with the exact check (the
violating steps met first may differ, so the answers agree within the stated accuracy; on the
tests' grids they are identical). That is a model, not a proof: on the demo MV+LV grid over a year
(every 11th step, MV and LV nodes, both directions, at the sizes found) the true magnitude never
passed the fitted one by more than ``r_e`` + 0.0003 x ``|shift|`` near a limit, against the
allowance of ``MARGIN_FILTER`` = 0.02 x ``|shift|``. Use the filter for long studies (a year) and
say so; the default stays exact.

The binding limit reported is the worst violation (voltage in p.u. beyond the band, loading
beyond ``loading_max``) at the smallest infeasible size found, among the steps judged at that
size; its step is the index in the profiles. A node whose base case already violates a limit has a
hosting capacity of 0 with that violation as its limit. Every node's answer depends only on its
own rounds, so splitting the nodes into chunks (and chunks across Dask workers,
:mod:`opendso.calc.hc_dask`) gives identical results.
"""

from __future__ import annotations

import hashlib
import logging
import threading as threading_module
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from power_grid_model import CalculationMethod, PowerGridModel

from opendso.calc.powerflow import batch_power_flow, with_probe_loads
from opendso.calc.timeseries import LOADING_COMPONENTS, ViolationLimits
from opendso.errors import CalculationError, InputError
from opendso.grid.model import Grid

__all__ = [
    "MARGIN_FILTER",
    "HostingCapacityResult",
    "HostingLimit",
    "NodeHostingCapacity",
    "hosting_capacity",
    "hosting_geojson",
    "study_nodes",
    "verify_every_step",
]

log = logging.getLogger(__name__)

#: Accuracy: the bracket is closed to this fraction of the feasible size ...
ACCURACY_FRACTION = 0.01
#: ... or to this many MW, whichever is larger.
ACCURACY_MW = 0.01
#: Sizes above this are not searched (the node is reported at the cap with no binding limit).
MAX_MW = 2000.0
#: Output and update data per batch call are kept near this many bytes.
BATCH_BYTES = 48e6
#: Steps per batch call are chosen so that this many nodes fit in ``BATCH_BYTES``.
STEP_CHUNK_NODES = 16
#: Steps screened first per node and limit kind (the base case's closest to the limit).
SCREEN_STEPS = 4
#: Violating steps added to a node's screened set when a full check fails.
ADD_STEPS = 4
#: Steps spread evenly over the study that the margin filter also fits the change of a size at.
FIT_SPREAD_STEPS = 16
#: The margin filter's allowance recommended for long studies (see the module docstring).
MARGIN_FILTER = 0.02

Direction = Literal["generation", "load"]
LimitKind = Literal["voltage", "thermal"]


@dataclass(frozen=True)
class HostingLimit:
    """The limit that binds: ``kind`` (voltage or thermal), the element's name and the profile step."""

    kind: LimitKind
    element: str
    step: int

    def to_dict(self) -> dict[str, Any]:
        """Return the limit as a JSON-ready dict."""
        return {"kind": self.kind, "element": self.element, "step": self.step}


@dataclass(frozen=True)
class NodeHostingCapacity:
    """Hosting capacity of one node: extra generation and extra load in MW, each with its binding limit."""

    node: str
    node_id: int
    generation_mw: float
    load_mw: float
    generation_limit: HostingLimit | None
    load_limit: HostingLimit | None

    def to_dict(self) -> dict[str, Any]:
        """Return the node's record of the CLI's JSON contract."""
        return {
            "node": self.node,
            "generation_mw": self.generation_mw,
            "load_mw": self.load_mw,
            "generation_limit": None if self.generation_limit is None else self.generation_limit.to_dict(),
            "load_limit": None if self.load_limit is None else self.load_limit.to_dict(),
        }


@dataclass(frozen=True)
class HostingCapacityResult:
    """Hosting capacity of the studied nodes over the first ``steps`` steps of the grid's profiles."""

    grid: str
    steps: int
    nodes: tuple[NodeHostingCapacity, ...]
    limits: ViolationLimits

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"grid", "steps", "nodes": [...]}``, the JSON object of ``opendso hosting-capacity``."""
        return {"grid": self.grid, "steps": self.steps, "nodes": [n.to_dict() for n in self.nodes]}


def hosting_geojson(grid: Grid, result: HostingCapacityResult) -> dict[str, Any]:
    """Return the study as a GeoJSON FeatureCollection (RFC 7946) of Points at the studied nodes.

    Each feature's properties are the node's record of the JSON contract (``node``,
    ``generation_mw``, ``load_mw``, ``generation_limit``, ``load_limit``) with ``steps``. When every
    node has coordinates within longitude -180..180 and latitude -90..90 the grid is taken as
    geographic and the coordinates are ``[lon, lat]`` (WGS 84, RFC 7946 section 3.1.1); otherwise
    they are the schematic layout's x/y (:func:`opendso.grid.layout.schematic_layout`) and every
    feature says so (``"coordinates": "schematic"``), since such a file is GeoJSON in form only.
    """
    xy = np.asarray(grid.node_xy, dtype=float)
    n = grid.count("node")
    geographic = bool(
        xy.shape == (n, 2)
        and n
        and np.isfinite(xy).all()
        and (np.abs(xy[:, 0]) <= 180.0).all()
        and (np.abs(xy[:, 1]) <= 90.0).all()
    )
    if not geographic:
        from opendso.grid.layout import schematic_layout

        xy = schematic_layout(grid)
    rows = grid.node_positions([r.node_id for r in result.nodes]) if result.nodes else np.zeros(0, dtype=np.int64)
    features = []
    for record, row in zip(result.nodes, rows.tolist(), strict=True):
        properties = {**record.to_dict(), "steps": result.steps}
        if not geographic:
            properties["coordinates"] = "schematic"
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [float(xy[row, 0]), float(xy[row, 1])]},
                "properties": properties,
            }
        )
    return {"type": "FeatureCollection", "name": result.grid, "geographic": geographic, "features": features}


def resolve_nodes(grid: Grid, names: Sequence[str] | None) -> npt.NDArray[np.int64]:
    """Return the ids of the nodes to study: the named ones, else every energised node without a source.

    A node with a source (or joined to one by closed links) is the model's boundary: the source
    takes whatever is added there, so it is not studied. Raises
    :class:`~opendso.errors.InputError` naming every unknown, de-energised or source node, and
    when the grid has no time profiles.
    """
    from opendso.grid.topology import analyse_topology

    if grid.profiles is None or grid.profiles.steps == 0:
        raise InputError(f"{grid.name}: the grid has no time profiles")
    node_names = grid.names_of("node")
    ids = grid.component("node")["id"].astype(np.int64)
    topology = analyse_topology(grid)
    # a node with a source is the boundary of the model: the source absorbs whatever is added there
    source_node = np.isin(ids, _source_busbar(grid))
    if not names:
        return ids[topology.node_energised & ~source_node]
    by_name = {str(n): i for i, n in enumerate(node_names)}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise InputError(f"{grid.name}: unknown node(s): {', '.join(unknown)}")
    rows = np.array([by_name[n] for n in names], dtype=np.int64)
    dead = [names[k] for k, r in enumerate(rows) if not topology.node_energised[r]]
    if dead:
        raise InputError(f"{grid.name}: node(s) not energised: {', '.join(dead)}")
    boundary = [names[k] for k, r in enumerate(rows) if source_node[r]]
    if boundary:
        raise InputError(
            f"{grid.name}: node(s) with a source (the model's boundary, not studied): {', '.join(boundary)}"
        )
    return ids[rows]


def _source_busbar(grid: Grid) -> npt.NDArray[np.int64]:
    """Ids of the nodes with a source and of the nodes joined to them by closed links (one busbar)."""
    found = set(grid.component("source")["node"].astype(np.int64).tolist())
    links = grid.component("link")
    closed = links[(links["from_status"] == 1) & (links["to_status"] == 1)]
    grew = True
    while grew:
        grew = False
        for a, b in zip(closed["from_node"].tolist(), closed["to_node"].tolist(), strict=True):
            if (a in found) != (b in found):
                found.update((a, b))
                grew = True
    return np.array(sorted(found), dtype=np.int64)


def check_steps(grid: Grid, steps: int | None) -> int:
    """Return the number of profile steps to study (all when ``steps`` is None), refusing bad values."""
    if grid.profiles is None or grid.profiles.steps == 0:
        raise InputError(f"{grid.name}: the grid has no time profiles")
    if steps is None:
        return grid.profiles.steps
    if steps <= 0:
        raise InputError(f"--steps {steps}: must be positive")
    return min(int(steps), grid.profiles.steps)


def hosting_capacity(
    grid: Grid,
    *,
    nodes: Sequence[str] | None = None,
    steps: int | None = None,
    limits: ViolationLimits | None = None,
    chunk_nodes: int = 16,
    threading: int = 0,
    margin_filter: float | None = None,
) -> HostingCapacityResult:
    """Return the hosting capacity of ``nodes`` (names; every energised node when None), in this process.

    See the module docstring for the method and for ``margin_filter`` (None, the default: every
    step judged by a power flow); :func:`opendso.calc.hc_dask.run_hosting_capacity` does the same
    study split across Dask workers.
    """
    limits = limits or ViolationLimits()
    n_steps = check_steps(grid, steps)
    check_margin_filter(margin_filter)
    ids = resolve_nodes(grid, nodes)
    out: list[NodeHostingCapacity] = []
    for start in range(0, ids.size, chunk_nodes):
        out.extend(
            study_nodes(
                grid,
                ids[start : start + chunk_nodes],
                n_steps,
                limits,
                threading=threading,
                margin_filter=margin_filter,
            )
        )
    return HostingCapacityResult(grid=grid.name, steps=n_steps, nodes=tuple(out), limits=limits)


def verify_every_step(grid: Grid, result: HostingCapacityResult, *, threading: int = 0) -> list[tuple[bool, bool]]:
    """Judge every node's reported generation and load of ``result`` at every step by a power flow.

    Returns, per node in the result's order, whether the generation and the load size keep every
    step within the limits (when the base case already violates one, whether the size is 0): the
    exact check, for instance of a study run with the margin filter.
    """
    if not result.nodes:
        return []
    ids = np.array([n.node_id for n in result.nodes], dtype=np.int64)
    study = _Study(grid, ids, result.steps, result.limits, threading)
    base_ok, _ = study.base_case()
    rows = np.arange(ids.size)
    verdicts: list[list[bool]] = []
    for sign, key in ((-1.0, "generation_mw"), (1.0, "load_mw")):
        sizes = np.array([getattr(n, key) for n in result.nodes])
        ok, _, _ = study.judge_all(rows, sign * sizes * 1e6)
        # a base case that already violates: the right answer is 0 (the size cannot be judged above it)
        verdicts.append([bool(o) if base_ok else size == 0.0 for o, size in zip(ok, sizes, strict=True)])
    return list(zip(verdicts[0], verdicts[1], strict=True))


def check_margin_filter(margin_filter: float | None) -> None:
    """Refuse a margin filter's allowance that is negative or not finite (it would skip steps unsafely)."""
    if margin_filter is not None and not (np.isfinite(margin_filter) and margin_filter >= 0.0):
        raise InputError(f"margin filter {margin_filter}: the allowance must be a finite number >= 0")


def study_nodes(
    grid: Grid,
    node_ids: npt.ArrayLike,
    steps: int,
    limits: ViolationLimits,
    *,
    threading: int = 0,
    margin_filter: float | None = None,
) -> list[NodeHostingCapacity]:
    """Return the hosting capacity of a chunk of nodes (ids) over the first ``steps`` steps, in their order."""
    ids = np.asarray(node_ids, dtype=np.int64)
    if ids.size == 0:
        return []
    check_margin_filter(margin_filter)
    study = _Study(grid, ids, steps, limits, threading, margin_filter)
    base_ok, base_limit = study.base_case()
    gen_mw, gen_limit = study.search(-1.0, base_ok, base_limit)
    load_mw, load_limit = study.search(1.0, base_ok, base_limit)
    log.debug(
        "event=hc_chunk nodes=%d steps=%d margin_filter=%s step_checks=%d steps_skipped=%d",
        ids.size,
        steps,
        margin_filter,
        study.checked,
        study.skipped,
    )
    names = grid.names_of("node")[grid.node_positions(ids)]
    return [
        NodeHostingCapacity(
            node=str(names[k]),
            node_id=int(ids[k]),
            generation_mw=gen_mw[k],
            load_mw=load_mw[k],
            generation_limit=gen_limit[k],
            load_limit=load_limit[k],
        )
        for k in range(ids.size)
    ]


def _fingerprint(grid: Grid, steps: int) -> str:
    """A hash of what the base case depends on: the input arrays and the profiles of the first ``steps`` steps."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(grid.input):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(grid.input[name]).tobytes())
    if grid.profiles is not None:
        digest.update(np.ascontiguousarray(grid.profiles.values[:steps]).tobytes())
        for a in grid.profiles.assignments:
            digest.update(f"{a.component}.{a.attribute}".encode())
            for array in (a.ids, a.column, a.scale):
                digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(str(grid.frequency_hz).encode())
    return digest.hexdigest()


@dataclass
class _Base:
    """The base case (no extra power) at every step: per-step summary and, for the filter, per-element phasors."""

    grid: Grid
    key: tuple[Any, ...]
    outcome: _Outcome
    phasors: npt.NDArray[np.complex64] | None
    extremes: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None


#: The last base case solved in this process (one entry: a worker studies chunk after chunk of one grid).
_BASE_CACHE: list[_Base] = []
_BASE_LOCK = threading_module.Lock()


class _Study:
    """The batch power flows of one chunk of nodes: the model with a probe load at each node."""

    def __init__(
        self,
        grid: Grid,
        ids: npt.NDArray[np.int64],
        steps: int,
        limits: ViolationLimits,
        threading: int,
        margin_filter: float | None = None,
    ):
        if grid.profiles is None:
            raise InputError(f"{grid.name}: the grid has no time profiles")
        self.grid = grid
        self.profiles = grid.profiles
        self.steps = steps
        self.limits = limits
        self.threading = threading
        self.margin_filter = margin_filter
        self.node_ids = ids
        self.checked = 0  # (node, step) scenarios judged by the every-step checks
        self.skipped = 0  # ... and skipped by the margin filter
        data, self.probe_ids = with_probe_loads(grid, ids)
        self.model = PowerGridModel(data, system_frequency=grid.frequency_hz)
        self.node_rows = grid.node_positions(ids)
        node = grid.component("node")
        self.u_rated = node["u_rated"][self.node_rows]
        self.node_names = grid.names_of("node")
        self.branches = [c for c in LOADING_COMPONENTS if grid.count(c)]
        self.branch_names = np.concatenate(
            [grid.names_of(c).astype(object) for c in self.branches] or [np.zeros(0, object)]
        )
        self.wanted: dict[str, Any] = {"node": ["u_pu", "energized"]}
        self.wanted.update({c: ["loading"] for c in self.branches})
        self.phasor_wanted: dict[str, Any] = {"node": ["u_pu", "u", "u_angle", "energized"]}
        self.phasor_wanted.update(
            {
                c: ["loading", "p_from", "q_from", "p_to", "q_to"] if c in ("line", "transformer") else ["loading"]
                for c in self.branches
            }
        )
        per_scenario = 9 * grid.count("node") + 8 * sum(grid.count(c) for c in self.branches)
        per_scenario += 12 * (sum(a.ids.size for a in self.profiles.assignments) + 2 * ids.size)
        self.step_chunk = int(max(16, BATCH_BYTES // max(per_scenario, 1) // STEP_CHUNK_NODES))

    # -- batch power flows over (node, step) scenarios -----------------------------------------------
    def run_pairs(
        self,
        rows: npt.NDArray[np.int64],
        steps: npt.NDArray[np.int64],
        p_w: npt.NDArray[np.float64],
        phasors: npt.NDArray[np.complex64] | None = None,
    ) -> _Outcome:
        """Solve one scenario per (probe row, profile step, probe power in W, + load); judge each one.

        With ``phasors`` (scenarios x elements), each element's phasor (:meth:`phasors_of`) is kept there too.
        """
        n = rows.size
        outcome = _Outcome.empty(n)
        chunk = self.step_chunk * STEP_CHUNK_NODES // (1 if phasors is None else 4)
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            self._run_chunk(rows[sl], steps[sl], p_w[sl], outcome, sl, phasors)
        return outcome

    def _update(
        self, rows: npt.NDArray[np.int64], steps: npt.NDArray[np.int64], p_w: npt.NDArray[np.float64]
    ) -> dict[str, dict[str, np.ndarray]]:
        """The batch update of (probe row, step, probe power) scenarios: the profiles and the probes."""
        m = rows.size
        values = self.profiles.values[steps]
        batch: dict[str, dict[str, np.ndarray]] = {}
        for a in self.profiles.assignments:
            columns = batch.setdefault(a.component, {})
            columns.setdefault("id", np.broadcast_to(a.ids, (m, a.ids.size)))
            columns[a.attribute] = a.evaluate(values)
        probe_p = np.zeros((m, self.probe_ids.size))
        probe_p[np.arange(m), rows] = p_w
        probe_ids = np.broadcast_to(self.probe_ids, probe_p.shape)
        loads = batch.get("sym_load")
        if loads is None:
            batch["sym_load"] = {"id": np.ascontiguousarray(probe_ids), "p_specified": probe_p}
        else:
            width = loads["id"].shape[1]
            loads["id"] = np.concatenate([loads["id"], probe_ids], axis=1)
            loads["p_specified"] = np.concatenate(
                [loads.get("p_specified", np.full((m, width), np.nan)), probe_p], axis=1
            )
            if "q_specified" in loads:
                loads["q_specified"] = np.concatenate([loads["q_specified"], np.zeros_like(probe_p)], axis=1)
        for columns in batch.values():
            columns["id"] = np.ascontiguousarray(columns["id"])
        return batch

    def _run_chunk(
        self,
        rows: npt.NDArray[np.int64],
        steps: npt.NDArray[np.int64],
        p_w: npt.NDArray[np.float64],
        outcome: _Outcome,
        sl: slice,
        phasors: npt.NDArray[np.complex64] | None = None,
    ) -> None:
        m = rows.size
        wanted = self.wanted if phasors is None else self.phasor_wanted
        out, failed = self._calculate(self._update(rows, steps, p_w), wanted)
        u = out["node"]["u_pu"]
        energised = out["node"]["energized"].astype(bool)
        with np.errstate(invalid="ignore"):
            excess_u = np.where(energised, np.maximum(self.limits.u_min_pu - u, u - self.limits.u_max_pu), -np.inf)
            live_u = np.where(energised, u, np.nan)
        worst_node = np.argmax(excess_u, axis=1)
        sev_u = excess_u[np.arange(m), worst_node]
        if self.branches:
            loading = np.nan_to_num(np.concatenate([out[c]["loading"] for c in self.branches], axis=1), nan=-np.inf)
            worst_branch = np.argmax(loading, axis=1)
            max_loading = loading[np.arange(m), worst_branch]
        else:
            loading = np.zeros((m, 0))
            worst_branch = np.zeros(m, dtype=np.int64)
            max_loading = np.full(m, -np.inf)
        if phasors is not None:
            phasors[sl] = self.phasors_of(out)
        sev_l = max_loading - self.limits.loading_max
        voltage = sev_u >= sev_l
        outcome.severity[sl] = np.maximum(sev_u, sev_l)
        outcome.voltage[sl] = voltage
        outcome.element[sl] = np.where(voltage, worst_node, worst_branch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            outcome.u_min[sl] = np.nanmin(live_u, axis=1)
            outcome.u_max[sl] = np.nanmax(live_u, axis=1)
        outcome.max_loading[sl] = max_loading
        if failed:
            idx = np.arange(sl.start, sl.stop)[failed]
            outcome.severity[idx] = np.inf
            outcome.voltage[idx] = True
            outcome.element[idx] = self.node_rows[rows[failed]]
            outcome.u_min[idx] = np.nan
            outcome.u_max[idx] = np.nan

    def limit_of(self, outcome: _Outcome, k: int, steps: npt.NDArray[np.int64]) -> HostingLimit:
        """The violation of scenario ``k`` (at profile step ``steps[k]``) as a :class:`HostingLimit`."""
        if outcome.voltage[k]:
            return HostingLimit("voltage", str(self.node_names[outcome.element[k]]), int(steps[k]))
        return HostingLimit("thermal", str(self.branch_names[outcome.element[k]]), int(steps[k]))

    def judge_all(
        self,
        rows: npt.NDArray[np.int64],
        p_w: npt.NDArray[np.float64],
        subsets: Sequence[npt.NDArray[np.int64]] | None = None,
    ) -> tuple[npt.NDArray[np.bool_], list[HostingLimit | None], list[npt.NDArray[np.int64]]]:
        """Judge each row's size at every step (or, with the margin filter, at every step it cannot skip).

        ``subsets`` are the steps each row's change is measured at for the filter (the rows'
        screened steps when None). Returns feasibility, the worst violation, and the violating steps
        (worst first, at most ``ADD_STEPS``) of every row.
        """
        every = np.arange(self.steps, dtype=np.int64)
        if self.margin_filter is None:
            lists = [every] * rows.size
        else:
            if subsets is None:
                subsets = [self.critical_steps(float(np.sign(p))) for p in p_w]
            lists = self.unsafe_steps(rows, p_w, subsets)
        self.checked += sum(s.size for s in lists)
        self.skipped += rows.size * self.steps - sum(s.size for s in lists)
        return self.judge_steps(rows, p_w, lists)

    def judge_steps(
        self, rows: npt.NDArray[np.int64], p_w: npt.NDArray[np.float64], lists: Sequence[npt.NDArray[np.int64]]
    ) -> tuple[npt.NDArray[np.bool_], list[HostingLimit | None], list[npt.NDArray[np.int64]]]:
        """Judge each row's size at its steps ``lists[j]``, a round at a time, a row leaving at its first violation."""
        feasible = np.ones(rows.size, dtype=bool)
        found: list[HostingLimit | None] = [None] * rows.size
        violating: list[npt.NDArray[np.int64]] = [np.zeros(0, dtype=np.int64)] * rows.size
        open_ = np.array([j for j in range(rows.size) if lists[j].size], dtype=np.int64)
        start = 0
        while open_.size:
            parts = [lists[j][start : start + self.step_chunk] for j in open_]
            sizes = np.array([p.size for p in parts], dtype=np.int64)
            steps = np.concatenate(parts)
            outcome = self.run_pairs(np.repeat(rows[open_], sizes), steps, np.repeat(p_w[open_], sizes))
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            still = np.ones(open_.size, dtype=bool)
            for j, k in enumerate(open_):
                sev = outcome.severity[offsets[j] : offsets[j + 1]]
                if (sev <= 0).all():
                    still[j] = lists[k].size > start + self.step_chunk
                    continue
                still[j] = False
                feasible[k] = False
                order = np.argsort(-sev, kind="stable")
                order = order[sev[order] > 0][:ADD_STEPS]
                violating[k] = parts[j][order]
                found[k] = self.limit_of(outcome, int(offsets[j] + order[0]), steps)
            open_ = open_[still]
            start += self.step_chunk
        return feasible, found, violating

    def judge_subset(
        self, rows: npt.NDArray[np.int64], p_w: npt.NDArray[np.float64], subsets: Sequence[npt.NDArray[np.int64]]
    ) -> tuple[npt.NDArray[np.bool_], list[HostingLimit | None]]:
        """Judge each row's size at its own steps only (``subsets[j]`` for ``rows[j]``), in one batch."""
        sizes = np.array([s.size for s in subsets], dtype=np.int64)
        steps = np.concatenate(list(subsets)) if len(subsets) else np.zeros(0, dtype=np.int64)
        outcome = self.run_pairs(np.repeat(rows, sizes), steps, np.repeat(p_w, sizes))
        feasible = np.ones(rows.size, dtype=bool)
        found: list[HostingLimit | None] = [None] * rows.size
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        for j in range(rows.size):
            sev = outcome.severity[offsets[j] : offsets[j + 1]]
            if sev.size and sev.max() > 0:
                feasible[j] = False
                found[j] = self.limit_of(outcome, int(offsets[j] + np.argmax(sev)), steps)
        return feasible, found

    # -- the margin filter ---------------------------------------------------------------------------
    def phasors_of(self, out: dict[str, Any]) -> npt.NDArray[np.complex128]:
        """Per scenario, every element's phasor, normalised to its limit's unit.

        Elements: the nodes (voltage in p.u. with its angle; NaN when de-energised), then per line
        its from and to currents over ``i_n``, per transformer its from and to complex powers over
        ``sn``, per other branch its loading (a real number): a branch side is within its limit when
        the phasor's magnitude is at most ``loading_max``, a node when it is within the band.
        """
        node = out["node"]
        live = node["energized"].astype(bool)
        parts = [np.where(live, node["u_pu"] * np.exp(1j * node["u_angle"]), np.nan)]
        with np.errstate(invalid="ignore", divide="ignore"):
            for c in self.branches:
                attrs = out[c]
                table = self.grid.component(c)
                for side in ("from", "to") if c in ("line", "transformer") else ():
                    power = attrs[f"p_{side}"] + 1j * attrs[f"q_{side}"]
                    if c == "line":
                        cols = self.grid.node_positions(table[f"{side}_node"])
                        volts = node["u"][:, cols] * np.exp(1j * node["u_angle"][:, cols])
                        parts.append(np.conj(power / (np.sqrt(3.0) * volts)) / table["i_n"])
                    else:
                        parts.append(power / table["sn"])
                if c not in ("line", "transformer"):
                    parts.append(attrs["loading"].astype(np.complex128))
        joined = np.asarray(np.concatenate(parts, axis=1), dtype=np.complex128)
        joined[~np.isfinite(joined)] = np.nan
        return joined

    def unsafe_steps(
        self, rows: npt.NDArray[np.int64], p_w: npt.NDArray[np.float64], subsets: Sequence[npt.NDArray[np.int64]]
    ) -> list[npt.NDArray[np.int64]]:
        """The steps each row's size must be judged at: those the filter cannot clear.

        The change ``d_e(s)`` the size causes to every element's phasor is solved at the row's
        ``subsets`` steps (the base case's extremes and the steps that violated before) and fitted
        as ``c_e w(s)``, ``w = 1 / conj(U_n)`` with ``U_n`` the probed node's base-case voltage
        (the extra current of a constant power scales so); ``r_e`` is the largest misfit seen. At a
        step ``t`` the element's phasor with the size is taken as ``X_e(t) + c_e w(t)`` within
        ``r_e + margin_filter |c_e w(t)|``; the step is skipped when that whole disc lies within
        every element's limit (a node: inside the voltage band; a branch side: a magnitude below
        ``loading_max``).
        """
        base, factor = self.base_phasors, self.margin_filter
        if base is None or factor is None or self.base_extremes is None:
            raise CalculationError(f"{self.grid.name}: hosting capacity: the margin filter needs the base phasors")
        big, small = self.base_extremes
        n_nodes = self.grid.count("node")
        lo, hi = self.limits.u_min_pu, self.limits.u_max_pu
        upper = np.where(np.arange(big.size) < n_nodes, hi, self.limits.loading_max)
        fit, misfit = self.change(rows, p_w, [self.fit_steps(s) for s in subsets])
        lists: list[npt.NDArray[np.int64]] = []
        for j in range(rows.size):
            w = 1.0 / np.conj(base[:, self.node_rows[rows[j]]].astype(np.complex128))
            w_max = float(np.abs(w).max())
            reach = (1.0 + factor) * np.abs(fit[j]) * w_max + misfit[j]
            with np.errstate(invalid="ignore"):
                near = big + reach >= upper
                near[:n_nodes] |= small[:n_nodes] - reach[:n_nodes] <= lo
            active = np.flatnonzero(near | ~np.isfinite(reach))
            if active.size == 0:
                lists.append(np.zeros(0, dtype=np.int64))
                continue
            if not np.isfinite(reach[active]).all():
                lists.append(np.arange(self.steps, dtype=np.int64))
                continue
            shift = fit[j, active] * w[:, None]
            value = np.abs(base[:, active] + shift)
            allowance = misfit[j, active] + factor * np.abs(shift)
            with np.errstate(invalid="ignore"):
                slack = upper[active] - (value + allowance)
                slack = np.where(active < n_nodes, np.minimum(slack, value - allowance - lo), slack)
            slack = np.nan_to_num(slack, nan=np.inf).min(axis=1)
            close = np.flatnonzero(slack <= 0)
            # the closest first: a size that violates is found in the first round
            lists.append(close[np.argsort(slack[close], kind="stable")].astype(np.int64))
        return lists

    def fit_steps(self, subset: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The steps a size's change is fitted at: ``subset``, both directions' screened steps, evenly spread steps."""
        spread = np.linspace(0, self.steps - 1, min(FIT_SPREAD_STEPS, self.steps)).astype(np.int64)
        return np.union1d(np.union1d(subset, spread), np.union1d(self.critical_steps(-1.0), self.critical_steps(1.0)))

    def change(
        self, rows: npt.NDArray[np.int64], p_w: npt.NDArray[np.float64], subsets: Sequence[npt.NDArray[np.int64]]
    ) -> tuple[npt.NDArray[np.complex128], npt.NDArray[np.float64]]:
        """Per row and element: the fit ``c`` of the change the size causes at the row's ``subsets`` steps; the misfit.

        A scenario the power flow does not solve makes the misfit infinite (nothing skipped).
        """
        sizes = np.array([s.size for s in subsets], dtype=np.int64)
        steps = np.concatenate(list(subsets))
        n = steps.size
        pair_rows = np.repeat(rows, sizes)
        both_p = np.concatenate([np.repeat(p_w, sizes), np.zeros(n)])
        out, failed = self._calculate(
            self._update(np.tile(pair_rows, 2), np.tile(steps, 2), both_p), self.phasor_wanted
        )
        x = self.phasors_of(out)
        delta = np.nan_to_num(x[:n] - x[n:], nan=0.0)
        w = 1.0 / np.conj(x[n:][np.arange(n), self.node_rows[pair_rows]])
        bad = ~np.isfinite(w)
        bad[np.asarray(failed, dtype=np.int64) % n] = True
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        fit = np.zeros((rows.size, x.shape[1]), dtype=np.complex128)
        misfit = np.zeros((rows.size, x.shape[1]))
        for j in range(rows.size):
            sl = slice(offsets[j], offsets[j + 1])
            if bad[sl].any():
                misfit[j] = np.inf
                continue
            d, wj = delta[sl], w[sl, None]
            fit[j] = (d / wj).mean(axis=0)
            misfit[j] = np.abs(d - fit[j] * wj).max(axis=0)
        return fit, misfit

    def _calculate(
        self, batch: dict[str, dict[str, np.ndarray]], wanted: dict[str, Any]
    ) -> tuple[dict[str, Any], list[int]]:
        """One batch call (iterative current, failed scenarios again with Newton-Raphson)."""
        out, failed = self._call(batch, CalculationMethod.iterative_current, wanted)
        if failed:
            idx = np.array(failed, dtype=np.int64)
            sub = {c: {name: v[idx] for name, v in cols.items()} for c, cols in batch.items()}
            again, still = self._call(sub, CalculationMethod.newton_raphson, wanted)
            solved = np.ones(idx.size, dtype=bool)
            solved[still] = False
            for c in out:
                for attr in out[c]:
                    out[c][attr][idx[solved]] = again[c][attr][solved]
            failed = [int(idx[s]) for s in still]
        return out, failed

    def _call(
        self, batch: dict[str, dict[str, np.ndarray]], method: CalculationMethod, wanted: dict[str, Any]
    ) -> tuple[dict[str, Any], list[int]]:
        out, rows = batch_power_flow(
            self.model,
            batch,
            output=wanted,
            what=f"{self.grid.name}: hosting capacity",
            method=method,
            threading=self.threading,
            tolerate_failures=True,
        )
        return out, [int(s) for s in rows]

    # -- the search ------------------------------------------------------------------------------
    def base_case(self) -> tuple[bool, HostingLimit | None]:
        """Solve the profiles without extra power at every step; keep each step's extremes for screening.

        The base case does not depend on the chunk's nodes (their probes are zero), so the last
        one solved in this process is reused when the grid object, its arrays' contents (a hash,
        so a grid changed in place is solved again), the steps and the limits are the same (and
        it solved at every step).
        """
        filtered = self.margin_filter is not None
        key = (self.steps, self.limits, _fingerprint(self.grid, self.steps))
        with _BASE_LOCK:
            cached = next((b for b in _BASE_CACHE if b.grid is self.grid and b.key == key), None)
        if cached is None or (filtered and cached.phasors is None):
            steps = np.arange(self.steps, dtype=np.int64)
            width = self.grid.count("node") + sum(
                (2 if c in ("line", "transformer") else 1) * self.grid.count(c) for c in self.branches
            )
            phasors = np.empty((self.steps, width), dtype=np.complex64) if filtered else None
            outcome = self.run_pairs(np.zeros(self.steps, dtype=np.int64), steps, np.zeros(self.steps), phasors)
            extremes = None
            if phasors is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    size = np.abs(phasors)
                    extremes = (np.nanmax(size, axis=0), np.nanmin(size, axis=0))
            cached = _Base(self.grid, key, outcome, phasors, extremes)
            if np.isfinite(outcome.severity).all():
                with _BASE_LOCK:
                    _BASE_CACHE[:] = [cached]
        self.base = cached.outcome
        self.base_phasors = cached.phasors
        self.base_extremes = cached.extremes
        bad = self.base.severity > 0
        if not bad.any():
            return True, None
        steps = np.arange(self.steps, dtype=np.int64)
        return False, self.limit_of(self.base, int(np.argmax(self.base.severity)), steps)

    def critical_steps(self, sign: float) -> npt.NDArray[np.int64]:
        """The steps screened first: where the base case is closest to the limit extra power pushes towards."""
        voltage = -self.base.u_max if sign < 0 else self.base.u_min
        ranked = [np.argsort(np.nan_to_num(voltage, nan=np.inf), kind="stable")[:SCREEN_STEPS]]
        ranked.append(np.argsort(-self.base.max_loading, kind="stable")[:SCREEN_STEPS])
        return np.unique(np.concatenate(ranked)).astype(np.int64)

    def search(
        self, sign: float, base_ok: bool, base_limit: HostingLimit | None
    ) -> tuple[list[float], list[HostingLimit | None]]:
        """Find each node's largest feasible size (MW); ``sign`` -1 for generation, +1 for load.

        Active set: bracket and bisect on a few screened steps per node (cheap batches), then check
        the size found at every step; a step that violates joins the node's set and the bisection
        resumes below it. The answer is always checked at every step, so the screening changes
        only the time, never the result's validity.
        """
        k = self.node_ids.size
        if not base_ok:
            return [0.0] * k, [base_limit] * k
        screened = self.critical_steps(sign)
        subsets = [screened.copy() for _ in range(k)]
        verified = np.zeros(k)  # feasible at every step
        lo = np.zeros(k)
        hi = np.where(self.u_rated < 1000.0, 0.25, 4.0)
        hi_limit: list[HostingLimit | None] = [None] * k
        bracketed = np.zeros(k, dtype=bool)
        done = np.zeros(k, dtype=bool)
        while not done.all():
            # bracket on the screened steps
            while True:
                rows = np.flatnonzero(~done & ~bracketed & (hi <= MAX_MW))
                if rows.size == 0:
                    break
                ok, limit = self.judge_subset(rows, sign * hi[rows] * 1e6, [subsets[r] for r in rows])
                for j, r in enumerate(rows):
                    if ok[j]:
                        lo[r] = hi[r]
                        hi[r] *= 4.0
                    else:
                        bracketed[r] = True
                        hi_limit[r] = limit[j]
            capped = ~done & ~bracketed
            lo[capped] = MAX_MW
            # bisect on the screened steps
            while True:
                width = hi - lo
                rows = np.flatnonzero(~done & bracketed & (width > np.maximum(ACCURACY_FRACTION * lo, ACCURACY_MW)))
                if rows.size == 0:
                    break
                mid = 0.5 * (lo[rows] + hi[rows])
                ok, limit = self.judge_subset(rows, sign * mid * 1e6, [subsets[r] for r in rows])
                for j, r in enumerate(rows):
                    if ok[j]:
                        lo[r] = mid[j]
                    else:
                        hi[r] = mid[j]
                        hi_limit[r] = limit[j]
            # check at every step
            rows = np.flatnonzero(~done)
            check = rows[lo[rows] > verified[rows]]
            done[rows[lo[rows] <= verified[rows]]] = True
            if check.size == 0:
                continue
            ok, limit, violating = self.judge_all(check, sign * lo[check] * 1e6, [subsets[r] for r in check])
            for j, r in enumerate(check):
                if ok[j]:
                    done[r] = True
                    continue
                subsets[r] = np.union1d(subsets[r], violating[j])
                hi[r], hi_limit[r] = lo[r], limit[j]
                bracketed[r] = True
                lo[r] = verified[r]
            verified[check[ok]] = lo[check[ok]]
        return [float(round(x, 6)) for x in lo], hi_limit


@dataclass
class _Outcome:
    """Per scenario: the worst violation (severity > 0 violates; inf when not solved) and the extremes."""

    severity: npt.NDArray[np.float64]
    voltage: npt.NDArray[np.bool_]
    element: npt.NDArray[np.int64]
    u_min: npt.NDArray[np.float64]
    u_max: npt.NDArray[np.float64]
    max_loading: npt.NDArray[np.float64]

    @classmethod
    def empty(cls, n: int) -> _Outcome:
        return cls(
            severity=np.full(n, -np.inf),
            voltage=np.zeros(n, dtype=bool),
            element=np.zeros(n, dtype=np.int64),
            u_min=np.full(n, np.nan),
            u_max=np.full(n, np.nan),
            max_loading=np.full(n, -np.inf),
        )
