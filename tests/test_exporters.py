"""Exporters and the power-grid-model JSON importer, checked against pandapower and power-grid-model.

Every voltage comparison is against another tool's own solution:

- SimBench → OpenDSO → pandapower is solved by ``pandapower.runpp`` and compared with
  ``runpp`` on the original SimBench network: the exporter against pandapower's reading of the
  original data;
- a grid with a three-winding transformer, a voltage-controlled generator, a shunt, static
  generators and switches (pandapower's ``example_multivoltage``) makes the same round trip;
- a hand-built power-grid-model grid (reversed tap direction, open branch end, link,
  constant-current load, constant-impedance generator, shunt) exported to pandapower is
  compared with power-grid-model's own power flow;
- the PGM JSON file is read by power-grid-model's own deserialiser and solved by
  power-grid-model directly, independently of OpenDSO's reader.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from power_grid_model import LoadGenType, PowerGridModel, WindingType, initialize_array
from power_grid_model.utils import json_deserialize_from_file

from opendso.calc.powerflow import run_power_flow
from opendso.errors import GridSourceError, InputError
from opendso.grid import from_pandapower, read_pgm_json, to_pandapower, write_pandapower_json, write_pgm_json
from opendso.grid.io import atomic
from opendso.grid.model import Grid
from opendso.grid.sources import load_grid, load_simbench_net

pp = pytest.importorskip("pandapower")

SIMBENCH_CODE = "1-MV-urban--0-sw"

#: pandapower against pandapower on the same data: anything above solver tolerance is a mapping error.
PP_ROUND_TRIP_TOL_PU = 1e-6
#: pandapower (exported, pi transformer model) against power-grid-model (source grid): both converge
#: to 1e-10 MVA / 1e-12 and agree to 1e-10 p.u.; the margin covers the link (power-grid-model: a tiny
#: impedance; pandapower: fused buses).
PP_VS_PGM_TOL_PU = 1e-8
#: power-grid-model on the file against power-grid-model on the grid: same solver, same data.
PGM_FILE_TOL_PU = 1e-12


def _runpp(net: Any, **options: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=1e-10, calculate_voltage_angles=True, max_iteration=50, **options)


def _assert_same_voltages(reference: Any, exported: Any, node_ids: np.ndarray) -> None:
    """Bus ``k`` of the reference is node ``node_ids[k]`` of the exported network."""
    vm_ref = reference.res_bus["vm_pu"].to_numpy()
    vm_exp = exported.res_bus["vm_pu"].loc[node_ids].to_numpy()
    va_ref = reference.res_bus["va_degree"].to_numpy()
    va_exp = exported.res_bus["va_degree"].loc[node_ids].to_numpy()
    np.testing.assert_array_equal(np.isnan(vm_ref), np.isnan(vm_exp))
    assert np.nanmax(np.abs(vm_ref - vm_exp)) < PP_ROUND_TRIP_TOL_PU
    # angles in degrees; 1e-6 p.u. of a radian is 5.7e-5 degrees
    assert np.nanmax(np.abs(va_ref - va_exp)) < np.rad2deg(PP_ROUND_TRIP_TOL_PU)


def _assert_same_arrays(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype
    for name in a.dtype.names or ():
        if a[name].dtype.kind == "f":
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # NaN equals NaN here
        else:
            assert np.array_equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def simbench_net() -> Any:
    net = load_simbench_net(SIMBENCH_CODE)
    # SimBench leaves the changer type empty; pandapower then ignores the tap (see NOTES.md)
    net.trafo["tap_changer_type"] = "Ratio"
    return net


@pytest.fixture(scope="module")
def simbench_grid(simbench_net: Any) -> Grid:
    return from_pandapower(simbench_net, name=f"simbench:{SIMBENCH_CODE}")


# -- (a) SimBench → pandapower ---------------------------------------------------------------------


def test_simbench_export_solves_like_the_original(simbench_net: Any, simbench_grid: Grid) -> None:
    exported = to_pandapower(simbench_grid)
    assert len(exported.bus) == len(simbench_net.bus)
    assert len(exported.switch) == len(simbench_net.switch)
    assert list(exported.bus["name"]) == list(simbench_net.bus["name"])
    reference = copy.deepcopy(simbench_net)
    _runpp(reference)
    _runpp(exported)
    _assert_same_voltages(reference, exported, simbench_grid.component("node")["id"])


def test_simbench_source_string_matches_pandapower_import(simbench_grid: Grid) -> None:
    grid = load_grid(f"simbench:{SIMBENCH_CODE}")
    _assert_same_arrays(grid.component("transformer"), simbench_grid.component("transformer"))


def test_pandapower_json_is_written_atomically_and_reads_back(simbench_grid: Grid, tmp_path: Path) -> None:
    path = tmp_path / "net.json"
    write_pandapower_json(simbench_grid, path)
    assert [p.name for p in tmp_path.iterdir()] == ["net.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = pp.from_json(str(path))
    assert len(net.line) == simbench_grid.count("line")
    assert set(net.trafo["tap_changer_type"]) == {"Ratio"}


# -- (b) PGM JSON round trip ------------------------------------------------------------------------


def test_pgm_json_round_trip_keeps_arrays_names_and_coordinates(simbench_grid: Grid, tmp_path: Path) -> None:
    path = tmp_path / "grid.json"
    write_pgm_json(simbench_grid, path)
    back = read_pgm_json(path, f"pgm:{path}")
    original = simbench_grid.pgm_input(with_sensors=True)
    assert set(back.pgm_input(with_sensors=True)) == set(original)
    for component, array in original.items():
        _assert_same_arrays(array, back.component(component))
        assert list(back.names_of(component)) == list(simbench_grid.names_of(component)), component
    np.testing.assert_array_equal(back.node_xy, simbench_grid.node_xy)
    assert set(back.sensors) == set(simbench_grid.sensors)
    assert back.switches.size == 0
    assert back.count("link") == simbench_grid.count("link")
    assert list(back.extra["line"]["kind"]) == list(simbench_grid.extra["line"]["kind"])


def test_pgm_json_file_solves_in_power_grid_model_like_our_grid(simbench_grid: Grid, tmp_path: Path) -> None:
    path = tmp_path / "grid.json"
    write_pgm_json(simbench_grid, path)
    dataset = json_deserialize_from_file(path)  # power-grid-model's own reader, extra info and all
    assert set(map(str, dataset)) == set(simbench_grid.pgm_input(with_sensors=True))
    inputs = {c: a for c, a in dataset.items() if "sensor" not in str(c)}
    theirs = PowerGridModel(inputs).calculate_power_flow(error_tolerance=1e-10)
    ours = run_power_flow(simbench_grid, error_tolerance=1e-10)
    assert ours.converged
    np.testing.assert_array_equal(theirs["node"]["id"], ours.output["node"]["id"])
    assert np.max(np.abs(theirs["node"]["u_pu"] - ours.output["node"]["u_pu"])) < PGM_FILE_TOL_PU
    assert np.max(np.abs(theirs["node"]["u_angle"] - ours.output["node"]["u_angle"])) < PGM_FILE_TOL_PU


def test_pgm_json_without_extra_info_names_elements_by_id(tmp_path: Path) -> None:
    path = tmp_path / "plain.json"
    path.write_text(
        json.dumps(
            {
                "version": "1.0",
                "type": "input",
                "is_batch": False,
                "attributes": {"node": ["id", "u_rated"]},
                "data": {"node": [[1, 10500.0], {"id": 2, "u_rated": 10500.0, "name": "B"}]},
            }
        )
    )
    grid = read_pgm_json(path, "pgm:plain.json")
    assert list(grid.names_of("node")) == ["1", "B"]
    assert grid.name == "pgm:plain.json"
    assert np.isnan(grid.node_xy).all()
    assert grid.frequency_hz == 50.0


def test_load_grid_dispatches_pgm_source(simbench_grid: Grid, tmp_path: Path) -> None:
    path = tmp_path / "grid.json"
    write_pgm_json(simbench_grid, path)
    grid = load_grid(f"pgm:{path}")
    assert grid.count("node") == simbench_grid.count("node")


# -- (c) three-winding transformer, voltage-controlled generator, shunt ------------------------------


@pytest.fixture(scope="module")
def multivoltage_net() -> Any:
    import pandapower.networks as pn

    net = pn.example_multivoltage()
    # OpenDSO does not model impedance elements or extended wards; take them out of both sides
    net.impedance = net.impedance.iloc[0:0]
    net.xward = net.xward.iloc[0:0]
    for table in ("trafo3w", "gen", "shunt", "sgen", "switch"):
        assert len(net[table]), table
    return net


def test_multivoltage_round_trip_solves_like_the_original(multivoltage_net: Any) -> None:
    grid = from_pandapower(multivoltage_net, name="example_multivoltage")
    assert grid.count("three_winding_transformer") == 1
    assert grid.count("voltage_regulator") == 1
    exported = to_pandapower(grid)
    assert len(exported.gen) == 1
    assert len(exported.trafo3w) == 1
    assert len(exported.shunt) == 1
    reference = copy.deepcopy(multivoltage_net)
    _runpp(reference)
    _runpp(exported)
    _assert_same_voltages(reference, exported, grid.component("node")["id"])
    gen_id = grid.find("Gas turbine")[1]
    assert abs(exported.res_gen.loc[gen_id, "q_mvar"] - reference.res_gen["q_mvar"].iloc[0]) < 1e-6


# -- exporter against power-grid-model on features SimBench does not use -----------------------------


def _feature_grid() -> Grid:
    """A 10/0.4 kV grid using power-grid-model features SimBench does not use.

    Each voltage-dependent load sits on a bus of its own: pandapower 3.5 averages the ZIP
    percentages of all loads on a bus without weighting them by power and applies them to the
    bus's whole injection (``build_bus._calc_loads_and_add_on_ppc``), so a constant-power and a
    constant-impedance load on one bus solve wrongly there (1e-3 p.u. off on a 10 kV test feeder).
    """
    node = initialize_array("input", "node", 8)
    node["id"] = [1, 2, 3, 4, 5, 6, 7, 8]
    node["u_rated"] = [10e3, 10e3, 0.4e3, 0.4e3, 10e3, 0.4e3, 0.4e3, 0.4e3]
    line = initialize_array("input", "line", 4)
    line["id"] = [10, 11, 12, 13]
    line["from_node"] = [1, 2, 3, 3]
    line["to_node"] = [2, 5, 7, 8]
    line["from_status"] = 1
    line["to_status"] = [1, 0, 1, 1]  # line 11 is open at its far end: charging current still flows
    line["r1"] = [0.2, 0.3, 0.02, 0.03]
    line["x1"] = [0.1, 0.2, 0.01, 0.01]
    line["c1"] = [4e-7, 5e-7, 1e-8, 0.0]
    line["tan1"] = [0.01, 0.0, 0.0, 0.0]
    line["i_n"] = [300.0, 200.0, 250.0, 250.0]
    trafo = initialize_array("input", "transformer", 2)
    trafo["id"] = [20, 21]
    trafo["from_node"] = 2
    trafo["to_node"] = [3, 6]
    trafo["from_status"] = [1, 0]  # node 6 hangs on a transformer switched off at its from end
    trafo["to_status"] = 1
    trafo["u1"] = 10.5e3
    trafo["u2"] = 0.42e3
    trafo["sn"] = 630e3
    trafo["uk"] = 0.06
    trafo["pk"] = 6e3
    trafo["i0"] = 0.01
    trafo["p0"] = 1e3
    trafo["winding_from"] = WindingType.delta
    trafo["winding_to"] = WindingType.wye_n
    trafo["clock"] = 5
    trafo["tap_side"] = 0
    trafo["tap_pos"] = 2
    trafo["tap_min"] = 5  # power-grid-model: tap_max < tap_min turns the tap the other way
    trafo["tap_max"] = -5
    trafo["tap_nom"] = 0
    trafo["tap_size"] = 262.5
    link = initialize_array("input", "link", 1)
    link["id"] = 30
    link["from_node"] = 3
    link["to_node"] = 4
    link["from_status"] = 1
    link["to_status"] = 1
    source = initialize_array("input", "source", 1)
    source["id"] = 40
    source["node"] = 1
    source["status"] = 1
    source["u_ref"] = 1.02
    source["u_ref_angle"] = 0.0
    source["sk"] = 1e15  # stiff, as pandapower's ext_grid
    load = initialize_array("input", "sym_load", 3)
    load["id"] = [50, 51, 52]
    load["node"] = [4, 7, 8]
    load["status"] = 1
    load["type"] = [LoadGenType.const_power, LoadGenType.const_current, LoadGenType.const_impedance]
    load["p_specified"] = [150e3, 80e3, 60e3]
    load["q_specified"] = [40e3, 20e3, 10e3]
    gen = initialize_array("input", "sym_gen", 2)
    gen["id"] = [60, 61]
    gen["node"] = [8, 2]
    gen["status"] = 1
    gen["type"] = [LoadGenType.const_impedance, LoadGenType.const_power]
    gen["p_specified"] = [50e3, 200e3]
    gen["q_specified"] = [0.0, -30e3]
    shunt = initialize_array("input", "shunt", 1)
    shunt["id"] = 70
    shunt["node"] = 2
    shunt["status"] = 1
    shunt["g1"] = 1e-5
    shunt["b1"] = 2e-4
    shunt["g0"] = 1e-5
    shunt["b0"] = 2e-4
    data = {
        "node": node,
        "line": line,
        "transformer": trafo,
        "link": link,
        "source": source,
        "sym_load": load,
        "sym_gen": gen,
        "shunt": shunt,
    }
    names = {"node": np.array([f"N{i}" for i in node["id"]], dtype=object)}
    return Grid(name="features", input=data, names=names)


def test_export_of_pgm_features_solves_like_power_grid_model(tmp_path: Path) -> None:
    grid = _feature_grid()
    # through the file, so the reader's output is what gets exported
    path = tmp_path / "features.json"
    write_pgm_json(grid, path)
    grid = read_pgm_json(path, "pgm:features.json")
    result = run_power_flow(grid, error_tolerance=1e-12)
    assert result.converged
    net = to_pandapower(grid)
    assert list(net.bus["name"]) == [f"N{i}" for i in range(1, 9)]
    assert net.trafo.loc[20, "tap_step_percent"] < 0  # the reversed tap direction
    assert net.trafo.loc[20, "tap_changer_type"] == "Ratio"
    assert net.trafo.loc[20, "vector_group"] == "Dyn5"
    assert set(net.switch["et"]) == {"b", "l", "t"}
    assert not net.switch.loc[net.switch["et"] == "l", "closed"].any()
    # power-grid-model puts the magnetising admittance in a pi arrangement; pandapower's default is a
    # T (1.8e-6 p.u. apart here with i0 = 1 %), so the reference runs pandapower's pi model
    _runpp(net, trafo_model="pi")
    node = result.output["node"]
    energized = node["energized"] == 1
    vm = net.res_bus["vm_pu"].loc[node["id"]].to_numpy()
    va = np.deg2rad(net.res_bus["va_degree"].loc[node["id"]].to_numpy())
    assert np.isnan(vm[~energized]).all()
    assert np.max(np.abs(vm[energized] - node["u_pu"][energized])) < PP_VS_PGM_TOL_PU
    assert np.max(np.abs(va[energized] - node["u_angle"][energized])) < PP_VS_PGM_TOL_PU


def test_export_rejects_components_pandapower_cannot_hold() -> None:
    grid = _feature_grid()
    branch = initialize_array("input", "generic_branch", 1)
    branch["id"] = 99
    with pytest.raises(InputError, match="generic_branch"):
        to_pandapower(grid.with_input(generic_branch=branch))


# -- (d) bad input and atomic writes -----------------------------------------------------------------


def _write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(content)
    return path


_VALID_NODE = {"id": 1, "u_rated": 10e3}


@pytest.mark.parametrize(
    ("content", "element", "fld", "message"),
    [
        pytest.param('{"version": "1.0", "data": {', None, None, "malformed JSON", id="malformed"),
        pytest.param("[1, 2, 3]", None, None, "root is not an object", id="json-list"),
        pytest.param('{"buses": []}', None, "version", "not a power-grid-model dataset", id="not-a-dataset"),
        pytest.param(
            json.dumps({"version": "1.0", "type": "update", "is_batch": False, "attributes": {}, "data": {}}),
            None,
            "type",
            "expected 'input'",
            id="update-dataset",
        ),
        pytest.param(
            json.dumps(
                {
                    "version": "1.0",
                    "type": "input",
                    "is_batch": False,
                    "attributes": {},
                    "data": {"node": [_VALID_NODE], "busbar": [{"id": 2}]},
                }
            ),
            "busbar",
            None,
            "unknown power-grid-model component",
            id="unknown-component",
        ),
        pytest.param(
            json.dumps(
                {
                    "version": "1.0",
                    "type": "input",
                    "is_batch": False,
                    "attributes": {},
                    "data": {"node": [{"id": 1, "u_rate": 10e3}]},
                }
            ),
            "node 1",
            "u_rate",
            "unknown attribute",
            id="unknown-attribute",
        ),
        pytest.param(
            json.dumps(
                {
                    "version": "1.0",
                    "type": "input",
                    "is_batch": False,
                    "attributes": {"node": ["id", "u_rated", "voltage"]},
                    "data": {"node": [[1, 10e3, 1]]},
                }
            ),
            "node",
            "voltage",
            "unknown attribute",
            id="unknown-listed-attribute",
        ),
        pytest.param(
            json.dumps(
                {
                    "version": "1.0",
                    "type": "input",
                    "is_batch": False,
                    "attributes": {},
                    "data": {"node": [_VALID_NODE, {"id": 2, "u_rated": "ten kV"}]},
                }
            ),
            "node 2",
            "u_rated",
            "Number expected",
            id="bad-value",
        ),
        pytest.param(
            json.dumps(
                {"version": "1.0", "type": "input", "is_batch": False, "attributes": {}, "data": {"fault": [{"id": 5}]}}
            ),
            "fault",
            None,
            "not supported",
            id="unsupported-component",
        ),
    ],
)
def test_read_pgm_json_names_what_is_wrong(
    tmp_path: Path, content: str, element: str | None, fld: str | None, message: str
) -> None:
    path = _write(tmp_path, content)
    source = f"pgm:{path}"
    with pytest.raises(GridSourceError, match=message) as info:
        read_pgm_json(path, source)
    error = info.value
    assert error.source == source
    assert str(path) in str(error)
    assert error.element == element
    assert error.field == fld


def test_read_pgm_json_lenient_mode_accepts_user_extra_info(tmp_path: Path) -> None:
    content = json.dumps(
        {
            "version": "1.0",
            "type": "input",
            "is_batch": False,
            "attributes": {},
            "data": {"node": [{"id": 1, "u_rated": 10e3, "guid": "abc"}]},
        }
    )
    path = _write(tmp_path, content)
    with pytest.raises(GridSourceError):
        read_pgm_json(path, "pgm:bad.json")
    grid = read_pgm_json(path, "pgm:bad.json", strict=False)
    assert grid.count("node") == 1


def test_failed_serialisation_leaves_existing_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "grid.json"
    path.write_text("previous content")
    broken = Grid(name="broken", input={"node": np.zeros(2, dtype=[("id", "i4"), ("height", "f8")])}, names={})
    with pytest.raises(InputError, match="broken"):
        write_pgm_json(broken, path)
    assert path.read_text() == "previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.json"]


def test_failed_write_removes_the_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "grid.json"
    path.write_text("previous content")

    def fail(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", fail)
    with pytest.raises(InputError, match="No space left"):
        write_pgm_json(_feature_grid(), path)
    assert path.read_text() == "previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.json"]


def test_frequency_travels_in_the_file(tmp_path: Path) -> None:
    from dataclasses import replace

    grid = replace(_feature_grid(), frequency_hz=60.0)
    path = tmp_path / "grid.json"
    write_pgm_json(grid, path)
    assert read_pgm_json(path, "pgm:grid.json").frequency_hz == 60.0
    assert to_pandapower(grid).f_hz == 60.0


def test_exported_geo_is_pandapower_geojson(simbench_grid: Grid) -> None:
    net = to_pandapower(simbench_grid)
    geo = net.bus["geo"].dropna()
    assert len(geo) == int(np.isfinite(simbench_grid.node_xy).all(axis=1).sum())
    first = json.loads(geo.iloc[0])
    assert first["type"] == "Point"
    np.testing.assert_allclose(first["coordinates"], simbench_grid.node_xy[0])
    assert isinstance(net.bus, pd.DataFrame)
