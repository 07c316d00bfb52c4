"""Connection-request studies: firm capacity now, and expected curtailment under each principle of access.

For one connection request of the registry (:class:`~opendso.der.registry.DerRegistry`), the study
models on the grid every asset already *connected* (no request, or a connected one; an asset whose
only requests were withdrawn or rejected is left out), every request *ahead of it* in the queue,
and then answers two questions (issue 11 item 4):

**Firm capacity available now.** The time-series hosting capacity
(:func:`opendso.calc.hosting_capacity.hosting_capacity`) at the request's node over the studied
steps, with the modelled DER added to the grid at their nodes: the largest extra generation and
load that keep every step within the voltage band and the loading limit, *given the DER already
connected and in the queue ahead of it*. ``firm_export_kw`` is the part of the request's export
capacity that fits (``min(export_kw, generation hosting capacity)``), ``firm_import_kw`` likewise.

**Expected curtailment if connected flexibly** at its full export capacity, under each principle
of access (last-in-first-off, pro-rata, technical best, as in the ENA's Active Network
Management good practice): the studied steps are solved in batch power flows
(power-grid-model) with every modelled DER and the request at full output; at each step where a
limit is violated, the flexible DER *behind the constraint* are curtailed in the principle's
order until the violation is gone:

- the worst violation of the step (highest voltage excess, or highest loading beyond the limit)
  is the constraint; each flexible DER's *sensitivity* to it (relief of the violated quantity
  per W of curtailment) comes from finite differences, all of a step's DER in one batch; a DER is
  behind the constraint when its sensitivity is positive and at least 1 % of the largest;
- last-in-first-off curtails the newest first (the request is the newest; then the requests ahead
  in reverse queue order; then the connected assets, newest request first, those registered
  without a request being the most senior), each fully before the next;
- pro-rata curtails all of them by the same share of their output (so in proportion to output);
- technical best curtails the most sensitive first, each fully before the next;
- the amount is found by bisection on one curtailment level per step (``level`` in
  ``0 .. groups``: group ``k`` curtailed by ``clip(level - k, 0, 1)`` of its output), every
  bisection round being one batch over the violating steps, to 0.1 % of one group's output, the
  feasible end kept. A step still violating with every DER behind the constraint curtailed is
  *unresolved* (the violation is not the flexible DER's): those DER stay fully curtailed there
  and the step is counted in ``unresolved_steps``.

Every result is then checked by an independent power flow (a model built separately with the
DER as ``sym_gen`` rows, Newton-Raphson): the curtailed state of every resolved step must be
within limits (``verified``; ``max_violation`` is the largest excess found, p.u. or loading).

Modelling rule for the DER (the profile each follows over the steps):

- PV: its export capacity times the relative profile of the grid's PV generators at the same node
  (the first one's), else the mean of the grid's PV profiles (columns ``PV*``);
- wind: the same with the grid's wind profiles (columns ``WP*``), else flat;
- battery: flat at its export capacity (the worst case for generation);
- EV charging hubs, heat pump groups and flexible loads: flat at their import capacity (the worst
  case for load; they are never curtailed here, only generation is).

A firm asset is never curtailed; in the curtailment study the request is flexible whatever its
agreement says, and the other flexible DER are curtailed under the principle studied, as if the
constraint ran that one principle. Energies are over the studied steps (the year without
``steps``); percentages are of the DER's energy at full output over the same steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from power_grid_model import CalculationMethod, LoadGenType, PowerGridModel, initialize_array
from power_grid_model.errors import PowerGridError

from opendso.calc.hosting_capacity import NodeHostingCapacity, check_steps, hosting_capacity
from opendso.calc.powerflow import batch_power_flow
from opendso.calc.timeseries import LOADING_COMPONENTS, ViolationLimits
from opendso.der.model import AccessPrinciple, AssetKind, DerAsset, RequestStatus
from opendso.der.registry import DerRegistry
from opendso.errors import InputError
from opendso.grid.model import Grid, ProfileAssignment, Profiles

__all__ = [
    "ConnectionStudy",
    "DerCurtailment",
    "PrincipleOutcome",
    "StudyDer",
    "connection_study",
    "der_injections",
    "flexible_curtailment",
    "grid_with_ders",
    "study_ders",
]

Role = Literal["connected", "ahead", "request"]

#: Kinds that export (follow a generation profile); the others import at a flat profile.
GENERATION_KINDS = frozenset({AssetKind.PV, AssetKind.WIND, AssetKind.BATTERY})
#: A DER is behind a constraint when its sensitivity is at least this share of the largest.
BEHIND_SHARE = 0.01
#: The bisection on the curtailment level stops at this fraction of one group's output.
LEVEL_TOLERANCE = 1e-3
#: Tolerance of the independent check (p.u. of voltage, or loading).
CHECK_TOLERANCE = 1e-6
#: Scenarios per batch call.
BATCH_SCENARIOS = 4096


@dataclass(frozen=True)
class StudyDer:
    """A DER modelled in a study: the asset, its request (None without one), its role and seniority (0 most senior)."""

    asset: DerAsset
    request_id: str | None
    role: Role
    seniority: int

    @property
    def generation(self) -> bool:
        """True when the asset is modelled as generation (export), else as load (import)."""
        return self.asset.kind in GENERATION_KINDS and self.asset.export_kw > 0.0

    def to_dict(self) -> dict[str, Any]:
        """The DER as JSON."""
        a = self.asset
        return {
            "asset_id": a.id,
            "request_id": self.request_id,
            "role": self.role,
            "kind": a.kind.value,
            "node": a.node,
            "export_kw": a.export_kw,
            "import_kw": a.import_kw,
            "agreement": a.agreement.kind.value,
            "seniority": self.seniority,
        }


@dataclass(frozen=True)
class DerCurtailment:
    """Curtailment of one DER over the studied steps: energy at full output and curtailed, MWh and %."""

    asset_id: str
    request_id: str | None
    role: Role
    energy_mwh: float
    curtailed_mwh: float

    @property
    def curtailed_pct(self) -> float:
        """Curtailed energy as % of the energy at full output (0 without energy)."""
        return 100.0 * self.curtailed_mwh / self.energy_mwh if self.energy_mwh > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The curtailment as JSON."""
        return {
            "asset_id": self.asset_id,
            "request_id": self.request_id,
            "role": self.role,
            "energy_mwh": round(self.energy_mwh, 6),
            "curtailed_mwh": round(self.curtailed_mwh, 6),
            "curtailed_pct": round(self.curtailed_pct, 4),
        }


