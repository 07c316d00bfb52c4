"""Short-circuit currents (IEC 60909, equivalent voltage source) through power-grid-model.

:func:`run_short_circuit` gives the initial symmetrical short-circuit current Ik'' for a fault
at every node (or at the nodes named), as one power-grid-model batch: one scenario per faulted
node, the fault's ``fault_object`` changed by a batch update, never a Python loop of single
calculations.

The network power-grid-model receives is a copy of the grid prepared for IEC 60909-0:2016:

- **Sources** get their short-circuit data instead of the stiff power-flow source:
  ``extra["source"]["sk_max_va"]``/``"rx_max"`` for the maximum case and ``"sk_min_va"``/
  ``"rx_min"`` for the minimum case (the minimum case falls back to the maximum data, and
  both to :data:`DEFAULT_SOURCE_SK_VA` and :data:`DEFAULT_SOURCE_RX_RATIO` where the data
  give none). The zero-sequence ratio comes from ``"x0x_max"``/``"r0x0_max"`` (or ``_min``)
  where the grid carries them, else :data:`DEFAULT_SOURCE_Z01_RATIO`. IEC 60909 defines the
  network feeder impedance as Z_Q = c_Q U_n^2 / S''_kQ; power-grid-model makes it
  c_pgm U_n^2 / sk with its own c (see below), so ``sk`` is sent as S''_kQ c_pgm / c_Q
  (equal to S''_kQ unless the two c differ, e.g. a source at or below 1 kV with a 6 % tolerance).
- **Transformers** get the impedance correction factor K_T = 0.95 c_max / (1 + 0.6 x_T) in the
  maximum case (IEC 60909-0 §6.3.3; power-grid-model does not apply it), with c_max of the
  lower-voltage side; their ratio is the rated one (tap at neutral) and their magnetising
  branch is dropped.
- **Lines** lose their shunt capacitance and conductance; in the minimum case their
  resistance is raised to the end temperature, R = R_20 (1 + 0.004 /K (T_e - 20 degC)).
- **Loads, generators and shunts** are left out (IEC 60909 neglects non-rotating loads and
  shunts; generator and inverter contributions are not modelled here).

Voltage factor c: power-grid-model places c at its sources as their EMF (c_max 1.10; c_min
1.00, or 0.95 for a source at or below 1 kV; the u_ref magnitude is ignored) and has no 6 %
low-voltage tolerance. Where the sources in service would get different c (minimum case,
sources on both sides of 1 kV), the maximum scaling drives them all alike. IEC 60909 places c at
the fault location. The network is linear once loads are left out, so every current scales
with the source EMF, and the result is rescaled by c(fault node) / c(sources). c at the fault
node follows IEC 60909-0 Table 1: above 1 kV c_max = 1.10, c_min = 1.00; at or below 1 kV
c_max = 1.05 (6 % tolerance) or 1.10 (10 %), c_min = 0.95.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from power_grid_model import ComponentType, PowerGridModel, ShortCircuitVoltageScaling, initialize_array
from power_grid_model import FaultType as PgmFaultType
from power_grid_model.errors import PowerGridError

from opendso.errors import CalculationError, InputError
from opendso.grid.model import BRANCH_COMPONENTS, Grid

#: Short-circuit power assumed for a source whose data give none (pandapower's suggested value).
DEFAULT_SOURCE_SK_VA = 1e9
#: R/X ratio assumed for a source whose data give none.
DEFAULT_SOURCE_RX_RATIO = 0.1
#: Zero- to positive-sequence impedance ratio assumed for a source whose data give none.
DEFAULT_SOURCE_Z01_RATIO = 1.0
#: Conductor temperature at the end of the fault, for minimum currents (IEC 60909-0 §6.5).
DEFAULT_LINE_END_TEMPERATURE_C = 80.0
#: Temperature coefficient of resistance that IEC 60909-0 uses for the end-temperature correction.
LINE_ALPHA_PER_K = 0.004
#: Voltage level (V) at and below which IEC 60909's low-voltage factors apply.
LOW_VOLTAGE_LIMIT_V = 1000.0

#: Branch components whose currents can be reported.
_BRANCHES: tuple[str, ...] = BRANCH_COMPONENTS
#: Components power-grid-model needs for a short circuit; loads, generators, shunts and
#: regulators are left out.
_SC_COMPONENTS: tuple[str, ...] = ("node", *BRANCH_COMPONENTS, "three_winding_transformer", "source")


class FaultType(enum.StrEnum):
    """Fault types (names as on the command line)."""

    THREE_PHASE = "three_phase"
    SINGLE_PHASE_TO_GROUND = "single_phase_to_ground"
    PHASE_TO_PHASE = "phase_to_phase"
    TWO_PHASE_TO_GROUND = "two_phase_to_ground"

    @property
    def pgm(self) -> PgmFaultType:
        """The power-grid-model fault type."""
        return {
            FaultType.THREE_PHASE: PgmFaultType.three_phase,
            FaultType.SINGLE_PHASE_TO_GROUND: PgmFaultType.single_phase_to_ground,
            FaultType.PHASE_TO_PHASE: PgmFaultType.two_phase,
            FaultType.TWO_PHASE_TO_GROUND: PgmFaultType.two_phase_to_ground,
        }[self]


class Case(enum.StrEnum):
    """Maximum or minimum short-circuit currents (IEC 60909)."""

    MAX = "max"
    MIN = "min"


def voltage_factor(u_rated_v: npt.ArrayLike, *, case: Case | str, lv_tolerance_percent: int = 10) -> np.ndarray:
    """Return IEC 60909-0 Table 1 voltage factors c for nominal voltages (V).

    Above 1 kV: c_max 1.10, c_min 1.00. At or below 1 kV: c_max 1.05 for a 6 % voltage
    tolerance or 1.10 for 10 %, c_min 0.95.
    """
    case = Case(case)
    if lv_tolerance_percent not in (6, 10):
        raise InputError(f"lv_tolerance_percent must be 6 or 10 (IEC 60909), not {lv_tolerance_percent}")
    u = np.asarray(u_rated_v, dtype=np.float64)
    low = u <= LOW_VOLTAGE_LIMIT_V
    if case is Case.MAX:
        return np.where(low, 1.05 if lv_tolerance_percent == 6 else 1.10, 1.10)
    return np.where(low, 0.95, 1.00)


def _pgm_source_factor(u_rated_v: np.ndarray, scaling: ShortCircuitVoltageScaling) -> np.ndarray:
    """The c power-grid-model applies at each source (its own table, see the module docstring)."""
    if scaling == ShortCircuitVoltageScaling.maximum:
        return np.full(u_rated_v.shape, 1.10)
    return np.where(u_rated_v <= LOW_VOLTAGE_LIMIT_V, 0.95, 1.00)


@dataclass(frozen=True)
class ShortCircuitResult:
    """Initial symmetrical short-circuit currents for faults at a set of nodes.

    ``ik_a[k]`` is the current at the fault location (largest phase for unsymmetric faults)
    for a fault at node row ``node_rows[k]``; zero where the node is not energised.
    ``branch_i_a`` (when asked for) maps a branch component to an array of shape
    (faults, branches, 2): the largest phase current at the from and to end.
    """

    grid: Grid
    fault_type: FaultType
    case: Case
    node_rows: npt.NDArray[np.int64]
    ik_a: npt.NDArray[np.float64]
    energized: npt.NDArray[np.bool_]
    c_factor: npt.NDArray[np.float64]
    branch_i_a: dict[str, npt.NDArray[np.float64]] | None = None

    @property
    def node_names(self) -> list[str]:
        """Source names of the faulted nodes, in result order."""
        return [str(n) for n in self.grid.names_of("node")[self.node_rows]]

    def ik_ka_by_name(self) -> dict[str, float]:
        """Return Ik'' in kA per faulted node name."""
        return dict(zip(self.node_names, (self.ik_a / 1e3).tolist(), strict=True))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: grid name, case, fault type and one record per faulted node."""
        u_rated = self.grid.component("node")["u_rated"][self.node_rows]
        nodes: list[dict[str, Any]] = []
        for k, (name, ik, energized, c, u) in enumerate(
            zip(self.node_names, self.ik_a, self.energized, self.c_factor, u_rated, strict=True)
        ):
            record: dict[str, Any] = {
                "name": name,
                "ik_ka": float(ik) / 1e3,
                "energized": bool(energized),
                "c": float(c),
                "u_rated_kv": float(u) / 1e3,
            }
            if self.branch_i_a is not None:
                record["branches"] = [
                    {
                        "name": str(n),
                        "component": component,
                        "i_from_ka": float(i[0]) / 1e3,
                        "i_to_ka": float(i[1]) / 1e3,
                    }
                    for component, currents in self.branch_i_a.items()
                    for n, i in zip(self.grid.names_of(component), currents[k], strict=True)
                ]
            nodes.append(record)
        return {"grid": self.grid.name, "case": self.case.value, "fault_type": self.fault_type.value, "nodes": nodes}


