"""Injection sensitivities: how every branch loading and node voltage moves per W of extra consumption at a node.

:func:`injection_sensitivities` answers, around one or more states of the grid, how much each
branch's loading (a fraction of its rating, as power-grid-model reports it: current-based for
lines, power-based for transformers) and each node's voltage (p.u.) change when the consumption
at one node rises by 1 W. The sign convention is UFTP's (:mod:`opendso.markets.model`): power is
consumption, so a positive figure means "more consumption here raises this value"; a flexibility
option of ``-200_000`` W (less consumption) at the node moves the value by ``-200_000`` times it.

Method: finite differences in one batch power flow of power-grid-model (Newton-Raphson), the way
:mod:`opendso.der.anm_sensitivity` does it for generators. A zero constant-power probe load is
added at every node asked (:func:`opendso.calc.powerflow.with_probe_loads`); per state the batch
holds the base scenario and one scenario per node with its probe at ``delta_w``. The states are
the grid's input (one state) or the scenarios of a batch ``update`` in power-grid-model's update
layout (one state per scenario, e.g. one per interval of a day); every state and probe goes into
one batch call, split into several calls only when the output would exceed
:data:`MAX_BATCH_VALUES` numbers. The result is the one-sided difference quotient
``(value(probe) - value(base)) / delta_w``: for the small ``delta_w`` used (1 kW by default) it
agrees with pandapower's finite differences on the same grid to a relative 1e-3 (tested).

Branch order: every ``line`` in the grid's order, then every ``transformer`` (``line:NAME``,
``transformer:NAME``), the order of :func:`opendso.der.anm_sensitivity.branch_names`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from power_grid_model import DatasetType, PowerGridModel, power_grid_meta_data

from opendso.calc.powerflow import batch_power_flow, with_probe_loads
from opendso.errors import InputError
from opendso.grid.model import Grid

__all__ = ["BRANCH_COMPONENTS", "MAX_BATCH_VALUES", "InjectionSensitivities", "injection_sensitivities"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: The branches reported, in this order, each named ``<component>:<name>``.
BRANCH_COMPONENTS = ("line", "transformer")

#: The largest number of output values (scenarios x (nodes + branches)) one batch call produces.
MAX_BATCH_VALUES = 40_000_000


@dataclass(frozen=True)
class InjectionSensitivities:
    """Change of every branch loading and node voltage per W of extra consumption, per state and probed node.

    ``loading[s, k, b]``: change of branch ``branches[b]``'s loading (fraction of its rating) in
    state ``s`` per W more consumption at ``nodes[k]``; ``u_pu[s, k, n]``: change of node
    ``node_names[n]``'s voltage (p.u.). ``base_loading[s]`` and ``base_u_pu[s]`` are the state's own
    figures. ``delta_w`` is the probe size used.
    """

    nodes: tuple[str, ...]
    branches: tuple[str, ...]
    node_names: tuple[str, ...]
    loading: FloatArray
    u_pu: FloatArray
    base_loading: FloatArray
    base_u_pu: FloatArray
    delta_w: float

    @property
    def states(self) -> int:
        """Number of states (1 for the grid's input, else the scenarios of the update)."""
        return int(self.loading.shape[0])

    @property
    def elements(self) -> tuple[str, ...]:
        """Every element with a figure: the branches, then ``node:NAME`` for every node."""
        return self.branches + tuple(f"node:{n}" for n in self.node_names)

    def of(self, element: str) -> FloatArray:
        """``(states, nodes)``: change of ``element`` (``line:``, ``transformer:``, ``node:NAME``) per W at a node."""
        return self._pick(element, self.loading, self.u_pu)

    def base(self, element: str) -> FloatArray:
        """``(states,)``: the element's loading or voltage in each state."""
        return self._pick(element, self.base_loading[:, None, :], self.base_u_pu[:, None, :])[:, 0]

    def _pick(self, element: str, loading: FloatArray, u_pu: FloatArray) -> FloatArray:
        index = self._index()
        where = index.get(element)
        if where is None:
            raise InputError(
                f"sensitivities: no element {element!r} (expected line:NAME, transformer:NAME or node:NAME)"
            )
        is_node, col = where
        return np.asarray((u_pu if is_node else loading)[:, :, col], dtype=np.float64)

    def _index(self) -> dict[str, tuple[bool, int]]:
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {b: (False, k) for k, b in enumerate(self.branches)}
            cached.update({f"node:{n}": (True, k) for k, n in enumerate(self.node_names)})
            object.__setattr__(self, "_index_cache", cached)
        return cast(dict[str, tuple[bool, int]], cached)


def injection_sensitivities(
    grid: Grid,
    nodes: Sequence[str],
    *,
    update: Mapping[str, Any] | None = None,
    delta_w: float = 1000.0,
) -> InjectionSensitivities:
    """Sensitivities of every branch loading and node voltage to more consumption at each of ``nodes`` (module doc).

    ``nodes``: node names of ``grid`` (unknown or repeated ones raise
    :class:`~opendso.errors.InputError`). ``update``: a power-grid-model batch update (component ->
    structured array ``(scenarios, elements)`` or dict of such columns); each scenario is one state.
    Without it the one state is the grid's input. A power flow that fails raises
    :class:`~opendso.errors.CalculationError` naming the grid.
    """
    if isinstance(delta_w, bool) or not isinstance(delta_w, int | float) or not np.isfinite(delta_w) or delta_w <= 0:
        raise InputError(f"injection sensitivities: delta_w must be a number > 0, got {delta_w!r}")
    node_names = [str(n) for n in grid.names_of("node").tolist()]
    row_of = {n: k for k, n in enumerate(node_names)}
    unknown = [n for n in nodes if n not in row_of]
    if unknown:
        shown = ", ".join(map(repr, unknown[:5]))
        raise InputError(f"injection sensitivities: no node {shown} in grid {grid.name}")
    if len(set(nodes)) != len(nodes):
        raise InputError(f"injection sensitivities: a node is listed twice in {grid.name}")
    if not nodes:
        raise InputError(f"injection sensitivities: no nodes given for grid {grid.name}")
    node_ids = grid.component("node")["id"][[row_of[n] for n in nodes]]
    data, probe_ids = with_probe_loads(grid, np.asarray(node_ids))
    states = _columnar(update, grid)
    n_states = _n_states(states, grid.name)
    k = len(nodes)
    branches = [c for c in BRANCH_COMPONENTS if grid.count(c)]
    n_out = len(node_names) + sum(grid.count(c) for c in branches)
    per_chunk = max(1, MAX_BATCH_VALUES // max(1, (k + 1) * n_out))
    model = PowerGridModel(data, system_frequency=grid.frequency_hz)
    loading_parts: list[FloatArray] = []
    u_parts: list[FloatArray] = []
    for start in range(0, n_states, per_chunk):
        stop = min(n_states, start + per_chunk)
        batch = _batch(states, start, stop, data, probe_ids, delta_w)
        out = _solve(model, batch, branches, grid.name)
        u = np.asarray(out["node"]["u_pu"], dtype=np.float64).reshape(stop - start, k + 1, -1)
        if branches:
            ld = np.concatenate([np.asarray(out[c]["loading"], dtype=np.float64) for c in branches], axis=1)
        else:
            ld = np.zeros((u.shape[0] * u.shape[1], 0))
        loading_parts.append(ld.reshape(stop - start, k + 1, -1))
        u_parts.append(u)
    loading = np.concatenate(loading_parts, axis=0)
    u_all = np.concatenate(u_parts, axis=0)
    log.debug("event=injection_sensitivities grid=%s nodes=%d states=%d", grid.name, k, n_states)
    branch_names = tuple(f"{c}:{n}" for c in branches for n in grid.names_of(c).tolist())
    return InjectionSensitivities(
        nodes=tuple(nodes),
        branches=branch_names,
        node_names=tuple(node_names),
        loading=(loading[:, 1:, :] - loading[:, :1, :]) / delta_w,
        u_pu=(u_all[:, 1:, :] - u_all[:, :1, :]) / delta_w,
        base_loading=loading[:, 0, :],
        base_u_pu=u_all[:, 0, :],
        delta_w=float(delta_w),
    )


def _columnar(update: Mapping[str, Any] | None, grid: Grid) -> dict[str, dict[str, Any]]:
    """The update as component -> column -> ``(states, elements)`` array, ids explicit."""
    if not update:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for component, value in update.items():
        own = grid.component(component) if component in grid.input else None
        if own is None or not own.size:
            raise InputError(f"injection sensitivities: update names component {component!r}, not in grid {grid.name}")
        if isinstance(value, np.ndarray) and value.dtype.names:
            columns = {name: value[name] for name in value.dtype.names}
        elif isinstance(value, Mapping):
            columns = {str(name): np.asarray(col) for name, col in value.items()}
        else:
            raise InputError(f"injection sensitivities: update of {component} is not a structured array or columns")
        updatable = power_grid_meta_data[DatasetType.update][component].dtype.names or ()
        for name, col in columns.items():
            if name not in updatable:
                raise InputError(
                    f"injection sensitivities: update {component}.{name} is not an attribute that can be updated"
                )
            if np.ndim(col) != 2:
                raise InputError(
                    f"injection sensitivities: update {component}.{name} must be (scenarios, elements), "
                    f"got shape {np.shape(col)}"
                )
        if "id" not in columns:
            if {np.shape(c)[1] for c in columns.values()} != {int(own.size)}:
                raise InputError(
                    f"injection sensitivities: update of {component} has no ids and does not cover every element"
                )
            rows = next(iter(columns.values())).shape[0]
            columns["id"] = np.broadcast_to(own["id"], (rows, own.size))
        out[component] = columns
    return out


def _n_states(states: Mapping[str, Mapping[str, Any]], grid: str) -> int:
    rows = {np.shape(col)[0] for columns in states.values() for col in columns.values()}
    if not rows:
        return 1
    if len(rows) != 1:
        raise InputError(f"injection sensitivities: update components of {grid} have different numbers of scenarios")
    n = rows.pop()
    if n < 1:
        raise InputError(f"injection sensitivities: update of {grid} has no scenario")
    return int(n)


def _batch(
    states: Mapping[str, Mapping[str, Any]],
    start: int,
    stop: int,
    data: Mapping[str, np.ndarray],
    probe_ids: np.ndarray,
    delta_w: float,
) -> dict[str, dict[str, np.ndarray]]:
    """Scenarios ``state x (base, probe 1..K)`` for states ``start:stop`` as a columnar batch update."""
    k = probe_ids.size
    n = stop - start
    rows = n * (k + 1)
    batch: dict[str, dict[str, np.ndarray]] = {}
    for component, columns in states.items():
        batch[component] = {
            name: np.repeat(np.asarray(col)[start:stop], k + 1, axis=0) for name, col in columns.items()
        }
    probe_p = np.zeros((n, k + 1, k))
    probe_p[:, np.arange(1, k + 1), np.arange(k)] = delta_w
    probe_cols: dict[str, np.ndarray] = {
        "id": np.ascontiguousarray(np.broadcast_to(probe_ids, (rows, k))),
        "p_specified": probe_p.reshape(rows, k),
    }
    loads = batch.get("sym_load")
    if loads is None:
        batch["sym_load"] = probe_cols
        return batch
    probe_input = data["sym_load"][-k:]
    merged: dict[str, np.ndarray] = {}
    for name, col in loads.items():
        extra = probe_cols.get(name)
        if extra is None:
            extra = np.broadcast_to(probe_input[name], (rows, k))
        merged[name] = np.ascontiguousarray(np.concatenate([col, extra.astype(col.dtype)], axis=1))
    if "p_specified" not in merged:
        own = loads["id"].shape[1]
        merged["p_specified"] = np.concatenate([np.full((rows, own), np.nan), probe_cols["p_specified"]], axis=1)
    batch["sym_load"] = merged
    return batch


def _solve(model: PowerGridModel, batch: dict[str, Any], branches: Sequence[str], grid: str) -> dict[str, Any]:
    wanted: dict[str, Any] = {"node": ["u_pu"]}
    wanted.update({c: ["loading"] for c in branches})
    out, _ = batch_power_flow(
        model, batch, output=wanted, what=f"{grid}: injection sensitivities", error_tolerance=1e-9
    )
    return out
