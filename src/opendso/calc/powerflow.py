"""Power flow on a :class:`~opendso.grid.model.Grid` through power-grid-model.

Balanced (symmetric) and unbalanced (three-phase) power flow, Newton-Raphson by default,
iterative current and linear selectable. Non-convergence is never silent: the result says
whether it converged and why not, and an optional linear fallback is marked as such.

Transformer loading is power-based (apparent power over rated power, at the worse end), as
power-grid-model computes it; pandapower's equivalent is ``trafo_loading="power"``.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from power_grid_model import CalculationMethod, LoadGenType, PowerGridModel, initialize_array
from power_grid_model.errors import PowerGridError

from opendso.errors import CalculationError
from opendso.grid.model import Grid

#: Branch-like components reported in results, with the kind reported for each.
RESULT_BRANCHES: tuple[str, ...] = (
    "line",
    "asym_line",
    "generic_branch",
    "link",
    "transformer",
    "three_winding_transformer",
)


class PowerFlowMethod(enum.StrEnum):
    """Power-flow methods (names as on the command line)."""

    NEWTON_RAPHSON = "newton_raphson"
    ITERATIVE_CURRENT = "iterative_current"
    LINEAR = "linear"
    LINEAR_CURRENT = "linear_current"

    @property
    def pgm(self) -> CalculationMethod:
        """The power-grid-model calculation method."""
        return CalculationMethod[self.value]


@dataclass(frozen=True)
class PowerFlowResult:
    """The outcome of one power flow: converged or not (with the reason), and the raw output arrays."""

    grid: Grid
    converged: bool
    method: PowerFlowMethod
    symmetric: bool
    output: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    fallback: bool = False

    def node_u_pu(self) -> np.ndarray:
        """Per-unit voltage magnitude per node (phase-wise (n, 3) when unbalanced)."""
        return self.output["node"]["u_pu"]

    def to_dict(self) -> dict[str, Any]:
        """Return the result in the JSON layout of ``opendso powerflow --json``."""
        out: dict[str, Any] = {
            "grid": self.grid.name,
            "converged": self.converged,
            "method": self.method.value,
            "symmetric": self.symmetric,
            "fallback": self.fallback,
            "error": self.error,
            "loading_basis": {"line": "current", "transformer": "power"},
            "nodes": [],
            "branches": [],
        }
        if not self.converged and not self.output:
            return out
        node = self.output["node"]
        names = self.grid.names_of("node")
        u_rated = self.grid.component("node")["u_rated"]
        if self.symmetric:
            out["nodes"] = [
                {
                    "name": str(n),
                    "u_pu": float(u),
                    "u_angle_deg": float(a),
                    "u_kv": float(v) / 1e3,
                    "energized": bool(e),
                    "p_mw": float(p) / 1e6,
                    "q_mvar": float(q) / 1e6,
                }
                for n, u, a, v, e, p, q in zip(
                    names,
                    node["u_pu"],
                    np.rad2deg(node["u_angle"]),
                    node["u"],
                    node["energized"],
                    node["p"],
                    node["q"],
                    strict=True,
                )
            ]
        else:
            u_pu = node["u_pu"]
            ang = np.rad2deg(node["u_angle"])
            out["nodes"] = [
                {
                    "name": str(n),
                    "u_pu": float(u.mean()),
                    "u_angle_deg": float(a[0]),
                    "u_pu_abc": [float(x) for x in u],
                    "u_angle_deg_abc": [float(x) for x in a],
                    "u_kv_ln": [float(x) * ur / np.sqrt(3) / 1e3 for x in u],
                    "energized": bool(e),
                }
                for n, u, a, e, ur in zip(names, u_pu, ang, node["energized"], u_rated, strict=True)
            ]
        out["branches"] = branch_records(self.grid, self.output, symmetric=self.symmetric)
        return out


def batch_power_flow(
    model: PowerGridModel,
    update: Mapping[str, Any],
    *,
    output: Mapping[str, Any],
    what: str,
    method: CalculationMethod = CalculationMethod.newton_raphson,
    threading: int = 0,
    error_tolerance: float = 1e-8,
    max_iterations: int = 30,
    tolerate_failures: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """One symmetric batch power flow of ``model`` over ``update``: (output, failed scenario rows).

    ``output`` names the components and attributes wanted (power-grid-model's
    ``output_component_types``). With ``tolerate_failures`` a scenario that does not converge is
    listed in the failed rows (sorted, int64) and the others are solved; without it any failure,
    like every other power-grid-model error, raises :class:`~opendso.errors.CalculationError`
    naming ``what``. power-grid-model's warnings are silenced (the caller reports what failed).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model.calculate_power_flow(
                symmetric=True,
                calculation_method=method,
                update_data=cast(Any, update),
                threading=threading,
                error_tolerance=error_tolerance,
                max_iterations=max_iterations,
                output_component_types=cast(Any, output),
                continue_on_batch_error=tolerate_failures,
            )
    except PowerGridError as exc:
        raise CalculationError(f"{what}: {type(exc).__name__}: {exc}") from exc
    error = model.batch_error if tolerate_failures else None
    failed = np.zeros(0, dtype=np.int64) if error is None else np.array(sorted(error.failed_scenarios), dtype=np.int64)
    return cast(dict[str, Any], out), failed


