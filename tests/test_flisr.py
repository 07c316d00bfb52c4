"""FLISR: the plan's claims checked independently (topology, power flow), against exhaustive search, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from opendso.calc.powerflow import run_power_flow
from opendso.cli.command import main
from opendso.errors import InputError
from opendso.grid import Grid, analyse_topology, from_pandapower
from opendso.grid.customers import customer_counts, customers_by_node
from opendso.operations.flisr import (
    FlisrLimits,
    FlisrPlan,
    exhaustive_flisr,
    feeder_breaker,
    remote_controlled,
    simulate_fault_and_plan,
)

RURAL = "simbench:1-MV-rural--0-sw"
# faults on several feeders of 1-MV-rural: at a feeder's first node, mid-feeder, on a lateral, at its end
RURAL_FAULTS = (
    "MV1.101 Bus 4",
    "MV1.101 Bus 11",
    "MV1.101 Bus 26",
    "MV1.101 Bus 37",
    "MV1.101 Bus 39",
    "MV1.101 Bus 46",
)


def _switch_rows(grid: Grid, names: list[str]) -> list[int]:
    return [int(np.flatnonzero(grid.switch_names == n)[0]) for n in names]


def _final_states(grid: Grid, plan: FlisrPlan) -> np.ndarray:
    """Apply the trip, then ``isolate``, then ``restore`` in order, to the source's switch states."""
    closed = grid.switches["closed"].copy()
    closed[_switch_rows(grid, [plan.tripped])] = 0
    closed[_switch_rows(grid, list(plan.isolate))] = 0
    for switch, action in plan.restore:
        closed[_switch_rows(grid, [switch])] = 1 if action == "close" else 0
    return closed


def _violations(grid: Grid, limits: FlisrLimits) -> set[tuple[str, str]]:
    result = run_power_flow(grid)
    assert result.converged, result.error
    node = result.output["node"]
    names = grid.names_of("node")
    out: set[tuple[str, str]] = set()
    live = node["energized"] == 1
    out |= {(str(n), "low") for n in names[live & (node["u_pu"] < limits.u_min)]}
    out |= {(str(n), "high") for n in names[live & (node["u_pu"] > limits.u_max)]}
    for comp in ("line", "transformer"):
        if comp in result.output:
            loading = np.nan_to_num(result.output[comp]["loading"])
            out |= {(str(n), "load") for n in grid.names_of(comp)[loading > limits.loading_max]}
    return out


def check_plan(grid: Grid, plan: FlisrPlan, limits: FlisrLimits) -> None:
    """Assert the contract's claims on the grid, with topology and power flow of our own."""
    before = analyse_topology(grid)
    final = grid.with_switch_states(_final_states(grid, plan))
    after = analyse_topology(final)
    names = grid.names_of("node")
    row = {str(n): k for k, n in enumerate(names)}
    best = plan.located[0]
    assert not any(after.node_energised[row[n]] for n in best.nodes), "a faulted node is energised"
    assert not any(after.node_energised[row[n]] for n in plan.faulted_nodes)
    assert int(after.component_cycles.sum()) <= int(before.component_cycles.sum()), "a new loop"
    assert all(after.node_energised[row[n]] for n in plan.restored_nodes)
    # the customers restored are those at energised nodes of the interrupted region
    tripped = grid.switches["closed"].copy()
    tripped[_switch_rows(grid, [plan.tripped])] = 0
    interrupted = before.node_energised & ~analyse_topology(grid.with_switch_states(tripped)).node_energised
    per_node = customers_by_node(grid, customer_counts(grid))
    assert plan.customers_interrupted == int(per_node[interrupted].sum())
    assert plan.customers_restored == int(per_node[interrupted & after.node_energised].sum())
    assert {str(n) for n in names[interrupted & after.node_energised]} == set(plan.restored_nodes)
    # the final state's power flow, generation of the interrupted region at zero: no new violation
    gens = final.component("sym_gen").copy()
    if gens.size:
        gens["status"] = np.where(interrupted[grid.node_positions(gens["node"])], 0, gens["status"])
        final = final.with_input(sym_gen=gens)
    new = _violations(final, limits) - _violations(grid, limits)
    assert not new, new
    assert plan.violations == ()


