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


# -- the local market's order book ---------------------------------------------------------------------------
FEEDER = "LV1.101 Bus 4 / LV1.101 Line 3"
BOOK_HEADER = "participant,node,side,energy_kwh,price_eur_per_kwh,interval"
#: Sellers at the feeder's far end, buyers near the busbar, at a sunny noon: enough energy along the cable
#: to overload it without the network check (test_local_market.py checks the approval with pandapower).
BOOK = (
    "s1,LV1.101 Bus 5,sell,60,0.04,2016-06-01T12:00:00Z",
    "s2,LV1.101 Bus 6,sell,55,0.05,2016-06-01T12:00:00Z",
    "b1,LV1.101 Bus 7,buy,60,0.25,2016-06-01T12:00:00Z",
    "b2,LV1.101 Bus 12,buy,55,0.20,2016-06-01T12:00:00Z",
    "s1,LV1.101 Bus 5,sell,5,0.04,2016-06-01T12:15:00+02:00",
    "b1,LV1.101 Bus 7,buy,5,0.25,2016-06-01T12:15:00+02:00",
)


def _book(tmp_path: Path, rows: tuple[str, ...] | list[str], header: str = BOOK_HEADER) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_local_market_clears_approves_and_charges(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _book(tmp_path, BOOK)
    argv = ["flex", "local", "--grid", GRID, "--feeder", FEEDER, "--orders", str(path), "--json"]
    assert main(argv) == 0
    approved = json.loads(capsys.readouterr().out)
    assert main([*argv, "--no-approval"]) == 0
    cleared = json.loads(capsys.readouterr().out)
    assert [i["interval"] for i in approved["intervals"]] == ["2016-06-01T10:15:00Z", "2016-06-01T12:00:00Z"]
    noon = approved["intervals"][1]
    # bids 0.25/0.20 against asks 0.04/0.05: all 115 kWh cross; the k = 0.5 price lies between the marginal pair
    assert cleared["intervals"][1]["cleared_kwh"] == pytest.approx(115.0)
    assert cleared["intervals"][1]["approved_kwh"] == pytest.approx(115.0)
    assert 0.05 <= noon["price_eur_per_kwh"] <= 0.20
    assert noon["approved_kwh"] < noon["cleared_kwh"] - 1.0, "the cable would overload: some energy is curtailed"
    assert any(t["refused_by"] for t in noon["trades"])
    assert all(t["charge_eur"] > 0 for t in noon["trades"] if t["approved_kwh"] > 0)
    assert main(argv[:-1]) == 0
    assert "approved" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("rows", "header", "says"),
    [
        (BOOK, "participant,node,side,energy_kwh,price,interval", "'price': unknown column"),
        (BOOK, "participant,node,side,energy_kwh,interval", "'price_eur_per_kwh': required column is missing"),
        (["s1,LV1.101 Bus 5,sell,nan,0.04,2016-06-01T12:00:00Z"], BOOK_HEADER, "row 1, field 'energy_kwh'"),
        (["s1,LV1.101 Bus 5,sell,-3,0.04,2016-06-01T12:00:00Z"], BOOK_HEADER, "row 1, field 'energy_kwh'"),
        (["s1,LV1.101 Bus 5,sell,3,cheap,2016-06-01T12:00:00Z"], BOOK_HEADER, "row 1, field 'price_eur_per_kwh'"),
        (["s1,LV1.101 Bus 5,sell,3,0.04,2016-06-01T12:00:00"], BOOK_HEADER, "row 1, field 'interval'"),
        (["s1,LV1.101 Bus 5,sell,3,0.04,2016-06-01T12:05:00Z"], BOOK_HEADER, "quarter-hour"),
        (["s1,LV1.101 Bus 5,hold,3,0.04,2016-06-01T12:00:00Z"], BOOK_HEADER, "row 1, field 'side'"),
        (["s1,LV1.101 Bus 1,sell,3,0.04,2016-06-01T12:00:00Z"], BOOK_HEADER, "not a node of this market"),
        (["s 1!,LV1.101 Bus 5,sell,3,0.04,2016-06-01T12:00:00Z"], BOOK_HEADER, "row 1, field 'participant'"),
        ([*BOOK[:1], BOOK[0]], BOOK_HEADER, "row 2: s1 has a second sell order"),
        (["s1,LV1.101 Bus 5,sell,3,0.04,2016-06-01T12:00:00Z,extra"], BOOK_HEADER, "more values than columns"),
        ([], BOOK_HEADER, "has no data rows"),
    ],
)
def test_bad_order_books_exit_2_naming_row_and_field(
    tmp_path: Path, rows: list[str], header: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _book(tmp_path, rows, header)
    assert main(["flex", "local", "--grid", GRID, "--feeder", FEEDER, "--orders", str(path)]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert str(path) in err


def test_hostile_order_book_files_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "orders.csv"
    binary.write_bytes(BOOK_HEADER.encode() + b"\n\xff\xfe\x00garbage\n")
    assert main(["flex", "local", "--grid", GRID, "--feeder", FEEDER, "--orders", str(binary)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["flex", "local", "--grid", GRID, "--feeder", FEEDER, "--orders", str(tmp_path / "none.csv")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    big = tmp_path / "big.csv"
    with big.open("w", encoding="utf-8") as f:
        f.write(BOOK_HEADER + "\n")
        line = BOOK[0] + "\n"
        f.write(line * (20_000_000 // len(line) + 1))
    assert main(["flex", "local", "--grid", GRID, "--feeder", FEEDER, "--orders", str(big)]) == 2
    assert "larger than" in capsys.readouterr().err
    quoted = _book(tmp_path, ['"s1,LV1.101 Bus 5,sell,3,0.04,2016-06-01T12:00:00Z'])
    assert main(["flex", "local", "--grid", GRID, "--feeder", FEEDER, "--orders", str(quoted)]) == 2
    assert "row 1: malformed CSV" in capsys.readouterr().err


def test_an_unknown_feeder_is_named_with_the_feeders_there_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _book(tmp_path, BOOK)
    assert main(["flex", "local", "--grid", GRID, "--feeder", "Main St", "--orders", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'Main St' is not a feeder" in err
    assert FEEDER in err
