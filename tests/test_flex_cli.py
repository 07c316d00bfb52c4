"""`opendso flex envelopes` and `opendso flex tso`: the stored registry, JSON out, the CSV file, bad input.

The numbers behind them are checked against pandapower in test_envelopes.py and
test_tso_interface.py; here the commands read the stored registry, print the documented JSON,
write the TSO's CSV file, and refuse bad input with exit status 2 naming it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from opendso.cli import main
from opendso.markets.tso import CSV_COLUMNS

GRID = "simbench:1-LV-rural1--0-sw"
ISSUED = "2016-06-10T10:00:00Z"
HEADER = (
    "asset_id,name,kind,node,owner,aggregator,export_kw,import_kw,storage_kwh,control_protocol,control_address,"
    "agreement,principle,curtailment_cap_pct,export_limit_kw,request_id,received_at,status"
)
ROWS = (
    "F-PV1,PV one,pv,LV1.101 Bus 5,Owner,Flexa,60,0,,none,,firm,,,,,,",
    "F-BAT1,Battery,battery,LV1.101 Bus 9,Owner,Flexa,30,30,60,none,,firm,,,,,,",
    "V-PV1,PV two,pv,LV1.101 Bus 13,Owner,Voltwise,80,0,,none,,firm,,,,,,",
)


@pytest.fixture
def data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """A data folder whose database holds the registry of three assets of two aggregators."""
    path = tmp_path / "der.csv"
    path.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    args = ["--data-dir", str(tmp_path / "data")]
    assert main(["der", "import", str(path), "--grid", GRID, *args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["assets"] == 3
    return args


def test_envelopes_print_every_aggregator_and_interval(data: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["flex", "envelopes", "--grid", GRID, "--issued", ISSUED, "--steps", "4", "--rule", "equal", *data]
    assert main([*argv, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["rule"] == "equal"
    assert [i["time"] for i in payload["intervals"]] == [
        "2016-06-10T10:00:00Z",
        "2016-06-10T10:15:00Z",
        "2016-06-10T10:30:00Z",
        "2016-06-10T10:45:00Z",
    ]
    nodes = {e["aggregator"]: sorted(p["node"] for p in e["points"]) for e in payload["envelopes"]}
    assert nodes == {"Flexa": ["LV1.101 Bus 5", "LV1.101 Bus 9"], "Voltwise": ["LV1.101 Bus 13"]}
    for envelope in payload["envelopes"]:
        for point in envelope["points"]:
            assert all(0 <= i["export_max_w"] <= point["export_w"] + 1e-6 for i in point["intervals"])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Flexa at LV1.101 Bus 5" in out
    assert "Voltwise at LV1.101 Bus 13" in out


def test_tso_report_prints_json_and_writes_the_csv(
    data: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "tso.csv"
    argv = ["flex", "tso", "--grid", GRID, "--issued", ISSUED, "--steps", "8", "--csv", str(target), *data]
    assert main([*argv, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["issued"] == ISSUED
    assert payload["gsps"]
    with target.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 8 * len(payload["gsps"])
    assert {r["gsp"] for r in rows} == {g["gsp"] for g in payload["gsps"]}


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["envelopes", "--steps", "0"], "--steps"),
        (["envelopes", "--u-min", "1.1", "--u-max", "1.0"], "--u-min"),
        (["envelopes", "--issued", "tomorrow"], "--issued"),
        (["envelopes", "--issued", "2030-01-01T00:00:00Z"], "after the grid's profiles"),
        (["tso", "--steps", "1000"], "--steps"),
        (["tso", "--issued", "2016-01-02T00:00:00Z"], "history"),
    ],
)
def test_bad_input_exits_2_naming_it(
    data: list[str], extra: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["flex", extra[0], "--grid", GRID, *extra[1:], *data]) == 2
    assert says in capsys.readouterr().err


def test_envelopes_without_aggregators_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "der.csv"
    path.write_text(HEADER + "\nS-1,Solo,pv,LV1.101 Bus 5,Owner,,10,0,,none,,firm,,,,,,\n", encoding="utf-8")
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["der", "import", str(path), "--grid", GRID, *data]) == 0
    capsys.readouterr()
    assert main(["flex", "envelopes", "--grid", GRID, "--issued", ISSUED, *data]) == 2
    assert "no connected asset with an aggregator" in capsys.readouterr().err