def with_probe_loads(grid: Grid, node_ids: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The grid's power-grid-model input plus one zero constant-power ``sym_load`` per node of ``node_ids``.

    Returns the input data and the probe loads' ids (int32, after ``grid.max_id``), in the order
    of ``node_ids``: a batch update of their ``p_specified`` adds load (or, negative, generation)
    at those nodes, which is how hosting capacity and sensitivities probe the network.
    """
    data = dict(grid.pgm_input())
    probes = initialize_array("input", "sym_load", node_ids.size)
    probes["id"] = np.arange(grid.max_id + 1, grid.max_id + 1 + node_ids.size)
    probes["node"] = node_ids
    probes["status"] = 1
    probes["type"] = LoadGenType.const_power
    probes["p_specified"] = 0.0
    probes["q_specified"] = 0.0
    base = data.get("sym_load", initialize_array("input", "sym_load", 0))
    data["sym_load"] = np.concatenate([base, probes])
    return data, probes["id"].astype(np.int32)


def branch_records(grid: Grid, output: dict[str, np.ndarray], *, symmetric: bool) -> list[dict[str, Any]]:
    """Return one JSON-ready record per branch: name, kind, loading (fraction) and end flows."""
    records: list[dict[str, Any]] = []
    for component in RESULT_BRANCHES:
        if component not in output or not output[component].size:
            continue
        res = output[component]
        names = grid.names_of(component)
        kinds = grid.extra.get(component, {}).get("kind")
        if kinds is None:
            default = {"link": "switch", "three_winding_transformer": "transformer3w"}.get(component, component)
            kinds = np.full(res.size, default, dtype=object)
        if component == "three_winding_transformer":
            for n, k, r in zip(names, kinds, res, strict=True):
                records.append(
                    {
                        "name": str(n),
                        "kind": str(k),
                        "loading": float(r["loading"]),
                        "energized": bool(r["energized"]),
                        "p_1_mw": float(np.sum(r["p_1"])) / 1e6,
                        "p_2_mw": float(np.sum(r["p_2"])) / 1e6,
                        "p_3_mw": float(np.sum(r["p_3"])) / 1e6,
                    }
                )
            continue
        p_from = res["p_from"] if symmetric else res["p_from"].sum(axis=1)
        q_from = res["q_from"] if symmetric else res["q_from"].sum(axis=1)
        p_to = res["p_to"] if symmetric else res["p_to"].sum(axis=1)
        q_to = res["q_to"] if symmetric else res["q_to"].sum(axis=1)
        i_from = res["i_from"] if symmetric else res["i_from"].max(axis=1)
        i_to = res["i_to"] if symmetric else res["i_to"].max(axis=1)
        loading = res["loading"] if "loading" in (res.dtype.names or ()) else np.full(res.size, np.nan)
        for row in zip(names, kinds, loading, res["energized"], p_from, q_from, p_to, q_to, i_from, i_to, strict=True):
            n, k, ld, e, pf, qf, pt, qt, i_f, i_t = row
            records.append(
                {
                    "name": str(n),
                    "kind": str(k),
                    "loading": float(ld) if np.isfinite(ld) else None,
                    "energized": bool(e),
                    "p_from_mw": float(pf) / 1e6,
                    "q_from_mvar": float(qf) / 1e6,
                    "p_to_mw": float(pt) / 1e6,
                    "q_to_mvar": float(qt) / 1e6,
                    "i_from_a": float(i_f),
                    "i_to_a": float(i_t),
                }
            )
    return records


def run_power_flow(
    grid: Grid,
    *,
    symmetric: bool = True,
    method: PowerFlowMethod | str = PowerFlowMethod.NEWTON_RAPHSON,
    error_tolerance: float = 1e-8,
    max_iterations: int = 30,
    fallback_linear: bool = False,
    output_component_types: list[str] | None = None,
) -> PowerFlowResult:
    """Run one power flow and return its result; never raises for non-convergence.

    With ``fallback_linear``, a power flow that does not converge is re-run with the linear
    method and the result is marked ``fallback=True`` with the original reason in ``error``.
    """
    method = PowerFlowMethod(method)
    model = PowerGridModel(grid.pgm_input(), system_frequency=grid.frequency_hz)
    kwargs: dict[str, Any] = {
        "symmetric": symmetric,
        "error_tolerance": error_tolerance,
        "max_iterations": max_iterations,
    }
    if output_component_types is not None:
        kwargs["output_component_types"] = output_component_types
    try:
        output = model.calculate_power_flow(calculation_method=method.pgm, **kwargs)
    except PowerGridError as exc:
        reason = f"{type(exc).__name__}: {exc}".strip()
        if fallback_linear and method is not PowerFlowMethod.LINEAR:
            output = model.calculate_power_flow(calculation_method=CalculationMethod.linear, **kwargs)
            return PowerFlowResult(
                grid, True, PowerFlowMethod.LINEAR, symmetric, dict(output), error=reason, fallback=True
            )
        return PowerFlowResult(grid, False, method, symmetric, {}, error=reason)
    return PowerFlowResult(grid, True, method, symmetric, dict(output))
