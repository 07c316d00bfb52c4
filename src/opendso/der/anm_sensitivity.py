"""Export sensitivities for active network management: relief of each constraint per W of DER curtailment.

:func:`export_sensitivities` answers, around one state of the grid (the real-time cycle's
estimate), how much each branch loading and each node voltage falls when one DER exports 1 W
less. It uses power-grid-model the way the connection studies
(:mod:`opendso.der.studies`) and the Volt/VAR optimisation (:mod:`opendso.calc.vvo`) do: finite
differences in one batch power flow (Newton-Raphson), one scenario for the base state and one per
DER with its export lowered by ``delta_w``. Loading is as power-grid-model reports it
(power-based for transformers), the same figure the real-time cycle alarms on.

The base state is the grid's input with every generator (``sym_gen``) at its estimated output
and every constant-power load at its estimated consumption, taken from the estimate's output
when it holds them; the switch states are the estimate's grid's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from power_grid_model import LoadGenType, PowerGridModel

from opendso.calc.powerflow import batch_power_flow
from opendso.errors import InputError
from opendso.grid.model import Grid

__all__ = ["BRANCH_COMPONENTS", "Sensitivities", "branch_names", "export_sensitivities"]

#: The branches whose loading ANM watches, named ``<component>:<name>`` as the cycle's loading alarms are.
BRANCH_COMPONENTS = ("line", "transformer")

FloatArray = npt.NDArray[np.float64]


def branch_names(grid: Grid) -> tuple[str, ...]:
    """The watched branches in the order of the loading arrays: ``line:<name>``, then ``transformer:<name>``."""
    out: list[str] = []
    for component in BRANCH_COMPONENTS:
        if grid.count(component):
            out += [f"{component}:{n}" for n in grid.names_of(component).tolist()]
    return tuple(out)


@dataclass(frozen=True)
class Sensitivities:
    """Relief per W of curtailment, one row per DER (in the order asked).

    ``loading[k, b]``: how much the loading of branch ``b`` (:func:`branch_names` order) falls
    when DER ``k`` exports 1 W less; ``u_pu[k, n]``: how much node ``n``'s voltage falls (p.u.).
    ``base_loading`` and ``base_u_pu`` are the base state's figures.
    """

    generators: tuple[str, ...]
    branches: tuple[str, ...]
    loading: FloatArray
    u_pu: FloatArray
    base_loading: FloatArray
    base_u_pu: FloatArray


def export_sensitivities(
    grid: Grid,
    generators: Sequence[str],
    *,
    output: Mapping[str, np.ndarray] | None = None,
    delta_w: float = 1000.0,
) -> Sensitivities:
    """Relief of every branch loading and node voltage per W less export of each generator (see the module docstring).

    ``generators`` are ``sym_gen`` names of ``grid``; an unknown one raises
    :class:`~opendso.errors.InputError`. ``output``: an estimate's (or power flow's) output to
    take the generators' and constant-power loads' powers from. A failed power flow raises
    :class:`~opendso.errors.CalculationError`.
    """
    if not delta_w > 0:
        raise InputError(f"ANM sensitivities: delta_w must be > 0, got {delta_w!r}")
    names = [str(n) for n in grid.names_of("sym_gen").tolist()] if grid.count("sym_gen") else []
    row_of = {n: k for k, n in enumerate(names)}
    unknown = [g for g in generators if g not in row_of]
    if unknown:
        raise InputError(f"ANM sensitivities: no generator {', '.join(map(repr, unknown))} in grid {grid.name}")
    rows = np.array([row_of[g] for g in generators], dtype=np.int64)
    data = {c: a.copy() for c, a in grid.pgm_input().items()}
    _base_from_output(data, output)
    branches = [c for c in BRANCH_COMPONENTS if grid.count(c)]
    n_der = rows.size
    gens = data.get("sym_gen")
    wanted: dict[str, Any] = {"node": ["u_pu", "energized"]}
    wanted.update({c: ["loading"] for c in branches})
    model = PowerGridModel(data, system_frequency=grid.frequency_hz)
    if gens is not None and gens.size:
        p = np.repeat(gens["p_specified"][None, :].astype(np.float64), n_der + 1, axis=0)
        p[np.arange(1, n_der + 1), rows] -= delta_w
        update: dict[str, Any] = {
            "sym_gen": {"id": np.repeat(gens["id"][None, :], n_der + 1, axis=0), "p_specified": p}
        }
    else:
        update = {"sym_gen": {"id": np.zeros((1, 0), np.int32), "p_specified": np.zeros((1, 0))}}
    result, _ = batch_power_flow(
        model, update, output=wanted, what=f"{grid.name}: ANM sensitivities", error_tolerance=1e-9
    )
    u = np.asarray(result["node"]["u_pu"], dtype=np.float64)
    if branches:
        loading = np.concatenate([np.asarray(result[c]["loading"], dtype=np.float64) for c in branches], axis=1)
    else:
        loading = np.zeros((u.shape[0], 0))
    return Sensitivities(
        generators=tuple(generators),
        branches=branch_names(grid),
        loading=(loading[0][None, :] - loading[1:]) / delta_w,
        u_pu=(u[0][None, :] - u[1:]) / delta_w,
        base_loading=loading[0],
        base_u_pu=u[0],
    )


def _base_from_output(data: dict[str, np.ndarray], output: Mapping[str, np.ndarray] | None) -> None:
    """Set generators and constant-power loads to the powers of ``output`` (rows matched by id)."""
    if not output:
        return
    for component in ("sym_gen", "sym_load"):
        array, out = data.get(component), output.get(component)
        if array is None or out is None or not array.size or out.size != array.size:
            continue
        if not np.array_equal(np.asarray(out["id"]), array["id"]):
            continue
        p, q = np.asarray(out["p"], dtype=np.float64), np.asarray(out["q"], dtype=np.float64)
        use = np.isfinite(p) & np.isfinite(q)
        if component == "sym_load":
            use &= array["type"] == LoadGenType.const_power.value
        array["p_specified"][use] = p[use]
        array["q_specified"][use] = q[use]
