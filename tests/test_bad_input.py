"""Bad input: one clear error naming what and where, exit status 2, nothing half-written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandapower as pp
import pytest

from opendso.calc.timeseries import ParquetWriter, run_time_series
from opendso.cli import main
from opendso.grid.model import Profiles
from opendso.grid.sources import load_grid

LV = "simbench:1-LV-rural1--0-sw"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def small_net() -> pp.pandapowerNet:
    net = pp.create_empty_network()
    b = pp.create_buses(net, 4, vn_kv=10.0, name=["src", "n1", "n2", "n3"])
    pp.create_ext_grid(net, b[0], vm_pu=1.0, name="grid")
    pp.create_lines_from_parameters(
        net,
        [b[0], b[1], b[2]],
        [b[1], b[2], b[3]],
        length_km=1.0,
        r_ohm_per_km=0.2,
        x_ohm_per_km=0.1,
        c_nf_per_km=0.0,
        max_i_ka=0.3,
        name=["l1", "l2", "l3"],
    )
    pp.create_loads(net, [b[1], b[2], b[3]], p_mw=0.5, q_mvar=0.1, name=["load1", "load2", "load3"])
    return net


def save(net: pp.pandapowerNet, path: Path) -> str:
    pp.to_json(net, str(path))
    return f"pandapower:{path}"


def test_unknown_simbench_code(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_cli(capsys, "powerflow", "simbench:1-MV-nowhere--0-sw", "--json")
    assert status == 2
    assert out == ""
    assert "simbench:1-MV-nowhere--0-sw" in err
    assert "unknown SimBench code" in err


def test_unknown_source_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "grid", "info", "cim:grid.xml")
    assert status == 2
    assert "cim:grid.xml" in err


@pytest.mark.parametrize("scheme", ["pandapower", "pgm", "opendss"])
def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, scheme: str) -> None:
    missing = tmp_path / "nope.json"
    status, _, err = run_cli(capsys, "powerflow", f"{scheme}:{missing}")
    assert status == 2
    assert "file not found" in err
    assert str(missing) in err


@pytest.mark.parametrize("scheme", ["pandapower", "pgm"])
def test_malformed_json(capsys: pytest.CaptureFixture[str], tmp_path: Path, scheme: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"bus": [1, 2,')
    status, out, err = run_cli(capsys, "powerflow", f"{scheme}:{bad}", "--json")
    assert status == 2
    assert out == ""
    assert "bad.json" in err
    assert "JSON" in err


def test_malformed_dss(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "master.dss"
    bad.write_text(
        "Clear\nNew Circuit.c basekv=10 pu=1.0\nNew Line.l1 bus1=sourcebus bus2=b2 length=1 units=km "
        "linecode=missing\nSolve\n"
    )
    status, _, err = run_cli(capsys, "powerflow", f"opendss:{bad}")
    assert status == 2
    assert "master.dss" in err
    assert "l1" in err.lower()


def test_branch_to_a_node_that_does_not_exist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    net = small_net()
    net.line.loc[1, "to_bus"] = 99
    status, _, err = run_cli(capsys, "powerflow", save(net, tmp_path / "net.json"))
    assert status == 2
    assert "line 'l2'" in err
    assert "to_bus" in err
    assert "99" in err


def test_pgm_branch_to_unknown_node_and_duplicate_ids(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "lv.json"
    assert main(["grid", "export", LV, "--to", f"pgm:{target}"]) == 0
    capsys.readouterr()
    data = json.loads(target.read_text())
    lines = data["data"]["line"]
    lines[0]["to_node"] = 123456
    target.write_text(json.dumps(data))
    status, out, err = run_cli(capsys, "powerflow", f"pgm:{target}", "--json")
    assert status == 2
    assert out == ""
    assert "line" in err
    assert "to_node" in err
    assert lines[0]["name"] in err

    lines[0]["to_node"] = data["data"]["node"][1]["id"]
    data["data"]["line"][1]["id"] = data["data"]["node"][0]["id"]
    target.write_text(json.dumps(data))
    status, _, err = run_cli(capsys, "grid", "validate", f"pgm:{target}")
    assert status == 2
    assert "more than one element" in err
    assert data["data"]["line"][1]["name"] in err


@pytest.mark.parametrize(("r", "x", "expected"), [(0.0, 0.0, "zero series impedance"), (-0.2, 0.1, "negative")])
def test_zero_or_negative_impedance(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, r: float, x: float, expected: str
) -> None:
    net = small_net()
    net.line.loc[2, ["r_ohm_per_km", "x_ohm_per_km"]] = [r, x]
    status, _, err = run_cli(capsys, "powerflow", save(net, tmp_path / "net.json"))
    assert status == 2
    assert expected in err
    assert "l3" in err


def test_loads_on_an_island_are_de_energised_not_a_crash(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    net = small_net()
    net.line.loc[1, "in_service"] = False  # n2 and n3 lose their supply
    status, out, _ = run_cli(capsys, "powerflow", save(net, tmp_path / "net.json"), "--json")
    assert status == 0
    data = json.loads(out)
    energised = {n["name"]: n["energized"] for n in data["nodes"]}
    assert energised == {"src": True, "n1": True, "n2": False, "n3": False}
    pp.runpp(net)
    assert np.isnan(net.res_bus.vm_pu[2])  # pandapower agrees these buses are unsupplied


def _overloaded(source: str, factor_steps: dict[int, float]) -> object:
    grid = load_grid(source)
    assert grid.profiles is not None
    values = grid.profiles.values[:8].copy()
    for step, factor in factor_steps.items():
        values[step] *= factor
    profiles = Profiles(grid.profiles.time[:8], values, grid.profiles.columns, grid.profiles.assignments)
    return replace(grid, profiles=profiles)


def test_non_convergence_is_reported_per_step() -> None:
    grid = _overloaded(LV, {3: 400.0, 5: 400.0})
    result = run_time_series(grid)  # type: ignore[arg-type]
    assert result.converged.tolist() == [True, True, True, False, True, False, True, True]
    assert set(result.errors) == {3, 5}
    assert "newton_raphson" in result.errors[3]  # the retry with Newton-Raphson failed too
    assert np.isnan(result.u_min_pu[3])
    summary = result.to_dict()
    assert summary["failed_steps"] == 2
    assert summary["per_step"][3]["converged"] is False
    assert summary["per_step"][3]["error"]

    fallback = run_time_series(grid, fallback_linear=True)  # type: ignore[arg-type]
    assert fallback.converged.all()
    assert fallback.fallback.tolist() == [False, False, False, True, False, True, False, False]
    assert "linear fallback" in fallback.errors[3]


def test_failed_run_leaves_no_half_written_file(tmp_path: Path) -> None:
    grid = load_grid(LV)
    target = tmp_path / "year.parquet"

    def interrupt(done: int, total: int) -> None:
        if done >= 64:
            raise KeyboardInterrupt

    writer = ParquetWriter(target, grid)
    with pytest.raises(KeyboardInterrupt):
        run_time_series(grid, stop=256, chunk_size=64, writer=writer, progress=interrupt)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_export_of_an_invalid_grid_writes_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    net = small_net()
    net.line.loc[0, ["r_ohm_per_km", "x_ohm_per_km"]] = [0.0, 0.0]
    target = tmp_path / "out.json"
    status, _, err = run_cli(capsys, "grid", "export", save(net, tmp_path / "net.json"), "--to", f"pgm:{target}")
    assert status == 2
    assert "l1" in err
    assert not target.exists()


def test_bad_timeseries_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "timeseries", LV, "--steps", "0")
    assert status == 2
    assert "--steps" in err
    status, _, err = run_cli(capsys, "timeseries", LV, "--start", "2030-01-01T00:00", "-q")
    assert status == 2
    assert "--start" in err
    status, _, err = run_cli(capsys, "timeseries", LV, "--start", "yesterday", "-q")
    assert status == 2
    assert "yesterday" in err
