"""Behaviour of the short-circuit calculation on a small hand-built feeder.

The agreement with pandapower on real grids is in ``test_reference_shortcircuit.py``; here the
checks are behaviour (selection, errors, de-energised nodes, one batch call) and hand
formulas: a fault at the source bus draws S''k / (sqrt(3) Un) whatever c is, and on a radial
feeder the transformer carries the whole fault current.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pandapower as pp
import pytest
from power_grid_model import PowerGridModel

from opendso.calc.shortcircuit import Case, FaultType, run_short_circuit, voltage_factor
from opendso.errors import InputError
from opendso.grid import from_pandapower
from opendso.grid.model import Grid

SK_MAX_MVA = 500.0
SK_MIN_MVA = 300.0


def _feeder(*, zero_sequence: bool = False) -> Grid:
    """20 kV source, 0.4 MVA 20/0.4 kV Dyn5 transformer, four LV cable sections, one bus behind an open switch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = pp.create_empty_network()
        mv = pp.create_bus(net, 20.0, name="MV")
        lv = [pp.create_bus(net, 0.4, name=f"LV{k}") for k in range(5)]
        pp.create_ext_grid(net, mv, s_sc_max_mva=SK_MAX_MVA, rx_max=0.1, s_sc_min_mva=SK_MIN_MVA, rx_min=0.1)
        pp.create_transformer(net, mv, lv[0], std_type="0.4 MVA 20/0.4 kV", name="T1")
        for k in range(1, 5):
            line = pp.create_line(net, lv[k - 1], lv[k], length_km=0.1, std_type="NAYY 4x150 SE", name=f"L{k}")
            if zero_sequence:
                net.line.loc[line, ["r0_ohm_per_km", "x0_ohm_per_km", "c0_nf_per_km"]] = [0.8, 0.3, 0.0]
        pp.create_switch(net, lv[3], net.line.index[-1], et="l", closed=False, name="S-open")
        pp.create_load(net, lv[2], p_mw=0.05, q_mvar=0.01)
    return from_pandapower(net, name="feeder")


@pytest.fixture(scope="module")
def feeder() -> Grid:
    return _feeder()


def test_fault_at_source_bus_draws_the_source_short_circuit_power(feeder: Grid) -> None:
    for case, sk in (("max", SK_MAX_MVA), ("min", SK_MIN_MVA)):
        result = run_short_circuit(feeder, case=case, nodes=["MV"])
        assert result.ik_a[0] == pytest.approx(sk * 1e6 / (math.sqrt(3) * 20e3), rel=1e-9)


def test_de_energised_node_is_reported_not_raised(feeder: Grid) -> None:
    result = run_short_circuit(feeder)
    by_name = dict(zip(result.node_names, result.energized.tolist(), strict=True))
    ik = result.ik_ka_by_name()
    assert by_name["LV4"] is False
    assert ik["LV4"] == 0.0
    assert all(by_name[n] and ik[n] > 0 for n in ("MV", "LV0", "LV1", "LV2", "LV3"))
    record = next(n for n in result.to_dict()["nodes"] if n["name"] == "LV4")
    assert record["energized"] is False


def test_selection_by_name_keeps_order_and_values(feeder: Grid) -> None:
    everything = run_short_circuit(feeder).ik_ka_by_name()
    selected = run_short_circuit(feeder, nodes=["LV3", "MV"])
    assert selected.node_names == ["LV3", "MV"]
    assert selected.ik_ka_by_name() == pytest.approx({"LV3": everything["LV3"], "MV": everything["MV"]}, rel=1e-12)


def test_unknown_node_name_is_named_in_the_error(feeder: Grid) -> None:
    with pytest.raises(InputError, match="no-such-bus"):
        run_short_circuit(feeder, nodes=["LV1", "no-such-bus"])


