"""Behaviour of the pandapower importer, checked against pandapower's own power flow where it is about results.

Every network here is built in a few lines so the test says what it exercises. Tolerances: 1e-5 p.u.
for grids of loads and static generators (the project's tolerance against pandapower on SimBench
grids), 1e-4 p.u. where voltage-controlled generators are involved.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandapower as pp
import pytest
from power_grid_model import LoadGenType

from opendso.calc.powerflow import run_power_flow
from opendso.errors import GridSourceError
from opendso.grid import from_pandapower
from opendso.grid.model import Grid

TOL_PQ_PU = 1e-5
TOL_PV_PU = 1e-4


def _feeder(n: int = 5) -> Any:
    """A 20 kV feeder behind a 110/20 kV transformer, one load per MV bus."""
    net = pp.create_empty_network()
    hv = pp.create_bus(net, 110.0, name="HV")
    mv = pp.create_buses(net, n, 20.0, name=[f"MV{k}" for k in range(n)])
    pp.create_ext_grid(net, hv, vm_pu=1.02, name="grid")
    pp.create_transformer(net, hv, mv[0], std_type="25 MVA 110/20 kV", name="T1")
    for k in range(n - 1):
        pp.create_line(net, mv[k], mv[k + 1], length_km=1.5, std_type="NA2XS2Y 1x240 RM/25 12/20 kV", name=f"L{k}")
    pp.create_loads(net, mv[1:], p_mw=0.8, q_mvar=0.25, name=[f"load{k}" for k in range(1, n)])
    return net


def _pandapower_vm(net: Any) -> Any:
    """Return pandapower's bus voltages (NaN where a bus is not supplied)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, algorithm="nr", tolerance_mva=1e-9, max_iteration=50, calculate_voltage_angles=True)
    return net.res_bus.vm_pu


def _our_vm(grid: Grid, net: Any) -> np.ndarray:
    """Return our node voltages in the order of the net's bus table."""
    result = run_power_flow(grid, symmetric=True)
    assert result.converged, result.error
    source_index = grid.extra["node"]["source_index"]
    rows = np.argsort(source_index)[np.searchsorted(np.sort(source_index), net.bus.index.to_numpy())]
    return result.output["node"]["u_pu"][rows]


def _assert_same_voltages(net: Any, tol: float) -> None:
    grid = from_pandapower(net)
    ours = _our_vm(grid, net)
    ref = _pandapower_vm(net).to_numpy()
    supplied = np.isfinite(ref)
    assert np.max(np.abs(ours[supplied] - ref[supplied])) <= tol
    # buses pandapower leaves unsupplied are de-energised in power-grid-model
    assert np.all(ours[~supplied] == 0)


def test_names_are_kept_and_unnamed_elements_get_table_and_index() -> None:
    net = _feeder(3)
    net.load.loc[net.load.index[0], "name"] = None
    net.line.loc[net.line.index[1], "name"] = ""
    grid = from_pandapower(net)
    assert list(grid.names["node"]) == ["HV", "MV0", "MV1", "MV2"]
    assert list(grid.names["transformer"]) == ["T1"]
    assert list(grid.names["line"]) == ["L0", "line 1"]
    assert list(grid.names["sym_load"]) == [f"load {net.load.index[0]}", "load2"]
    assert list(grid.names["source"]) == ["grid"]


def test_open_switches_set_branch_statuses_and_the_power_flow_follows() -> None:
    net = _feeder(5)
    # a closed bus-bus coupler, an open one, and an open line switch
    coupler = pp.create_bus(net, 20.0, name="coupler")
    spare = pp.create_bus(net, 20.0, name="spare")
    pp.create_switch(net, 2, coupler, et="b", closed=True, name="Q1")
    pp.create_switch(net, 3, spare, et="b", closed=False, name="Q2")
    pp.create_load(net, coupler, p_mw=0.3, q_mvar=0.1)
    pp.create_load(net, spare, p_mw=0.3, q_mvar=0.1)
    line = int(net.line.index[2])
    pp.create_switch(net, int(net.line.to_bus[line]), line, et="l", closed=False, name="F1")
    grid = from_pandapower(net)

    lines = grid.input["line"]
    row = int(np.flatnonzero(grid.extra["line"]["source_index"] == line)[0])
    assert (lines["from_status"][row], lines["to_status"][row]) == (1, 0)
    links = grid.input["link"]
    status = dict(zip(grid.names["link"], zip(links["from_status"], links["to_status"], strict=True), strict=True))
    assert status == {"Q1": (1, 1), "Q2": (0, 0)}
    _assert_same_voltages(net, TOL_PQ_PU)