@pytest.fixture(scope="module")
def rural(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(RURAL)


@pytest.mark.parametrize("fault", RURAL_FAULTS)
def test_plan_keeps_its_claims_and_matches_exhaustive_search(rural: Grid, fault: str) -> None:
    limits = FlisrLimits()
    plan = simulate_fault_and_plan(rural, fault, limits=limits)
    assert plan.located[0].nodes == (fault,)  # indicators on every switch: located exactly
    check_plan(rural, plan, limits)
    best = exhaustive_flisr(rural, tripped=plan.tripped, faulted_nodes=plan.faulted_nodes, max_branches=14)
    assert best is not None
    assert plan.load_restored_w == pytest.approx(best.load_restored_w, rel=1e-9)
    assert plan.customers_restored == best.customers_restored


def test_every_section_of_a_feeder_with_two_ties_matches_exhaustive(grid_of: Callable[[str], Grid]) -> None:
    """1-MV-comm's feeder of MV4.101 Bus 34: a part restored only through a tie to another dead part."""
    grid = grid_of("simbench:1-MV-comm--0-sw")
    topology = analyse_topology(grid)
    names = grid.names_of("node")
    feeder = topology.node_feeder[np.flatnonzero(names == "MV4.101 Bus 34")[0]]
    compared = 0
    for fault in names[topology.node_feeder == feeder]:
        plan = simulate_fault_and_plan(grid, str(fault))
        check_plan(grid, plan, FlisrLimits())
        best = exhaustive_flisr(grid, tripped=plan.tripped, faulted_nodes=plan.faulted_nodes, max_branches=14)
        if best is None:
            continue
        compared += 1
        assert plan.load_restored_w == pytest.approx(best.load_restored_w, rel=1e-9), fault
        assert plan.customers_restored == best.customers_restored, fault
    assert compared >= 5


def test_plan_uses_only_remote_switches(rural: Grid) -> None:
    fault = "MV1.101 Bus 37"
    full = simulate_fault_and_plan(rural, fault)
    # the switches the full plan opens to isolate are manual now: the plan must isolate farther out
    # (with the other switch of the same line, which would do the same)
    elements = rural.switches["element"][_switch_rows(rural, list(full.isolate))]
    remote = ~np.isin(rural.switches["element"], elements)
    plan = simulate_fault_and_plan(rural, fault, remote=remote)
    used = list(plan.isolate) + [s for s, _ in plan.restore]
    assert all(remote[_switch_rows(rural, [s])[0]] or s == plan.tripped for s in used)
    assert set(plan.isolate).isdisjoint(full.isolate)
    check_plan(rural, plan, FlisrLimits())
    assert plan.customers_restored < full.customers_restored
    best = exhaustive_flisr(
        rural, tripped=plan.tripped, faulted_nodes=plan.faulted_nodes, remote=remote, max_branches=14
    )
    assert best is not None
    assert plan.load_restored_w == pytest.approx(best.load_restored_w, rel=1e-9)


# -- a synthetic grid where one tie cannot carry everything -------------------------------------------


def three_feeders(n: int = 8) -> Any:
    """Feeders A, B, C of ``n`` nodes from one busbar; A's end ties to B's end, A's middle to C's middle.

    Every line has a closed load-break switch at its from end, the feeder heads a breaker; the
    ties are lines with an open switch. Each feeder head is rated for 1.6 times its own load, so
    neither neighbour can take all of A's downstream part: FLISR must split it.
    """
    import pandapower as pp

    net = pp.create_empty_network(name="three-feeders")
    bus0 = pp.create_bus(net, vn_kv=10.0, name="busbar")
    pp.create_ext_grid(net, bus0, vm_pu=1.02, s_sc_max_mva=500.0, rx_max=0.1)
    p_mw = 0.25
    i_feeder_ka = n * p_mw / (np.sqrt(3) * 10.0)
    ends: dict[str, list[int]] = {}
    for f in "ABC":
        prev = bus0
        buses = []
        for k in range(1, n + 1):
            b = pp.create_bus(net, vn_kv=10.0, name=f"{f}{k}")
            line = pp.create_line_from_parameters(
                net, prev, b, 0.5, 0.2, 0.1, 250.0, max_i_ka=1.6 * i_feeder_ka, name=f"{f}-line{k}"
            )
            pp.create_switch(net, prev, line, et="l", type="CB" if k == 1 else "LBS", name=f"{f}-sw{k}")
            pp.create_load(net, b, p_mw=p_mw, q_mvar=0.05 * p_mw, name=f"{f}-load{k}")
            buses.append(b)
            prev = b
        ends[f] = buses
    for name, a, b in (
        ("tie-AB", ends["A"][-1], ends["B"][-1]),
        ("tie-AC", ends["A"][n // 2 - 1], ends["C"][n // 2 - 1]),
    ):
        line = pp.create_line_from_parameters(net, a, b, 0.5, 0.2, 0.1, 250.0, max_i_ka=10.0, name=name)
        pp.create_switch(net, a, line, et="l", closed=False, type="LBS", name=f"{name}-sw")
    return net


def test_split_across_two_ties_when_one_cannot_carry_everything() -> None:
    grid = from_pandapower(three_feeders(), name="three-feeders")
    limits = FlisrLimits()
    plan = simulate_fault_and_plan(grid, "A1", limits=limits)
    assert plan.tripped == "A-sw1"
    check_plan(grid, plan, limits)
    closes = {s for s, a in plan.restore if a == "close"}
    opens = {s for s, a in plan.restore if a == "open"}
    assert {"tie-AB-sw", "tie-AC-sw"} <= closes
    assert opens, "a sectionalising switch must open to split the part"
    assert (
        plan.customers_off
        == customers_by_node(grid, customer_counts(grid))[
            grid.node_positions(grid.component("node")["id"][grid.names_of("node") == "A1"])
        ].sum()
    )
    best = exhaustive_flisr(grid, tripped=plan.tripped, faulted_nodes=plan.faulted_nodes)
    assert best is not None
    assert plan.load_restored_w == pytest.approx(best.load_restored_w)
    assert plan.customers_restored == best.customers_restored
    # one tie alone would overload: with tie-AC manual (the source's remote_controlled column says so)
    # the plan restores less, still within limits
    net = three_feeders()
    net.switch["remote_controlled"] = net.switch["name"] != "tie-AC-sw"
    manual_ac = from_pandapower(net, name="three-feeders")
    assert remote_controlled(manual_ac).tolist() == (grid.switch_names != "tie-AC-sw").tolist()
    assert remote_controlled(grid).all()  # no column: every switch is remote-controlled
    fewer = simulate_fault_and_plan(manual_ac, "A1", limits=limits)
    assert "tie-AC-sw" not in {s for s, _ in fewer.restore}
    check_plan(grid, fewer, limits)
    assert fewer.customers_restored < plan.customers_restored
    assert fewer.customers_restored > 0


@pytest.mark.parametrize("fault", ["A1", "A3", "A4", "A6", "A8", "B2"])
def test_every_section_of_synthetic_feeders_matches_exhaustive(fault: str) -> None:
    grid = from_pandapower(three_feeders(), name="three-feeders")
    plan = simulate_fault_and_plan(grid, fault)
    check_plan(grid, plan, FlisrLimits())
    best = exhaustive_flisr(grid, tripped=plan.tripped, faulted_nodes=plan.faulted_nodes)
    assert best is not None
    assert (plan.load_restored_w, plan.customers_restored) == (
        pytest.approx(best.load_restored_w),
        best.customers_restored,
    )


def test_cold_load_pickup_restores_less() -> None:
    grid = from_pandapower(three_feeders(), name="three-feeders")
    plain = simulate_fault_and_plan(grid, "A1")
    heavy = simulate_fault_and_plan(grid, "A1", cold_load_pickup=2.0)
    assert heavy.customers_restored < plain.customers_restored


# -- command line ---------------------------------------------------------------------------------------


def test_cli_json_contract(rural: Grid, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flisr", RURAL, "--fault", "MV1.101 Bus 37", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {"grid", "fault", "located", "isolate", "restore", "customers", "violations", "plan_ms"}
    assert payload["grid"] == RURAL
    assert payload["fault"] == "MV1.101 Bus 37"
    assert set(payload["customers"]) == {"interrupted", "restored", "off"}
    c = payload["customers"]
    assert c["interrupted"] - c["restored"] == c["off"]
    assert all(set(x) == {"elements", "confidence"} for x in payload["located"])
    assert all(r["action"] in ("close", "open") for r in payload["restore"])
    assert payload["violations"] == []
    assert payload["plan_ms"] > 0
    plan = simulate_fault_and_plan(rural, "MV1.101 Bus 37")
    assert payload["isolate"] == list(plan.isolate)
    assert [(r["switch"], r["action"]) for r in payload["restore"]] == list(plan.restore)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ([RURAL, "--fault", "no such node"], "no such node"),
        (["simbench:no-such-grid", "--fault", "x"], "no-such-grid"),
    ],
)
def test_cli_bad_input_exits_2(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flisr", *argv, "--json"]) == 2
    assert named in capsys.readouterr().err


def test_node_outside_any_feeder_is_refused(rural: Grid, capsys: pytest.CaptureFixture[str]) -> None:
    topology = analyse_topology(rural)
    busbar = str(rural.names_of("node")[np.flatnonzero((topology.node_feeder < 0) & topology.node_energised)[0]])
    with pytest.raises(InputError, match="outside any feeder"):
        feeder_breaker(rural, busbar)
    assert main(["flisr", RURAL, "--fault", busbar]) == 2
    assert busbar in capsys.readouterr().err


def test_bad_limits_are_refused() -> None:
    with pytest.raises(InputError):
        FlisrLimits(u_min=1.1, u_max=0.9)
    with pytest.raises(InputError):
        FlisrLimits(loading_max=0.0)


def test_hostile_planner_arguments_are_refused() -> None:
    grid = from_pandapower(three_feeders(), name="three-feeders")
    n_loads = grid.count("sym_load")
    with pytest.raises(InputError, match="cold_load_pickup"):
        simulate_fault_and_plan(grid, "A1", cold_load_pickup=0.5)
    with pytest.raises(InputError, match="remote"):
        simulate_fault_and_plan(grid, "A1", remote=[True])
    with pytest.raises(InputError, match="customers"):
        simulate_fault_and_plan(grid, "A1", customers=[1] * (n_loads - 1))
    with pytest.raises(InputError, match="customers"):
        simulate_fault_and_plan(grid, "A1", customers=[-1] * n_loads)
    with pytest.raises(InputError, match="'nowhere'"):
        exhaustive_flisr(grid, tripped="A-sw1", faulted_nodes=["nowhere"])
    with pytest.raises(InputError, match="A-sw99"):
        exhaustive_flisr(grid, tripped="A-sw99", faulted_nodes=["A1"])


def test_given_customers_are_counted(rural: Grid) -> None:
    ones = np.ones(rural.count("sym_load"), dtype=np.int64)
    plan = simulate_fault_and_plan(rural, "MV1.101 Bus 37", customers=ones)
    loads_at = customers_by_node(rural, ones)
    row = {str(n): k for k, n in enumerate(rural.names_of("node"))}
    assert plan.customers_interrupted == sum(int(loads_at[row[n]]) for n in plan.interrupted_nodes)
    assert plan.customers_restored == sum(int(loads_at[row[n]]) for n in plan.restored_nodes)
