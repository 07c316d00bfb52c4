"""The OpenDSS importer against the OpenDSS engine, and its errors for bad input.

Each folder under ``tests/data/opendss/`` with a ``params.json`` is a reference case whose
``expected.json`` was written by the OpenDSS engine (``generate_expected.py``); the test imports
the circuit, runs power-grid-model's power flow and compares every phase voltage with the
engine's, within the case's ``atol_u_pu``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from opendso.calc.powerflow import run_power_flow
from opendso.errors import GridSourceError
from opendso.grid import read_opendss
from opendso.grid.model import SIDE_FROM, SIDE_TO
from opendso.grid.sources import load_grid

DATA = Path(__file__).parent / "data" / "opendss"
CASES = sorted(p.parent for p in DATA.glob("*/params.json"))
BAD = DATA / "bad"


def _case(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    params = json.loads((folder / "params.json").read_text())
    expected = json.loads((folder / "expected.json").read_text())
    return params, expected


def _load(folder: Path, params: dict[str, Any]) -> Any:
    return load_grid(f"opendss:{folder / params['master']}")


@pytest.mark.parametrize(
    ("folder", "symmetric"),
    [
        pytest.param(folder, sym, id=f"{folder.name}-{'sym' if sym else 'asym'}")
        for folder in CASES
        for sym in json.loads((folder / "params.json").read_text())["symmetric"]
    ],
)
def test_power_flow_matches_opendss(folder: Path, symmetric: bool) -> None:
    params, expected = _case(folder)
    grid = _load(folder, params)
    result = run_power_flow(grid, symmetric=symmetric)
    assert result.converged, result.error
    u = result.node_u_pu()
    names = list(grid.names_of("node"))
    assert sorted(names) == sorted(expected["u_pu"])
    worst = 0.0
    for bus, phases in expected["u_pu"].items():
        row = names.index(bus)
        for node, value in phases.items():
            ours = u[row] if symmetric else u[row, int(node) - 1]
            worst = max(worst, abs(float(ours) - value))
    assert worst <= params["atol_u_pu"], f"max |dU| = {worst:.3e} p.u."


def test_mv_feeder_elements_names_ids_and_coordinates() -> None:
    grid = load_grid(f"opendss:{DATA / 'mv_feeder' / 'master.dss'}")
    names = dict(grid.names)
    assert list(names["line"]) == ["Line.l1", "Line.l2", "Line.l3", "Line.l4", "Line.lv1"]
    assert list(names["transformer"]) == ["Transformer.t1"]
    assert list(names["source"]) == ["Vsource.source"]
    assert sorted(names["sym_gen"]) == ["Generator.g1", "PVSystem.pv1"]
    assert "Capacitor.c1" in set(names["shunt"])
    ids = np.concatenate([a["id"] for a in grid.input.values()])
    assert np.unique(ids).size == ids.size
    # u_rated from the voltage bases; coordinates from Buscoords
    node = grid.component("node")
    row = list(grid.names_of("node")).index("lv2")
    assert node["u_rated"][row] == pytest.approx(400.0)
    np.testing.assert_allclose(grid.node_xy[row], [8180.0, -20.0])
    # the Vsource's short-circuit data travel with the source (MVAsc3=400 in the file)
    assert grid.extra["source"]["sk_max_va"][0] == pytest.approx(400e6)
    # the delta load is flagged, the tap is on the HV side (0.975 = 4 steps of 0.625 % down)
    loads = grid.extra["sym_load"]
    assert loads["connection"][list(names["sym_load"]).index("Load.mv_b4")] == "delta"
    trafo = grid.component("transformer")[0]
    assert (trafo["tap_side"], trafo["tap_pos"]) == (0, -4)
    assert trafo["tap_size"] == pytest.approx(20e3 * 0.2 / 32)


def test_ids_are_stable_between_reads() -> None:
    path = DATA / "lv_unbalanced" / "master.dss"
    first = read_opendss(path, "a")
    second = read_opendss(path, "b")
    for component, array in first.input.items():
        np.testing.assert_array_equal(array["id"], second.input[component]["id"])
        np.testing.assert_array_equal(first.names_of(component), second.names_of(component))


def test_unbalanced_feeder_uses_asym_components() -> None:
    grid = load_grid(f"opendss:{DATA / 'lv_unbalanced' / 'master.dss'}")
    asym_lines = dict(zip(grid.names_of("asym_line"), grid.extra["asym_line"]["phases"], strict=True))
    assert asym_lines == {"Line.mv1": "abc", "Line.o1": "abc", "Line.two": "ac", "Line.one": "b"}
    assert "Load.shop" in set(grid.names_of("sym_load"))
    loads = grid.component("asym_load")
    h2 = list(grid.names_of("asym_load")).index("Load.h2")
    np.testing.assert_allclose(loads["p_specified"][h2], [0.0, 4e3, 0.0])
    phases = dict(zip(grid.names_of("node"), grid.extra["node"]["phases"], strict=True))
    assert phases["s1"] == "b"
    assert phases["t1"] == "ac"


def test_switches_become_switch_rows() -> None:
    grid = load_grid(f"opendss:{DATA / 'switches' / 'master.dss'}")
    lines = list(grid.names_of("line"))
    line_ids = grid.component("line")["id"]
    by_name = {str(n): s for n, s in zip(grid.switch_names, grid.switches, strict=True)}
    assert set(by_name) == {"Line.sw_a", "Line.nop", "Line.b2_b3"}
    assert by_name["Line.sw_a"]["closed"] == 1
    assert by_name["Line.nop"]["closed"] == 0
    assert by_name["Line.nop"]["side"] == SIDE_FROM
    assert by_name["Line.b2_b3"]["side"] == SIDE_TO
    assert by_name["Line.nop"]["element"] == line_ids[lines.index("Line.nop")]
    kinds = dict(zip(grid.switch_names, grid.switch_kinds, strict=True))
    assert kinds == {"Line.sw_a": "switch", "Line.nop": "switch", "Line.b2_b3": "terminal"}
    spare = lines.index("Line.spare")
    assert not grid.extra["line"]["in_service"][spare]
    assert grid.component("line")["from_status"][spare] == 0
    # closing the normally-open point through the grid's own switch states
    closed = grid.with_switch_states(np.ones(grid.switches.size))
    assert closed.component("line")["from_status"][lines.index("Line.nop")] == 1


# -- bad input ---------------------------------------------------------------------------------------


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.dss"
    with pytest.raises(GridSourceError, match=r"nowhere\.dss"):
        load_grid(f"opendss:{missing}")
    with pytest.raises(GridSourceError, match=r"file not found: .*nowhere\.dss"):
        read_opendss(missing, f"opendss:{missing}")


@pytest.mark.parametrize(
    ("file", "element", "where", "message"),
    [
        ("syntax_error.dss", "Line.l1", r"syntax_error\.dss, line 4", "inline math"),
        ("unknown_element.dss", "Fooble.f1", r"unknown_element\.dss, line 4", "Fooble"),
        ("undefined_linecode.dss", "Line.l7", r"undefined_linecode_lines\.dss, line 2", "no_such_code"),
        ("unsupported_element.dss", "Storage.bat1", None, "not supported"),
        ("phase_to_phase_load.dss", "Load.ll", None, "phase-to-phase"),
        ("no_voltage_bases.dss", "bus sourcebus", None, "VoltageBases"),
    ],
)
def test_malformed_circuit_names_file_and_element(file: str, element: str, where: str | None, message: str) -> None:
    source = f"opendss:{BAD / file}"
    with pytest.raises(GridSourceError) as info:
        load_grid(source)
    error = info.value
    assert error.source == source
    assert error.element == element
    text = str(error)
    assert file in text
    assert message in text
    if where is not None:
        assert re.search(where, text), text


def test_compile_leaves_working_directory_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(DATA / "mv_feeder", tmp_path / "case")
    monkeypatch.chdir(tmp_path)
    read_opendss(Path("case/master.dss"), "opendss:case/master.dss")
    assert Path.cwd() == tmp_path