@dataclass(frozen=True)
class PrincipleOutcome:
    """The curtailment under one principle of access, per DER, with the independent check's verdict.

    ``curtailment`` is ``(steps, DER)``: the share of each DER's output curtailed at each step
    (the DER in the study's order), kept for checks and not serialised.
    """

    principle: AccessPrinciple
    request: DerCurtailment
    others: tuple[DerCurtailment, ...]
    curtailed_steps: int
    unresolved_steps: int
    verified: bool
    max_violation: float
    curtailment: npt.NDArray[np.float64] = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The outcome as JSON."""
        return {
            "principle": self.principle.value,
            "request_curtailed_mwh": round(self.request.curtailed_mwh, 6),
            "request_curtailed_pct": round(self.request.curtailed_pct, 4),
            "others_curtailed_mwh": round(sum(o.curtailed_mwh for o in self.others), 6),
            "others": [o.to_dict() for o in self.others],
            "curtailed_steps": self.curtailed_steps,
            "unresolved_steps": self.unresolved_steps,
            "verified": self.verified,
            "max_violation": round(self.max_violation, 9),
        }


@dataclass(frozen=True)
class ConnectionStudy:
    """The study of one connection request: firm capacity now and curtailment per principle of access."""

    grid: str
    request_id: str
    asset_id: str
    node: str
    steps: int
    step_hours: float
    ders: tuple[StudyDer, ...]
    firm: NodeHostingCapacity
    firm_export_kw: float
    firm_import_kw: float
    request_energy_mwh: float
    principles: tuple[PrincipleOutcome, ...]

    def to_dict(self) -> dict[str, Any]:
        """The study as JSON (``opendso der study --json`` and ``GET /api/der/requests/{id}/study``)."""
        return {
            "grid": self.grid,
            "request_id": self.request_id,
            "asset_id": self.asset_id,
            "node": self.node,
            "steps": self.steps,
            "step_hours": self.step_hours,
            "modelled": [d.to_dict() for d in self.ders],
            "firm": {
                **self.firm.to_dict(),
                "export_kw": round(self.firm_export_kw, 3),
                "import_kw": round(self.firm_import_kw, 3),
            },
            "request_energy_mwh": round(self.request_energy_mwh, 6),
            "flexible": [p.to_dict() for p in self.principles],
        }


# -- which DER are modelled ------------------------------------------------------------------------------
def study_ders(registry: DerRegistry, request_id: str) -> list[StudyDer]:
    """The DER a study of ``request_id`` models, most senior first, the request last.

    Connected assets (no request, or a connected one) first: those without a request by id, then
    by the received time of their request; then the queued requests ahead of it in queue order;
    then the request. Unknown request: :class:`~opendso.errors.NotFoundError`; a request no longer
    queued: :class:`~opendso.errors.ConflictError`.
    """
    request, _ = registry.request(request_id)
    ahead = registry.ahead_of(request_id)
    requests = [r for r, _ in registry.requests()]
    connected_at: dict[str, datetime] = {}
    has_request: set[str] = set()
    for r in requests:
        has_request.add(r.asset_id)
        if r.status is RequestStatus.CONNECTED:
            connected_at.setdefault(r.asset_id, r.received_at)
    assets = {a.id: a for a, _ in registry.assets()}
    epoch = datetime.min.replace(tzinfo=UTC)
    connected = sorted(
        (a for a in assets.values() if a.id not in has_request or a.id in connected_at),
        key=lambda a: (connected_at.get(a.id, epoch), a.id),
    )
    by_asset_request = {r.asset_id: r.id for r in requests if r.status is RequestStatus.CONNECTED}
    out = [StudyDer(a, by_asset_request.get(a.id), "connected", k) for k, a in enumerate(connected)]
    out += [StudyDer(e.asset, e.request.id, "ahead", len(out) + k) for k, e in enumerate(ahead)]
    out.append(StudyDer(assets[request.asset_id], request.id, "request", len(out)))
    return out


# -- the DER on the grid ---------------------------------------------------------------------------------
def _profile_shape(grid: Grid, node: str, prefix: str, kind: str) -> npt.NDArray[np.float64] | None:
    """The relative profile of the grid's generators of ``kind`` at ``node``, else the mean of ``prefix*`` columns."""
    profiles = grid.profiles
    assert profiles is not None
    gens = grid.component("sym_gen")
    if gens.size:
        kinds = grid.column("sym_gen", "kind", "")
        rows = np.flatnonzero(grid.names_of("node") == node)
        if rows.size:
            node_id = grid.component("node")["id"][rows[0]]
            at = np.flatnonzero((gens["node"] == node_id) & (kinds == kind))
            for a in profiles.assignments:
                if a.component == "sym_gen" and a.attribute == "p_specified":
                    for g in at:
                        k = np.flatnonzero(a.ids == gens["id"][g])
                        if k.size and a.column[k[0]] >= 0:
                            return np.asarray(profiles.values[:, a.column[k[0]]], dtype=np.float64)
    cols = [i for i, c in enumerate(profiles.columns) if c.upper().startswith(prefix)]
    if cols:
        return np.asarray(profiles.values[:, cols].mean(axis=1), dtype=np.float64)
    return None


