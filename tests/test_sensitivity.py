"""Injection sensitivities against pandapower's finite differences on SimBench 1-MV-rural.

The reference: pandapower's own Newton-Raphson power flow on the same grid (``to_pandapower``),
once as is and once with a 1 kW load added at the node, in two states (the grid's input, and
its loads scaled by 1.9 with the generators off, where several lines are overloaded). The
difference quotients agree with power-grid-model's within a relative :data:`REL_TOL` (the two
solvers agree to about 1e-7 in loading and voltage, and the quotient divides by 1 kW) plus an
absolute :data:`ABS_TOL` per W for figures that are practically zero.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandapower as pp
import pytest
from power_grid_model import initialize_array

from opendso.calc import sensitivity
from opendso.calc.sensitivity import injection_sensitivities
from opendso.errors import InputError
from opendso.grid import to_pandapower
from opendso.grid.model import Grid

GRID = "simbench:1-MV-rural--0-sw"
NODES = ("MV1.101 Bus 10", "MV1.101 Bus 40", "MV1.101 Bus 70", "MV1.101 Bus 95")
STRESS = 1.9
DELTA_W = 1000.0
REL_TOL = 1e-3
ABS_TOL = 1e-12


@dataclass(frozen=True)
class Reference:
    """pandapower finite differences: ``loading[s, k, b]`` and ``u_pu[s, k, n]`` per W, in the grid's orders."""

    loading: np.ndarray
    u_pu: np.ndarray
    base_loading: np.ndarray
    base_u_pu: np.ndarray


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(GRID)


def _stressed_update(grid: Grid) -> dict[str, dict[str, np.ndarray]]:
    load, gen = grid.component("sym_load"), grid.component("sym_gen")
    return {
        "sym_load": {
            "p_specified": np.stack([load["p_specified"], load["p_specified"] * STRESS]),
            "q_specified": np.stack([load["q_specified"], load["q_specified"] * STRESS]),
        },
        "sym_gen": {"p_specified": np.stack([gen["p_specified"], np.zeros(gen.size)])},
    }


