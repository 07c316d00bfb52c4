"""``opendso forecast``: the backtest JSON contract, train/predict round trip, bad input exits 2 naming it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandapower as pp
import pandas as pd
import pytest

from opendso.cli import main

LV = "simbench:1-LV-rural1--0-sw"
FAST = ("--n-estimators", "10", "--train-days", "14", "--intraday-steps", "0", "--quiet")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_backtest_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_cli(
        capsys, "forecast", "backtest", LV, "--days", "1", "--sample", "1", "--levels", "feeder", "--json", *FAST
    )
    assert status == 0, err
    payload = json.loads(out)
    assert set(payload) == {"grid", "days", "start", "targets", "summary"}
    assert payload["grid"] == LV
    assert payload["days"] == 1
    kinds = {t["kind"] for t in payload["targets"]}
    assert kinds == {"load", "pv", "feeder"}
    for target in payload["targets"]:
        assert set(target) >= {"target", "kind", "model", "persistence", "weekly_profile", "beats_both"}
        for method in ("model", "persistence", "weekly_profile"):
            assert set(target[method]) == {"rmae", "rcrps"}
            assert target[method]["rmae"] > 0
            assert target[method]["rcrps"] > 0
        assert isinstance(target["beats_both"], bool)
        assert target["beats_both"] == all(
            target["model"][m] < target[b][m] for b in ("persistence", "weekly_profile") for m in ("rmae", "rcrps")
        )
    for kind, entry in payload["summary"].items():
        assert kind in kinds
        assert set(entry) == {"targets", "beats_both", "model", "persistence", "weekly_profile"}
        assert set(entry["model"]) == {"rmae", "rcrps"}


def test_train_then_predict_json_and_csv(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    models = tmp_path / "models"
    target = "sym_load:LV1.101 Load 2"
    status, out, err = run_cli(
        capsys, "forecast", "train", LV, "--targets", target, "--model-dir", str(models), "--json", *FAST
    )
    assert status == 0, err
    assert json.loads(out)["targets"] == [target]
    issued = "2016-03-20T06:00:00Z"
    csv_path = tmp_path / "forecast.csv"
    status, out, err = run_cli(
        capsys,
        "forecast",
        "predict",
        LV,
        "--model-dir",
        str(models),
        "--issued",
        issued,
        "--json",
        "--csv",
        str(csv_path),
    )
    assert status == 0, err
    payload = json.loads(out)
    assert payload["quantiles"] == [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]
    assert len(payload["times"]) == 192
    assert payload["times"][0] == "2016-03-20T06:00:00Z"
    (entry,) = payload["targets"]
    assert entry["target"] == target
    assert entry["kind"] == "load"
    assert len(entry["values"]) == 7
    assert all(len(row) == 192 for row in entry["values"])
    for q in range(6):
        assert all(a <= b for a, b in zip(entry["values"][q], entry["values"][q + 1], strict=True))
    with csv_path.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["time", "target", "q0.05", "q0.1", "q0.25", "q0.5", "q0.75", "q0.9", "q0.95"]
    assert len(rows) == 1 + 192
    assert rows[1][:2] == ["2016-03-20T06:00:00Z", target]
    # a time the profiles do not hold is refused, naming it
    status, _, err = run_cli(
        capsys, "forecast", "predict", LV, "--model-dir", str(models), "--issued", "2030-01-01T00:00Z"
    )
    assert status == 2
    assert "--issued" in err


def test_bad_input_exits_2_naming_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, err = run_cli(capsys, "forecast", "backtest", "simbench:1-LV-nowhere--0-sw", "--json", *FAST)
    assert status == 2
    assert out == ""
    assert "1-LV-nowhere" in err

    net = pp.create_empty_network()
    b = pp.create_buses(net, 2, vn_kv=10.0, name=["src", "n1"])
    pp.create_ext_grid(net, b[0], vm_pu=1.0)
    pp.create_line_from_parameters(
        net, b[0], b[1], length_km=1.0, r_ohm_per_km=0.2, x_ohm_per_km=0.1, c_nf_per_km=0.0, max_i_ka=0.3
    )
    pp.create_load(net, b[1], p_mw=0.5, name="load1")
    pp.to_json(net, str(tmp_path / "flat.json"))
    status, _, err = run_cli(capsys, "forecast", "backtest", f"pandapower:{tmp_path / 'flat.json'}", *FAST)
    assert status == 2
    assert "no profiles" in err
    assert "flat.json" in err

    status, _, err = run_cli(
        capsys, "forecast", "train", LV, "--targets", "sym_load:no-such-load", "--model-dir", str(tmp_path / "m"), *FAST
    )
    assert status == 2
    assert "sym_load:no-such-load" in err

    weather = tmp_path / "weather.csv"
    weather.write_text("time,ghi,temperature\n2016-01-01T00:00:00Z,0,3\n2016-01-01T01:00:00Z,-5,3\n")
    status, _, err = run_cli(capsys, "forecast", "backtest", LV, "--weather", str(weather), *FAST)
    assert status == 2
    assert "weather.csv, row 2, field 'ghi'" in err

    status, _, err = run_cli(capsys, "forecast", "predict", LV, "--model-dir", str(tmp_path / "empty"))
    assert status == 2
    assert "manifest" in err


def test_weather_file_feeds_pv_forecasts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """With a weather file, a PV generator's models learn from irradiance and pvlib's expected output."""
    from opendso.planning import OpenStefForecaster
    from opendso.planning.weather import pvlib_sample_weather

    weather, _ = pvlib_sample_weather()
    hourly = weather.iloc[::4]
    hourly = hourly.set_axis(hourly.index + pd.Timedelta(days=365))  # the typical year laid on 2016
    hourly = hourly.loc[hourly.index < pd.Timestamp("2016-03-20", tz="UTC")]
    path = tmp_path / "weather.csv"
    with path.open("w") as fh:
        fh.write("time,ghi,dni,dhi,temperature,wind_speed\n")
        for when, row in hourly.iterrows():
            fh.write(f"{when.isoformat()},{','.join(f'{v:.1f}' for v in row.to_numpy())}\n")
    target = "sym_gen:LV1.101 SGen 1"
    models = tmp_path / "models"
    status, _, err = run_cli(
        capsys, "forecast", "train", LV, "--targets", target, "--weather", str(path), "--model-dir", str(models), *FAST
    )
    assert status == 0, err
    features = OpenStefForecaster.load(models).features(target)
    assert {"radiation", "temperature", "windspeed", "pv_expected"} <= set(features)
    status, out, err = run_cli(
        capsys, "forecast", "predict", LV, "--model-dir", str(models), "--weather", str(path), "--json"
    )
    assert status == 0, err
    values = json.loads(out)["targets"][0]["values"]
    assert min(min(row) for row in values) >= 0.0  # generation is never forecast negative
    status, _, err = run_cli(capsys, "forecast", "predict", LV, "--model-dir", str(models))
    assert status == 2
    assert "weather" in err