@pytest.mark.parametrize("fault_type", ["three_phase", "phase_to_phase"])
def test_minimum_is_below_maximum(feeder: Grid, fault_type: str) -> None:
    high = run_short_circuit(feeder, fault_type=fault_type, case="max")
    low = run_short_circuit(feeder, fault_type=fault_type, case="min")
    live = high.energized
    assert np.all(low.ik_a[live] < high.ik_a[live])


def test_phase_to_phase_is_sqrt3_over_2_of_three_phase(feeder: Grid) -> None:
    three = run_short_circuit(feeder, fault_type=FaultType.THREE_PHASE)
    two = run_short_circuit(feeder, fault_type=FaultType.PHASE_TO_PHASE)
    live = three.energized
    np.testing.assert_allclose(two.ik_a[live], three.ik_a[live] * math.sqrt(3) / 2, rtol=1e-9)


def test_radial_transformer_carries_the_whole_fault_current(feeder: Grid) -> None:
    result = run_short_circuit(feeder, nodes=["LV2"], branch_currents=True)
    assert result.branch_i_a is not None
    i_to = result.branch_i_a["transformer"][0, 0, 1]
    assert i_to == pytest.approx(result.ik_a[0], rel=1e-9)
    # LV-side current referred to 20 kV
    assert result.branch_i_a["transformer"][0, 0, 0] == pytest.approx(result.ik_a[0] * 0.4 / 20.0, rel=1e-6)
    branches = result.to_dict()["nodes"][0]["branches"]
    assert {b["name"] for b in branches} >= {"T1", "L1", "L2"}


def test_voltage_factor_follows_iec_60909_table_1() -> None:
    u = np.array([400.0, 20e3])
    assert voltage_factor(u, case=Case.MAX).tolist() == [1.10, 1.10]
    assert voltage_factor(u, case=Case.MAX, lv_tolerance_percent=6).tolist() == [1.05, 1.10]
    assert voltage_factor(u, case=Case.MIN).tolist() == [0.95, 1.00]
    with pytest.raises(InputError):
        voltage_factor(u, case="max", lv_tolerance_percent=8)


def test_ground_fault_without_zero_sequence_data_names_the_lines(feeder: Grid) -> None:
    with pytest.raises(InputError, match="L1"):
        run_short_circuit(feeder, fault_type="single_phase_to_ground")


def test_ground_faults_run_with_zero_sequence_data() -> None:
    grid = _feeder(zero_sequence=True)
    for fault_type in ("single_phase_to_ground", "two_phase_to_ground"):
        result = run_short_circuit(grid, fault_type=fault_type, nodes=["LV1", "LV3"])
        assert np.all(result.ik_a > 0)


def test_bad_fault_type_or_case_is_an_input_error(feeder: Grid) -> None:
    with pytest.raises(InputError, match="bogus"):
        run_short_circuit(feeder, fault_type="bogus")
    with pytest.raises(InputError, match="typical"):
        run_short_circuit(feeder, case="typical")


def test_all_nodes_in_one_batch_call_and_grid_untouched(feeder: Grid, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    original = PowerGridModel.calculate_short_circuit

    def counting(self: PowerGridModel, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("update_data"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PowerGridModel, "calculate_short_circuit", counting)
    sk_before = feeder.input["source"]["sk"].copy()
    result = run_short_circuit(feeder)
    assert len(calls) == 1
    assert calls[0]["fault"].shape == (feeder.count("node"), 1)
    assert result.ik_a.size == feeder.count("node")
    np.testing.assert_array_equal(feeder.input["source"]["sk"], sk_before)


def test_to_dict_is_json_ready(feeder: Grid) -> None:
    out = run_short_circuit(feeder, fault_type="phase_to_phase", case="min").to_dict()
    assert out["grid"] == "feeder"
    assert out["case"] == "min"
    assert out["fault_type"] == "phase_to_phase"
    assert {"name", "ik_ka", "energized"} <= set(out["nodes"][0])
    json.dumps(out)