def der_injections(grid: Grid, ders: Sequence[StudyDer], steps: int) -> npt.NDArray[np.float64]:
    """Each DER's power at full output over the first ``steps`` steps, ``(steps, DER)`` in W, load positive.

    The modelling rule of the module docstring. A PV asset on a grid without PV profiles raises
    :class:`~opendso.errors.InputError`.
    """
    if grid.profiles is None:
        raise InputError(f"{grid.name}: the grid has no time profiles")
    out = np.zeros((steps, len(ders)))
    for k, d in enumerate(ders):
        a = d.asset
        if not d.generation:
            out[:, k] = a.import_kw * 1e3
            continue
        shape: npt.NDArray[np.float64] | None = None
        if a.kind is AssetKind.PV:
            shape = _profile_shape(grid, a.node, "PV", "pv")
            if shape is None:
                raise InputError(f"{grid.name}: no PV profile to model PV asset {a.id}")
        elif a.kind is AssetKind.WIND:
            shape = _profile_shape(grid, a.node, "WP", "wind")
        profile = np.ones(steps) if shape is None else np.clip(shape[:steps], 0.0, None)
        out[:, k] = -a.export_kw * 1e3 * profile
    return out


def _check_nodes(grid: Grid, ders: Sequence[StudyDer]) -> npt.NDArray[np.int64]:
    rows = {str(n): i for i, n in enumerate(grid.names_of("node").tolist())}
    missing = sorted({d.asset.node for d in ders if d.asset.node not in rows})
    if missing:
        raise InputError(f"{grid.name}: connection point(s) not in the grid: {', '.join(missing)}")
    ids = grid.component("node")["id"].astype(np.int64)
    return np.array([ids[rows[d.asset.node]] for d in ders], dtype=np.int64)