def test_out_of_service_bus_de_energises_what_is_attached() -> None:
    net = _feeder(5)
    last = int(net.bus.index[-1])
    net.bus.loc[last, "in_service"] = False
    grid = from_pandapower(net)
    line_row = int(np.flatnonzero(grid.extra["line"]["source_index"] == net.line.index[-1])[0])
    # as in pandapower, the line stays connected at its in-service end (and draws its charging current)
    assert grid.input["line"]["from_status"][line_row] == 1
    assert grid.input["line"]["to_status"][line_row] == 0
    load_row = int(np.flatnonzero(grid.extra["sym_load"]["source_index"] == net.load.index[-1])[0])
    assert grid.input["sym_load"]["status"][load_row] == 0
    _assert_same_voltages(net, TOL_PQ_PU)


def test_voltage_dependent_loads_split_into_parts_and_solve_like_pandapower() -> None:
    # pandapower 3.5.6 mis-handles different load types on one bus, so each voltage-dependent
    # load sits on a bus of its own
    net = _feeder(6)
    mixed = net.load.index[2]
    net.load.loc[mixed, ["const_z_p_percent", "const_i_p_percent", "const_z_q_percent", "const_i_q_percent"]] = [
        30.0,
        20.0,
        50.0,
        10.0,
    ]
    net.load.loc[net.load.index[4], ["const_z_p_percent", "const_z_q_percent"]] = [100.0, 100.0]
    grid = from_pandapower(net)
    loads = grid.input["sym_load"]
    mine = grid.extra["sym_load"]["source_index"] == mixed
    p = {LoadGenType(t): v for t, v in zip(loads["type"][mine], loads["p_specified"][mine], strict=True)}
    q = {LoadGenType(t): v for t, v in zip(loads["type"][mine], loads["q_specified"][mine], strict=True)}
    assert p == pytest.approx(
        {LoadGenType.const_power: 0.4e6, LoadGenType.const_current: 0.16e6, LoadGenType.const_impedance: 0.24e6}
    )
    assert q == pytest.approx(
        {LoadGenType.const_power: 0.1e6, LoadGenType.const_current: 0.025e6, LoadGenType.const_impedance: 0.125e6}
    )
    _assert_same_voltages(net, TOL_PQ_PU)


@pytest.mark.parametrize("table", ["ward", "xward", "impedance", "dcline"])
def test_unsupported_tables_raise_naming_the_table(table: str) -> None:
    net = _feeder(3)
    if table == "ward":
        pp.create_ward(net, 2, ps_mw=0.1, qs_mvar=0.0, pz_mw=0.0, qz_mvar=0.0)
    elif table == "xward":
        pp.create_xward(net, 2, ps_mw=0.1, qs_mvar=0.0, pz_mw=0.0, qz_mvar=0.0, r_ohm=0.1, x_ohm=1.0, vm_pu=1.0)
    elif table == "impedance":
        pp.create_impedance(net, 2, 3, rft_pu=0.01, xft_pu=0.05, sn_mva=10.0)
    else:
        far = pp.create_bus(net, 20.0)
        pp.create_ext_grid(net, far)
        pp.create_dcline(net, 2, far, p_mw=1.0, loss_percent=1.0, loss_mw=0.1, vm_from_pu=1.0, vm_to_pu=1.0)
    with pytest.raises(GridSourceError, match=f"'{table}'"):
        from_pandapower(net, source="test.json")


def test_phase_shifting_tap_raises() -> None:
    net = _feeder(3)
    net.trafo.loc[0, ["tap_side", "tap_pos", "tap_neutral", "tap_step_percent", "tap_step_degree"]] = [
        "hv",
        2,
        0,
        1.5,
        5.0,
    ]
    with pytest.raises(GridSourceError, match="phase-shifting") as info:
        from_pandapower(net, source="test.json")
    assert "T1" in str(info.value)


