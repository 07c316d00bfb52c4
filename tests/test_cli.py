"""The ``opendso`` command: the JSON contract of DESIGN.md, exit statuses, outputs on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandapower as pp
import pytest

from opendso.cli import main

LV = "simbench:1-LV-rural1--0-sw"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_help_lists_every_subcommand() -> None:
    proc = subprocess.run([sys.executable, "-m", "opendso.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("grid", "powerflow", "timeseries", "estimate", "shortcircuit", "run"):
        assert command in proc.stdout
    for sub in (["grid", "info"], ["grid", "validate"], ["grid", "export"], ["powerflow"], ["timeseries"]):
        proc = subprocess.run(
            [sys.executable, "-m", "opendso.cli", *sub, "--help"], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0
        assert "usage" in proc.stdout


def test_powerflow_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "powerflow", LV, "--json")
    assert status == 0
    data = json.loads(out)
    assert data["grid"] == LV
    assert data["converged"] is True
    assert {"name", "u_pu", "u_angle_deg"} <= set(data["nodes"][0])
    assert {"name", "kind", "loading"} <= set(data["branches"][0])
    names = {n["name"] for n in data["nodes"]}
    assert "LV1.101 Bus 1" in names  # names as in the source
    kinds = {b["kind"] for b in data["branches"]}
    assert {"cable", "transformer"} <= kinds
    # loading is a fraction: a LV rural grid at its base case is far below 100 %
    assert all(0 <= b["loading"] < 1.5 for b in data["branches"])


def test_powerflow_json_matches_pandapower(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    net = pp.networks.example_simple()
    path = tmp_path / "net.json"
    pp.to_json(net, str(path))
    status, out, _ = run_cli(capsys, "powerflow", f"pandapower:{path}", "--json")
    assert status == 0
    data = json.loads(out)
    pp.runpp(net, calculate_voltage_angles=True)
    ours = np.array([n["u_pu"] for n in data["nodes"]])
    assert np.max(np.abs(ours - net.res_bus.vm_pu.to_numpy())) < 1e-6
    assert [n["name"] for n in data["nodes"]] == net.bus.name.tolist()


def test_asym_powerflow_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    net = pp.networks.ieee_european_lv_asymmetric("on_peak_566")
    path = tmp_path / "eu.json"
    pp.to_json(net, str(path))
    status, out, _ = run_cli(capsys, "powerflow", f"pandapower:{path}", "--asym", "--json")
    assert status == 0
    data = json.loads(out)
    assert data["symmetric"] is False
    assert len(data["nodes"]) == 907
    assert len(data["nodes"][0]["u_pu_abc"]) == 3


def test_asym_powerflow_without_zero_sequence_data_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_cli(capsys, "powerflow", LV, "--asym", "--json")
    assert status == 2
    assert out == ""
    assert "r0" in err
    assert "LV1.101 Line 1" in err


def test_grid_info_and_validate(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "grid", "info", LV, "--json")
    assert status == 0
    info = json.loads(out)
    assert info["elements"]["node"] == 15
    assert info["profile_steps"] == 35136
    assert info["coordinates"] == 15
    assert info["topology"]["radial"] is True
    assert info["topology"]["islands_without_source"] == 0
    status, out, _ = run_cli(capsys, "grid", "info", "simbench:1-MV-urban--0-sw", "--json")
    mv = json.loads(out)["topology"]
    # SimBench's MV rings are operated open: every open switch between two live feeders is a NOP
    assert mv["meshed_feeders"] == 0
    assert len(mv["normally_open_points"]) == json.loads(out)["open_switches"]
    status, out, _ = run_cli(capsys, "grid", "validate", LV)
    assert status == 0
    assert "valid" in out


def test_timeseries_summary_and_parquet(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out_file = tmp_path / "res.parquet"
    status, out, _ = run_cli(capsys, "timeseries", LV, "--steps", "96", "--out", str(out_file), "--json", "-q")
    assert status == 0
    data = json.loads(out)
    assert data["steps"] == 96
    assert len(data["per_step"]) == 96
    assert data["per_step"][0]["time"] == "2016-01-01T00:00:00Z"
    table = pq.read_table(out_file)
    assert table.num_rows == 96 * (15 + 13 + 1)  # nodes + lines + transformer per step
    assert set(table.column("component").to_pylist()) == {"node", "line", "transformer"}
    # the summary is the extreme of the full results
    nodes = table.to_pandas().query("component == 'node'")
    assert nodes.value.min() == pytest.approx(data["u_min_pu"], abs=1e-12)


def test_timeseries_time_range(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(
        capsys, "timeseries", LV, "--start", "2016-03-01T00:00", "--end", "2016-03-01T06:00", "--json", "-q"
    )
    assert status == 0
    data = json.loads(out)
    assert data["steps"] == 24
    assert data["per_step"][0]["time"] == "2016-03-01T00:00:00Z"


def test_export_pgm_round_trip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "lv.json"
    status, _, _ = run_cli(capsys, "grid", "export", LV, "--to", f"pgm:{target}")
    assert status == 0
    status, out, _ = run_cli(capsys, "powerflow", f"pgm:{target}", "--json")
    assert status == 0
    status, out_ref, _ = run_cli(capsys, "powerflow", LV, "--json")
    a = [n["u_pu"] for n in json.loads(out)["nodes"]]
    b = [n["u_pu"] for n in json.loads(out_ref)["nodes"]]
    assert np.allclose(a, b, atol=1e-12)


def test_estimate_from_source_placements(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "estimate", "simbench:1-MV-urban--0-sw", "--noise", "0", "--json")
    assert status == 0
    data = json.loads(out)
    assert data["converged"] is True
    assert data["observable"] is True
    # exact measurements: the estimate is the power flow
    status, pf_out, _ = run_cli(capsys, "powerflow", "simbench:1-MV-urban--0-sw", "--json")
    pf = {n["name"]: n["u_pu"] for n in json.loads(pf_out)["nodes"]}
    est = {n["name"]: n["u_pu"] for n in data["nodes"]}
    assert max(abs(est[k] - pf[k]) for k in pf) < 1e-6


def test_shortcircuit_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "shortcircuit", LV, "--json")
    assert status == 0
    data = json.loads(out)
    assert data["fault_type"] == "three_phase"
    assert len(data["nodes"]) == 15
    status, out_min, _ = run_cli(capsys, "shortcircuit", LV, "--case", "min", "--json", "--node", "LV1.101 Bus 4")
    assert status == 0
    (node,) = json.loads(out_min)["nodes"]
    ik_max = {n["name"]: n["ik_ka"] for n in data["nodes"]}["LV1.101 Bus 4"]
    assert 0 < node["ik_ka"] < ik_max
    status, _, err = run_cli(capsys, "shortcircuit", LV, "--node", "no such bus")
    assert status == 2
    assert "no such bus" in err


def test_run_starts_on_the_demo_grid_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "opendso.cli", "run", "--data-dir", str(tmp_path), "--duration", "8", "--speed", "600"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "control room on grid demo" in proc.stdout
    assert "stopped cleanly" in proc.stdout
    assert "simulated" in proc.stdout  # live status lines
    assert (tmp_path / "opendso.db").is_file()