def _der_rows(grid: Grid, ders: Sequence[StudyDer], first_id: int) -> np.ndarray:
    rows = initialize_array("input", "sym_load", len(ders))
    rows["id"] = np.arange(first_id, first_id + len(ders))
    rows["node"] = _check_nodes(grid, ders)
    rows["status"] = 1
    rows["type"] = LoadGenType.const_power
    rows["p_specified"] = 0.0
    rows["q_specified"] = 0.0
    return rows


def grid_with_ders(grid: Grid, ders: Sequence[StudyDer], steps: int) -> Grid:
    """The grid with each DER as a constant-power ``sym_load`` at its node following its profile (full output).

    Every profile assignment of ``sym_load`` is extended to the new rows (``p_specified`` from one
    new profile column per DER holding its power in W; other attributes 0), so the grid's batch
    updates, and so :func:`~opendso.calc.hosting_capacity.hosting_capacity`, carry them.
    """
    if grid.profiles is None or not ders:
        return grid
    profiles = grid.profiles
    n_steps = check_steps(grid, steps)
    p = der_injections(grid, ders, n_steps)
    rows = _der_rows(grid, ders, grid.max_id + 1)
    n = len(ders)
    values = np.zeros((profiles.steps, n))
    values[:n_steps] = p
    first_col = profiles.values.shape[1]
    all_values = np.ascontiguousarray(np.concatenate([profiles.values, values], axis=1))
    new_cols = np.arange(first_col, first_col + n, dtype=np.int64)
    assignments: list[ProfileAssignment] = []
    covered = False
    for a in profiles.assignments:
        if a.component != "sym_load":
            assignments.append(a)
            continue
        covered = covered or a.attribute == "p_specified"
        is_p = a.attribute == "p_specified"
        assignments.append(
            ProfileAssignment(
                a.component,
                a.attribute,
                np.concatenate([a.ids, rows["id"].astype(a.ids.dtype)]),
                np.concatenate([a.column, new_cols if is_p else np.full(n, -1, dtype=np.int64)]),
                np.concatenate([a.scale, np.ones(n) if is_p else np.zeros(n)]),
            )
        )
    if not covered:
        loads = grid.component("sym_load")
        keep = ProfileAssignment(
            "sym_load", "p_specified", loads["id"], np.full(loads.size, -1, dtype=np.int64), loads["p_specified"] * 1.0
        )
        others = [a for a in assignments if a.component == "sym_load"]
        if others:  # another attribute covers the grid's loads: cover the same rows
            raise InputError(f"{grid.name}: sym_load profiles without p_specified are not supported")
        assignments.append(
            ProfileAssignment(
                "sym_load",
                "p_specified",
                np.concatenate([keep.ids, rows["id"].astype(keep.ids.dtype)]),
                np.concatenate([keep.column, new_cols]),
                np.concatenate([keep.scale, np.ones(n)]),
            )
        )
    names = dict(grid.names)
    names["sym_load"] = np.concatenate(
        [grid.names_of("sym_load"), np.array([f"der:{d.asset.id}" for d in ders], dtype=object)]
    )
    extra = {c: dict(cols) for c, cols in grid.extra.items()}
    if "sym_load" in extra:
        for key, column in extra["sym_load"].items():
            fill: Any = "der" if column.dtype == object else (True if column.dtype == bool else 0)
            extra["sym_load"][key] = np.concatenate([column, np.full(n, fill, dtype=column.dtype)])
    loads = grid.component("sym_load")
    return replace(
        grid.with_input(sym_load=np.concatenate([loads, rows])),
        names=names,
        extra=extra,
        profiles=Profiles(
            profiles.time, all_values, (*profiles.columns, *(f"der:{d.asset.id}" for d in ders)), tuple(assignments)
        ),
    )