def test_storage_is_a_load_in_consumer_convention() -> None:
    net = _feeder(4)
    pp.create_storage(net, 2, p_mw=0.6, max_e_mwh=2.0, q_mvar=0.1, name="charging")
    pp.create_storage(net, 3, p_mw=-0.4, max_e_mwh=2.0, name="discharging")
    grid = from_pandapower(net)
    kinds = grid.extra["sym_load"]["kind"] == "storage"
    assert list(grid.names["sym_load"][kinds]) == ["charging", "discharging"]
    assert grid.input["sym_load"]["p_specified"][kinds] == pytest.approx([0.6e6, -0.4e6])
    assert grid.input["sym_load"]["q_specified"][kinds] == pytest.approx([0.1e6, 0.0])
    _assert_same_voltages(net, TOL_PQ_PU)


def _pv_grid() -> Any:
    """A 110 kV ring with voltage-controlled generators on buses merged by bus-bus switches."""
    net = pp.create_empty_network()
    b = pp.create_buses(net, 6, 110.0, name=[f"B{k}" for k in range(6)])
    pp.create_ext_grid(net, b[0], vm_pu=1.03)
    for k in range(4):
        pp.create_line(net, b[k], b[k + 1], length_km=20.0, std_type="149-AL1/24-ST1A 110.0")
    pp.create_line(net, b[4], b[0], length_km=30.0, std_type="149-AL1/24-ST1A 110.0")
    pp.create_loads(net, b[1:5], p_mw=25.0, q_mvar=8.0)
    # bus 5 is a second busbar of bus 3: two generators with one set-point on one electrical node
    pp.create_switch(net, b[3], b[5], et="b", closed=True)
    pp.create_gen(net, b[3], p_mw=20.0, vm_pu=1.01, name="G1")
    pp.create_gen(net, b[5], p_mw=15.0, vm_pu=1.01, name="G2")
    pp.create_gen(net, b[3], p_mw=5.0, vm_pu=1.01, name="G3")
    return net


def test_generators_sharing_an_electrical_node_hold_one_set_point_like_pandapower() -> None:
    net = _pv_grid()
    grid = from_pandapower(net)
    on = dict(zip(grid.names["voltage_regulator"], grid.input["voltage_regulator"]["status"], strict=True))
    # the first generator's node keeps its regulators; the linked busbar's is switched off
    assert on == {"G1": 1, "G2": 0, "G3": 1}
    _assert_same_voltages(net, TOL_PV_PU)


def test_generator_linked_to_the_external_grid_leaves_the_voltage_to_it() -> None:
    net = _pv_grid()
    coupler = pp.create_bus(net, 110.0, name="coupler")
    pp.create_switch(net, 0, coupler, et="b", closed=True)
    pp.create_gen(net, coupler, p_mw=10.0, vm_pu=1.03, name="G4")
    grid = from_pandapower(net)
    on = dict(zip(grid.names["voltage_regulator"], grid.input["voltage_regulator"]["status"], strict=True))
    assert on["G4"] == 0
    _assert_same_voltages(net, TOL_PV_PU)


def test_switching_keeps_dead_bus_ends_open_and_re_resolves_voltage_control() -> None:
    net = _pv_grid()
    net.bus.loc[4, "in_service"] = False
    grid = from_pandapower(net)
    same = grid.with_switch_states(grid.switches["closed"])
    for component, fields in (
        ("line", ("from_status", "to_status")),
        ("link", ("from_status", "to_status")),
        ("voltage_regulator", ("status",)),
    ):
        for fld in fields:
            assert np.array_equal(same.input[component][fld], grid.input[component][fld]), component
    line_to_dead_bus = int(np.flatnonzero(grid.extra["line"]["source_index"] == 3)[0])
    assert same.input["line"]["to_status"][line_to_dead_bus] == 0
    # opening the bus coupler splits the electrical node: both busbars' generators regulate again
    opened = grid.with_switch_states(np.zeros(grid.switches.size, dtype=np.int8))
    on = dict(zip(opened.names["voltage_regulator"], opened.input["voltage_regulator"]["status"], strict=True))
    assert on == {"G1": 1, "G2": 1, "G3": 1}
    net.switch["closed"] = False
    ref = _pandapower_vm(net).to_numpy()
    ours = _our_vm(opened, net)
    supplied = np.isfinite(ref)
    assert np.max(np.abs(ours[supplied] - ref[supplied])) <= TOL_PV_PU