def _source_data(grid: Grid, case: Case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (sk in VA, R/X, Z0/Z1) per source for the case, with the documented fallbacks."""
    n = grid.count("source")
    extra = grid.extra.get("source", {})

    def col(key: str) -> np.ndarray:
        values = extra.get(key)
        return np.full(n, np.nan) if values is None else np.asarray(values, dtype=np.float64)

    def pick(key_case: str, key_max: str, default: float) -> np.ndarray:
        values = col(key_case)
        values = np.where(np.isfinite(values), values, col(key_max))
        return np.where(np.isfinite(values), values, default)

    suffix = case.value
    sk = pick(f"sk_{suffix}_va", "sk_max_va", DEFAULT_SOURCE_SK_VA)
    rx = pick(f"rx_{suffix}", "rx_max", DEFAULT_SOURCE_RX_RATIO)
    x0x = pick(f"x0x_{suffix}", "x0x_max", np.nan)
    r0x0 = pick(f"r0x0_{suffix}", "r0x0_max", np.nan)
    # |Z0|/|Z1|; power-grid-model gives Z0 the angle of Z1, exact when r0x0 equals rx
    z01 = x0x * np.sqrt(1.0 + np.nan_to_num(r0x0, nan=0.0) ** 2) / np.sqrt(1.0 + rx**2)
    z01 = np.where(np.isfinite(z01) & (z01 > 0), z01, DEFAULT_SOURCE_Z01_RATIO)
    if np.any(sk <= 0) or np.any(rx < 0):
        bad = int(np.flatnonzero((sk <= 0) | (rx < 0))[0])
        raise InputError(
            f"{grid.name}: source '{grid.names_of('source')[bad]}' has non-positive short-circuit "
            f"power or negative R/X ratio for the {case.value} case"
        )
    return sk, rx, z01


def _transformer_kt(uk: np.ndarray, pk: np.ndarray, sn: np.ndarray, c_max_lv: np.ndarray) -> np.ndarray:
    """IEC 60909-0 (12a): K_T = 0.95 c_max / (1 + 0.6 x_T), x_T in p.u. of the transformer rating."""
    ur = np.divide(pk, sn, out=np.zeros_like(pk), where=sn > 0)
    x_t = np.sqrt(np.maximum(uk**2 - ur**2, 0.0))
    kt: np.ndarray = 0.95 * c_max_lv / (1.0 + 0.6 * x_t)
    return kt


@dataclass(frozen=True)
class ShortCircuitInput:
    """A power-grid-model input dataset prepared for IEC 60909, and how to drive it.

    ``c_pgm`` is the voltage factor power-grid-model applies at the sources under ``scaling``
    (the same for every source in service); results are rescaled by c(fault node) / ``c_pgm``.
    """

    data: dict[str, np.ndarray]
    scaling: ShortCircuitVoltageScaling
    c_pgm: float


def short_circuit_input(
    grid: Grid,
    *,
    case: Case | str = Case.MAX,
    fault_type: FaultType | str = FaultType.THREE_PHASE,
    lv_tolerance_percent: int = 10,
    line_end_temperature_c: float = DEFAULT_LINE_END_TEMPERATURE_C,
) -> ShortCircuitInput:
    """Return the power-grid-model input prepared for IEC 60909 (see the module docstring).

    The grid's own arrays are not changed; the prepared ones are copies. A fault to ground
    needs zero-sequence data of every line in service: missing data raise
    :class:`~opendso.errors.InputError` naming the lines. Faults without earth contact do not
    depend on the zero-sequence network; lines without zero-sequence data then get r0 = r1,
    x0 = x1 so that power-grid-model's phase-domain matrix stays regular.
    """
    case = Case(case)
    fault_type = FaultType(fault_type)
    data = {c: grid.input[c].copy() for c in _SC_COMPONENTS if c in grid.input and grid.input[c].size}
    node = data["node"]
    c_max_node = voltage_factor(node["u_rated"], case=Case.MAX, lv_tolerance_percent=lv_tolerance_percent)
    c_case_node = voltage_factor(node["u_rated"], case=case, lv_tolerance_percent=lv_tolerance_percent)

    if "source" not in data:
        raise InputError(f"{grid.name}: the grid has no source; a short circuit needs one")
    source = data["source"]
    sk, rx, z01 = _source_data(grid, case)
    source_u = node["u_rated"][grid.node_positions(source["node"])]
    scaling = ShortCircuitVoltageScaling.maximum if case is Case.MAX else ShortCircuitVoltageScaling.minimum
    c_pgm = _pgm_source_factor(source_u, scaling)
    live = source["status"] == 1
    if live.any() and not np.allclose(c_pgm[live], c_pgm[live][0]):
        # power-grid-model would drive the sources with different EMFs; IEC 60909 has one
        # equivalent source at the fault, so drive all alike and rescale the result
        scaling = ShortCircuitVoltageScaling.maximum
        c_pgm = _pgm_source_factor(source_u, scaling)
    # power-grid-model makes the source impedance c_pgm U_n^2 / sk; IEC 60909 wants c_Q U_n^2 / S''_kQ
    source["sk"] = sk * c_pgm / c_case_node[grid.node_positions(source["node"])]
    source["rx_ratio"] = rx
    source["z01_ratio"] = z01
    source["u_ref"] = 1.0
    source["u_ref_angle"] = 0.0

    r_factor = 1.0 + LINE_ALPHA_PER_K * (line_end_temperature_c - 20.0) if case is Case.MIN else 1.0
    if "line" in data:
        line = data["line"]
        line["c1"] = 0.0
        line["c0"] = 0.0
        line["tan1"] = 0.0
        line["tan0"] = 0.0
        missing = np.isnan(line["r0"]) | np.isnan(line["x0"])
        if missing.any():
            if fault_type in (FaultType.SINGLE_PHASE_TO_GROUND, FaultType.TWO_PHASE_TO_GROUND):
                in_use = (line["from_status"] == 1) | (line["to_status"] == 1)
                bad = grid.names_of("line")[missing & in_use]
                if bad.size:
                    raise InputError(
                        f"{grid.name}: a {fault_type.value} fault needs zero-sequence impedances (r0, x0) of "
                        f"every line; {bad.size} line(s) have none, e.g. {[str(b) for b in bad[:5]]}"
                    )
            line["r0"] = np.where(missing, line["r1"], line["r0"])
            line["x0"] = np.where(missing, line["x1"], line["x0"])
        line["r1"] *= r_factor
        line["r0"] *= r_factor
    if "asym_line" in data:
        asym = data["asym_line"]
        for name in asym.dtype.names or ():
            if name.startswith("r_"):
                asym[name] *= r_factor
            elif name.startswith("c"):
                asym[name] = np.where(np.isnan(asym[name]), np.nan, 0.0)

    if "transformer" in data:
        tr = data["transformer"]
        u_from = node["u_rated"][grid.node_positions(tr["from_node"])]
        u_to = node["u_rated"][grid.node_positions(tr["to_node"])]
        lv_rows = np.where(u_to <= u_from, grid.node_positions(tr["to_node"]), grid.node_positions(tr["from_node"]))
        if case is Case.MAX:
            kt = _transformer_kt(tr["uk"], tr["pk"], tr["sn"], c_max_node[lv_rows])
            for name in ("uk", "pk", "uk_min", "uk_max", "pk_min", "pk_max"):
                tr[name] *= kt  # NaN (not given) stays NaN
        tr["i0"] = 0.0
        tr["p0"] = 0.0
        # IEC 60909 (and pandapower's calc_sc) neglect magnetising admittances in every sequence
        # system; unset zero-sequence values default to the (now zero) positive-sequence ones
        tr["i0_zero_sequence"] = np.nan
        tr["p0_zero_sequence"] = np.nan
        tr["tap_pos"] = tr["tap_nom"]
    if "three_winding_transformer" in data:
        t3 = data["three_winding_transformer"]
        if case is Case.MAX:
            rows = [grid.node_positions(t3[f"node_{k}"]) for k in (1, 2, 3)]
            u = [node["u_rated"][r] for r in rows]
            for a, b in ((1, 2), (1, 3), (2, 3)):
                lv = np.where(u[b - 1] <= u[a - 1], rows[b - 1], rows[a - 1])
                sn = np.minimum(t3[f"sn_{a}"], t3[f"sn_{b}"])
                kt = _transformer_kt(t3[f"uk_{a}{b}"], t3[f"pk_{a}{b}"], sn, c_max_node[lv])
                t3[f"uk_{a}{b}"] *= kt
                t3[f"pk_{a}{b}"] *= kt
        t3["i0"] = 0.0
        t3["p0"] = 0.0
        t3["tap_pos"] = t3["tap_nom"]
    if "generic_branch" in data:
        gb = data["generic_branch"]
        gb["g1"] = 0.0
        gb["b1"] = 0.0
    return ShortCircuitInput(data, scaling, float(c_pgm[live][0]) if live.any() else 1.0)


def _select_nodes(grid: Grid, nodes: Sequence[str] | None) -> npt.NDArray[np.int64]:
    """Rows of the named nodes in the node array (all nodes when ``nodes`` is None)."""
    if nodes is None:
        return np.arange(grid.count("node"), dtype=np.int64)
    if isinstance(nodes, str):
        nodes = [nodes]
    names = grid.names_of("node").astype(str)
    order = np.argsort(names, kind="stable")
    wanted = np.asarray(list(nodes), dtype=str)
    if wanted.size == 0:
        raise InputError(f"{grid.name}: no node selected for the short-circuit calculation")
    pos = np.clip(np.searchsorted(names, wanted, sorter=order), 0, max(names.size - 1, 0))
    found = names[order[pos]] == wanted if names.size else np.zeros(wanted.size, dtype=bool)
    if not found.all():
        missing = wanted[~found].tolist()
        raise InputError(f"{grid.name}: unknown node name(s) for the short-circuit calculation: {missing[:10]}")
    return order[pos].astype(np.int64)


def run_short_circuit(
    grid: Grid,
    *,
    fault_type: FaultType | str = FaultType.THREE_PHASE,
    case: Case | str = Case.MAX,
    nodes: Sequence[str] | None = None,
    lv_tolerance_percent: int = 10,
    line_end_temperature_c: float = DEFAULT_LINE_END_TEMPERATURE_C,
    branch_currents: bool = False,
    threading: int = 0,
) -> ShortCircuitResult:
    """Return Ik'' (IEC 60909) for a fault at every node, or at the nodes named, as one batch.

    ``nodes`` are node names as in the grid's source; an unknown name raises
    :class:`~opendso.errors.InputError` naming it. A node that is not energised (no source
    reaches it) gets Ik'' = 0 and ``energized`` False. With ``branch_currents``, the current in
    every branch is reported for every fault. Raises :class:`~opendso.errors.CalculationError`
    when power-grid-model cannot solve the network.
    """
    try:
        fault_type = FaultType(fault_type)
        case = Case(case)
    except ValueError as exc:
        raise InputError(
            f"{exc}; fault types: {[f.value for f in FaultType]}, cases: {[c.value for c in Case]}"
        ) from None
    rows = _select_nodes(grid, nodes)
    prepared = short_circuit_input(
        grid,
        case=case,
        fault_type=fault_type,
        lv_tolerance_percent=lv_tolerance_percent,
        line_end_temperature_c=line_end_temperature_c,
    )
    data = prepared.data
    node = data["node"]
    fault_id = grid.max_id + 1
    fault = initialize_array("input", "fault", 1)
    fault["id"] = fault_id
    fault["status"] = 1
    fault["fault_type"] = fault_type.pgm
    fault["fault_object"] = node["id"][rows[0]]
    fault["r_f"] = 0.0
    fault["x_f"] = 0.0
    data["fault"] = fault

    update = initialize_array("update", "fault", (rows.size, 1))
    update["id"] = fault_id
    update["status"] = 1
    update["fault_object"] = node["id"][rows][:, None]
    c_node = voltage_factor(node["u_rated"][rows], case=case, lv_tolerance_percent=lv_tolerance_percent)

    output_types: list[str] = ["fault"]
    if branch_currents:
        output_types += [c for c in _BRANCHES if c in data]
    try:
        model = PowerGridModel(data, system_frequency=grid.frequency_hz)
        output = model.calculate_short_circuit(
            update_data={"fault": update},
            short_circuit_voltage_scaling=prepared.scaling,
            output_component_types=output_types,
            threading=threading,
        )
    except PowerGridError as exc:
        raise CalculationError(f"{grid.name}: short-circuit calculation failed: {type(exc).__name__}: {exc}") from exc

    scale = c_node / prepared.c_pgm
    fault_out = output[ComponentType.fault]
    ik = np.nan_to_num(fault_out["i_f"][:, 0, :], nan=0.0).max(axis=1) * scale
    energized = fault_out["energized"][:, 0].astype(bool) & (ik > 0)
    branch_i: dict[str, np.ndarray] | None = None
    if branch_currents:
        branch_i = {}
        for component in output_types[1:]:
            res = output[ComponentType(component)]
            i_from = np.nan_to_num(res["i_from"], nan=0.0).max(axis=2)
            i_to = np.nan_to_num(res["i_to"], nan=0.0).max(axis=2)
            branch_i[component] = np.stack([i_from, i_to], axis=2) * scale[:, None, None]
    return ShortCircuitResult(grid, fault_type, case, rows, ik, energized, c_node, branch_i)