# -- batch power flows with the DER at given powers ----------------------------------------------------
class _Flows:
    """The grid with one ``sym_load`` per DER; batch power flows over (step, DER powers) scenarios."""

    def __init__(self, grid: Grid, ders: Sequence[StudyDer], limits: ViolationLimits) -> None:
        assert grid.profiles is not None
        self.grid = grid
        self.profiles = grid.profiles
        self.limits = limits
        data = grid.pgm_input()
        rows = _der_rows(grid, ders, grid.max_id + 1)
        self.der_ids = rows["id"].astype(np.int32)
        base = data.get("sym_load", initialize_array("input", "sym_load", 0))
        data["sym_load"] = np.concatenate([base, rows])
        self.model = PowerGridModel(data, system_frequency=grid.frequency_hz)
        self.branches = [c for c in LOADING_COMPONENTS if grid.count(c)]
        self.wanted: dict[str, Any] = {"node": ["u_pu", "energized"]}
        self.wanted.update({c: ["loading"] for c in self.branches})

    def run(
        self, steps: npt.NDArray[np.int64], der_p: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
        """Solve one scenario per (step, row of ``der_p``): voltages, energised flags, branch loadings."""
        m = steps.size
        n_nodes = self.grid.count("node")
        n_br = sum(self.grid.count(c) for c in self.branches)
        u = np.full((m, n_nodes), np.nan)
        live = np.zeros((m, n_nodes), dtype=bool)
        loading = np.full((m, n_br), np.nan)
        for start in range(0, m, BATCH_SCENARIOS):
            sl = slice(start, min(start + BATCH_SCENARIOS, m))
            out = self._solve(steps[sl], der_p[sl])
            u[sl] = out["node"]["u_pu"]
            live[sl] = out["node"]["energized"].astype(bool)
            if self.branches:
                loading[sl] = np.concatenate([out[c]["loading"] for c in self.branches], axis=1)
        return u, live, loading

    def _solve(self, steps: npt.NDArray[np.int64], der_p: npt.NDArray[np.float64]) -> dict[str, Any]:
        m = steps.size
        values = self.profiles.values[steps]
        batch: dict[str, dict[str, np.ndarray]] = {}
        for a in self.profiles.assignments:
            columns = batch.setdefault(a.component, {})
            columns.setdefault("id", np.broadcast_to(a.ids, (m, a.ids.size)))
            columns[a.attribute] = a.evaluate(values)
        ids = np.broadcast_to(self.der_ids, der_p.shape)
        loads = batch.get("sym_load")
        if loads is None:
            batch["sym_load"] = {"id": ids, "p_specified": der_p}
        else:
            width = loads["id"].shape[1]
            loads["id"] = np.concatenate([loads["id"], ids], axis=1)
            loads["p_specified"] = np.concatenate(
                [loads.get("p_specified", np.full((m, width), np.nan)), der_p], axis=1
            )
            if "q_specified" in loads:
                loads["q_specified"] = np.concatenate([loads["q_specified"], np.zeros_like(der_p)], axis=1)
        for columns in batch.values():
            for key in list(columns):
                columns[key] = np.ascontiguousarray(columns[key])
        result, failed = batch_power_flow(
            self.model, batch, output=self.wanted, what=f"{self.grid.name}: connection study", tolerate_failures=True
        )
        if failed.size:  # no solution: voltage collapse
            result["node"]["u_pu"][failed] = np.inf
            result["node"]["energized"][failed] = 1
        return result

    def severity(
        self, u: npt.NDArray[np.float64], live: npt.NDArray[np.bool_], loading: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """The worst excess per scenario (> 0 violates): voltage beyond the band (p.u.) or loading beyond the limit."""
        lim = self.limits
        with np.errstate(invalid="ignore"):
            ex_u = np.where(live, np.maximum(lim.u_min_pu - u, u - lim.u_max_pu), -np.inf)
        sev = ex_u.max(axis=1) if ex_u.shape[1] else np.full(u.shape[0], -np.inf)
        if loading.shape[1]:
            sev = np.maximum(sev, np.nan_to_num(loading, nan=-np.inf).max(axis=1) - lim.loading_max)
        return np.asarray(sev, dtype=np.float64)


def _step_hours(grid: Grid) -> float:
    profiles = grid.profiles
    if profiles is None or profiles.time.size < 2:
        return 0.25
    diff = np.diff(profiles.time.astype("datetime64[s]").astype(np.int64))
    return float(np.median(diff)) / 3600.0 if diff.size and np.median(diff) > 0 else 0.25


def flexible_curtailment(
    grid: Grid,
    ders: Sequence[StudyDer],
    principle: AccessPrinciple,
    *,
    steps: int | None = None,
    limits: ViolationLimits | None = None,
) -> PrincipleOutcome:
    """Simulate the steps with every DER at full output, curtailing flexible DER under ``principle``.

    The last DER of ``ders`` is the request (flexible at its full export); the others are
    flexible when their agreement says so. See the module docstring for the method.
    """
    limits = limits or ViolationLimits()
    n_steps = check_steps(grid, steps)
    full = der_injections(grid, ders, n_steps)
    n = len(ders)
    flexible = np.array(
        [d.generation and (d.role == "request" or d.asset.agreement.flexible) for d in ders], dtype=bool
    )
    flows = _Flows(grid, ders, limits)
    all_steps = np.arange(n_steps, dtype=np.int64)
    u, live, loading = flows.run(all_steps, full)
    sev = flows.severity(u, live, loading)
    curtail = np.zeros((n_steps, n))
    viol = np.flatnonzero(sev > 0)
    flex = np.flatnonzero(flexible)
    unresolved = np.zeros(n_steps, dtype=bool)
    if viol.size and flex.size:
        relief = _sensitivities(flows, limits, viol, full, flex, u, live, loading)
        behind = (relief > 0) & (relief >= BEHIND_SHARE * relief.max(axis=1, keepdims=True))
        seniority = np.array([ders[int(i)].seniority for i in flex])
        group = np.full((viol.size, flex.size), -1.0)  # the group index of each DER behind, per step
        for j in range(viol.size):
            members = np.flatnonzero(behind[j])
            if principle is AccessPrinciple.PRO_RATA:
                group[j, members] = 0
                continue
            if principle is AccessPrinciple.LIFO:
                order = members[np.argsort(-seniority[members], kind="stable")]
            else:
                order = members[np.lexsort((-seniority[members], -relief[j, members]))]
            group[j, order] = np.arange(order.size)
        groups = (group.max(axis=1) + 1).astype(np.float64)

        def shares(level: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            c = np.clip(level[:, None] - group, 0.0, 1.0)
            return np.where(group >= 0, c, 0.0)

        def judge(level: npt.NDArray[np.float64], rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
            p = full[viol[rows]].copy()
            p[:, flex] *= 1.0 - shares(level)[rows]
            return flows.severity(*flows.run(viol[rows], p)) <= 0

        everything = np.arange(viol.size, dtype=np.int64)
        can = groups > 0
        can[can] = judge(groups, everything)[can]
        lo = np.zeros(viol.size)
        hi = groups.copy()
        open_ = np.flatnonzero(can)
        while open_.size:
            mid = 0.5 * (lo[open_] + hi[open_])
            level = hi.copy()
            level[open_] = mid
            ok = judge(level, open_)
            hi[open_[ok]] = mid[ok]
            lo[open_[~ok]] = mid[~ok]
            open_ = open_[(hi[open_] - lo[open_]) > LEVEL_TOLERANCE]
        unresolved[viol[~can]] = True
        curtail[np.ix_(viol, flex)] = shares(hi)
    hours = _step_hours(grid)
    energy = -np.minimum(full, 0.0).sum(axis=0) * hours / 1e6
    curtailed = (curtail * -np.minimum(full, 0.0)).sum(axis=0) * hours / 1e6
    verified, worst = _independent_check(grid, ders, full * (1.0 - curtail), limits, ~unresolved)
    records = [
        DerCurtailment(d.asset.id, d.request_id, d.role, float(energy[k]), float(curtailed[k]))
        for k, d in enumerate(ders)
    ]
    return PrincipleOutcome(
        principle=principle,
        request=records[-1],
        others=tuple(records[:-1]),
        curtailed_steps=int((curtail.max(axis=1) > 0).sum()) if n else 0,
        unresolved_steps=int(unresolved.sum()),
        verified=verified,
        max_violation=worst,
        curtailment=curtail,
    )


def _sensitivities(
    flows: _Flows,
    limits: ViolationLimits,
    viol: npt.NDArray[np.int64],
    full: npt.NDArray[np.float64],
    flex: npt.NDArray[np.int64],
    u: npt.NDArray[np.float64],
    live: npt.NDArray[np.bool_],
    loading: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Relief of each violating step's worst constraint per W curtailed, per flexible DER (finite differences)."""
    v, f = viol.size, flex.size
    uv, lv, ldv = u[viol], live[viol], loading[viol]
    with np.errstate(invalid="ignore"):
        ex_u = np.where(lv, np.maximum(limits.u_min_pu - uv, uv - limits.u_max_pu), -np.inf)
    node = ex_u.argmax(axis=1)
    sev_u = ex_u[np.arange(v), node]
    over = uv[np.arange(v), node] > limits.u_max_pu
    if ldv.shape[1]:
        branch = np.nan_to_num(ldv, nan=-np.inf).argmax(axis=1)
        sev_l = ldv[np.arange(v), branch] - limits.loading_max
    else:
        branch = np.zeros(v, dtype=np.int64)
        sev_l = np.full(v, -np.inf)
    thermal = sev_l > sev_u
    delta = np.maximum(0.05 * np.abs(full[:, flex]).max(axis=0), 100.0)  # W
    p = np.repeat(full[viol], f, axis=0)
    rows = np.arange(v * f)
    cols = np.tile(flex, v)
    p[rows, cols] += np.tile(delta, v)  # less generation
    u2, _, ld2 = flows.run(np.repeat(viol, f), p)
    u2 = u2.reshape(v, f, -1)
    ld2 = ld2.reshape(v, f, -1)
    q_u = u2[np.arange(v), :, node]  # (v, f)
    base_u = uv[np.arange(v), node][:, None]
    relief_u = np.where(over[:, None], base_u - q_u, q_u - base_u)
    relief_l = np.zeros((v, f))
    if ldv.shape[1]:
        relief_l = ldv[np.arange(v), branch][:, None] - ld2[np.arange(v), :, branch]
    relief = np.where(thermal[:, None], relief_l, relief_u) / delta[None, :]
    return np.asarray(np.nan_to_num(relief, nan=0.0, posinf=0.0, neginf=0.0), dtype=np.float64)


def _independent_check(
    grid: Grid,
    ders: Sequence[StudyDer],
    p: npt.NDArray[np.float64],
    limits: ViolationLimits,
    judged: npt.NDArray[np.bool_],
) -> tuple[bool, float]:
    """Solve the curtailed state in a model built apart (DER as sym_gen / sym_load); worst excess of judged steps."""
    assert grid.profiles is not None
    data = {c: a.copy() for c, a in grid.pgm_input().items()}
    gen = np.array([d.generation for d in ders], dtype=bool)
    nodes = _check_nodes(grid, ders)
    first = grid.max_id + 1
    gens = initialize_array("input", "sym_gen", int(gen.sum()))
    gens["id"] = np.arange(first, first + gens.size)
    gens["node"] = nodes[gen]
    gens["status"] = 1
    gens["type"] = LoadGenType.const_power
    gens["p_specified"] = 0.0
    gens["q_specified"] = 0.0
    loads = initialize_array("input", "sym_load", int((~gen).sum()))
    loads["id"] = np.arange(first + gens.size, first + gens.size + loads.size)
    loads["node"] = nodes[~gen]
    loads["status"] = 1
    loads["type"] = LoadGenType.const_power
    loads["p_specified"] = 0.0
    loads["q_specified"] = 0.0
    for name, rows in (("sym_gen", gens), ("sym_load", loads)):
        if rows.size:
            data[name] = np.concatenate([data[name], rows]) if name in data else rows
    model = PowerGridModel(data, system_frequency=grid.frequency_hz)
    worst = -np.inf
    steps = np.flatnonzero(judged)
    profiles = grid.profiles
    for start in range(0, steps.size, BATCH_SCENARIOS):
        chunk = steps[start : start + BATCH_SCENARIOS]
        update: dict[str, Any] = {}
        for a in profiles.assignments:
            array = update.setdefault(a.component, initialize_array("update", a.component, (chunk.size, a.ids.size)))
            array["id"] = a.ids
            array[a.attribute] = a.evaluate(profiles.values[chunk])
        for name, rows, values in (("sym_gen", gens, -p[chunk][:, gen]), ("sym_load", loads, p[chunk][:, ~gen])):
            if not rows.size:
                continue
            extra = initialize_array("update", name, (chunk.size, rows.size))
            extra["id"] = rows["id"]
            extra["p_specified"] = values
            extra["q_specified"] = 0.0
            update[name] = np.concatenate([update[name], extra], axis=1) if name in update else extra
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out: dict[str, Any] = model.calculate_power_flow(  # type: ignore[assignment]
                    calculation_method=CalculationMethod.newton_raphson,
                    update_data=update,
                    error_tolerance=1e-10,
                    max_iterations=50,
                )
        except PowerGridError:
            return False, float("inf")
        node = out["node"]
        live = node["energized"] == 1
        with np.errstate(invalid="ignore"):
            ex = np.where(live, np.maximum(limits.u_min_pu - node["u_pu"], node["u_pu"] - limits.u_max_pu), -np.inf)
        worst = max(worst, float(ex.max()))
        for c in LOADING_COMPONENTS:
            if c in out and out[c].size:
                worst = max(worst, float(np.nanmax(out[c]["loading"])) - limits.loading_max)
    worst = max(worst, 0.0) if np.isfinite(worst) else 0.0
    return worst <= CHECK_TOLERANCE, worst


# -- the study ---------------------------------------------------------------------------------------------
def connection_study(
    registry: DerRegistry,
    request_id: str,
    *,
    steps: int | None = None,
    limits: ViolationLimits | None = None,
    principles: Sequence[AccessPrinciple] = tuple(AccessPrinciple),
) -> ConnectionStudy:
    """Study one connection request on the registry's grid: firm capacity now and curtailment per principle.

    Unknown request: :class:`~opendso.errors.NotFoundError`; a request not queued:
    :class:`~opendso.errors.ConflictError`; no grid, a grid without profiles, a connection point
    that is a source node: :class:`~opendso.errors.InputError`.
    """
    grid = registry.grid
    if grid is None:
        raise InputError("the registry has no grid: a connection study needs one")
    limits = limits or ViolationLimits()
    ders = study_ders(registry, request_id)
    n_steps = check_steps(grid, steps)
    request = ders[-1]
    existing = ders[:-1]
    firm_grid = grid_with_ders(grid, existing, n_steps)
    firm = hosting_capacity(firm_grid, nodes=[request.asset.node], steps=n_steps, limits=limits).nodes[0]
    outcomes = tuple(flexible_curtailment(grid, ders, p, steps=n_steps, limits=limits) for p in principles)
    full = der_injections(grid, [request], n_steps)
    energy = float(-np.minimum(full, 0.0).sum() * _step_hours(grid) / 1e6)
    return ConnectionStudy(
        grid=grid.name,
        request_id=request_id,
        asset_id=request.asset.id,
        node=request.asset.node,
        steps=n_steps,
        step_hours=_step_hours(grid),
        ders=tuple(ders),
        firm=firm,
        firm_export_kw=min(request.asset.export_kw, firm.generation_mw * 1e3),
        firm_import_kw=min(request.asset.import_kw, firm.load_mw * 1e3),
        request_energy_mwh=energy,
        principles=outcomes,
    )