@pytest.fixture(scope="module")
def reference(grid: Grid) -> Reference:
    net = to_pandapower(grid)
    load, gen = grid.component("sym_load"), grid.component("sym_gen")
    line_ids, trafo_ids = grid.component("line")["id"], grid.component("transformer")["id"]
    node_ids = grid.component("node")["id"]
    by_name = dict(zip((str(n) for n in grid.names_of("node")), node_ids.tolist(), strict=True))

    def solve() -> tuple[np.ndarray, np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.runpp(net, tolerance_mva=1e-11, trafo_loading="power", numba=False)
        loading = np.concatenate(
            [
                net.res_line.loading_percent.loc[line_ids].to_numpy(),
                net.res_trafo.loading_percent.loc[trafo_ids].to_numpy(),
            ]
        )
        return loading / 100.0, net.res_bus.vm_pu.loc[node_ids].to_numpy()

    loadings, voltages, bases_l, bases_u = [], [], [], []
    for scale, gen_p in ((1.0, gen["p_specified"]), (STRESS, np.zeros(gen.size))):
        net.load.loc[load["id"], "p_mw"] = load["p_specified"] * scale / 1e6
        net.load.loc[load["id"], "q_mvar"] = load["q_specified"] * scale / 1e6
        net.sgen.loc[gen["id"], "p_mw"] = gen_p / 1e6
        base_l, base_u = solve()
        dl, du = [], []
        for name in NODES:
            probe = pp.create_load(net, by_name[name], p_mw=DELTA_W / 1e6)
            l1, u1 = solve()
            net.load = net.load.drop(probe)
            dl.append((l1 - base_l) / DELTA_W)
            du.append((u1 - base_u) / DELTA_W)
        loadings.append(dl)
        voltages.append(du)
        bases_l.append(base_l)
        bases_u.append(base_u)
    return Reference(np.array(loadings), np.array(voltages), np.array(bases_l), np.array(bases_u))


def _assert_like(result: sensitivity.InjectionSensitivities, ref: Reference, states: list[int]) -> None:
    np.testing.assert_allclose(result.loading, ref.loading[states], rtol=REL_TOL, atol=ABS_TOL)
    np.testing.assert_allclose(result.u_pu, ref.u_pu[states], rtol=REL_TOL, atol=ABS_TOL)
    np.testing.assert_allclose(result.base_loading, ref.base_loading[states], rtol=0, atol=1e-5)
    np.testing.assert_allclose(result.base_u_pu, ref.base_u_pu[states], rtol=0, atol=1e-5)


def test_one_state_agrees_with_pandapower_finite_differences(grid: Grid, reference: Reference) -> None:
    result = injection_sensitivities(grid, list(NODES), delta_w=DELTA_W)
    assert result.states == 1
    assert result.nodes == NODES
    lines, trafos = list(grid.names_of("line")), list(grid.names_of("transformer"))
    assert result.branches == tuple(f"line:{n}" for n in lines) + tuple(f"transformer:{n}" for n in trafos)
    _assert_like(result, reference, [0])
    # UFTP sign: more consumption lowers every voltage of the node's own feeder and loads the line feeding it
    own = result.of(f"node:{NODES[1]}")[0, 1]
    assert own < 0
    assert result.base(f"node:{NODES[1]}")[0] == pytest.approx(
        reference.base_u_pu[0, list(result.node_names).index(NODES[1])]
    )


def test_several_states_in_one_call_agree_with_pandapower(grid: Grid, reference: Reference) -> None:
    result = injection_sensitivities(grid, list(NODES), update=_stressed_update(grid), delta_w=DELTA_W)
    assert result.states == 2
    _assert_like(result, reference, [0, 1])
    assert result.base_loading[1].max() > 1.0  # the stressed state has overloads


def test_a_row_based_update_and_small_batches_give_the_same_answer(
    grid: Grid, reference: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    load, gen = grid.component("sym_load"), grid.component("sym_gen")
    rows = initialize_array("update", "sym_load", (1, load.size))
    rows["id"] = load["id"]
    rows["p_specified"] = load["p_specified"] * STRESS
    rows["q_specified"] = load["q_specified"] * STRESS
    gens = initialize_array("update", "sym_gen", (1, gen.size))
    gens["id"] = gen["id"]
    gens["p_specified"] = 0.0
    monkeypatch.setattr(sensitivity, "MAX_BATCH_VALUES", 10)  # one state per call
    update = {"sym_load": rows, "sym_gen": gens}
    result = injection_sensitivities(grid, list(NODES), update=update, delta_w=DELTA_W)
    _assert_like(result, reference, [1])
    two = injection_sensitivities(grid, list(NODES), update=_stressed_update(grid), delta_w=DELTA_W)
    _assert_like(two, reference, [0, 1])


@pytest.mark.parametrize(
    ("nodes", "kwargs", "message"),
    [
        (["nowhere"], {}, "no node 'nowhere'"),
        ([NODES[0], NODES[0]], {}, "listed twice"),
        ([], {}, "no nodes given"),
        ([NODES[0]], {"delta_w": 0.0}, "delta_w must be a number > 0"),
        ([NODES[0]], {"update": {"shunt": {"status": np.ones((1, 1))}}}, "component 'shunt', not in grid"),
        ([NODES[0]], {"update": {"sym_load": {"p_specified": np.ones(3)}}}, r"must be \(scenarios, elements\)"),
        ([NODES[0]], {"update": {"sym_load": {"p_specified": np.ones((1, 3))}}}, "no ids and does not cover"),
        ([NODES[0]], {"update": {"sym_load": [1, 2]}}, "not a structured array or columns"),
        ([NODES[0]], {"update": {"sym_load": {"node": np.ones((1, 96))}}}, "sym_load.node is not an attribute"),
    ],
)
def test_bad_input_is_named(grid: Grid, nodes: list[str], kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        injection_sensitivities(grid, nodes, **kwargs)  # type: ignore[arg-type]
