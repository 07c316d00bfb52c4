"""IEEE 1366 reliability indices and ``opendso reliability`` (issue 10, item 5 and its CLI contract).

Values are worked out by hand from IEEE 1366's definitions (the arithmetic is in the comments)
and checked against an independent pandas calculation on a synthetic five-year history.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from opendso.cli import main
from opendso.errors import InputError, OutageFileError
from opendso.operations.reliability import (
    compute_indices,
    indices_by_feeder,
    read_outage_csv,
    reliability_report,
    t_med,
    zone_of,
)

HEADER = "event,start,end,customers,feeder,cause\n"
CONTRACT_KEYS = {
    "saidi_min",
    "saifi",
    "caidi_min",
    "asai",
    "maifi_e",
    "customer_minutes",
    "ens_mwh",
    "t_med_min",
    "major_event_days",
    "without_med",
}


def write(tmp_path: Path, text: str, name: str = "outages.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def report_json(capsys: pytest.CaptureFixture[str], path: Path, *extra: str, served: int = 1000) -> dict[str, Any]:
    status, out, err = run(
        capsys,
        "reliability",
        "--outages",
        str(path),
        "--customers-served",
        str(served),
        "--from",
        "2026-01-01T00:00Z",
        "--to",
        "2026-02-01T00:00Z",
        *extra,
        "--json",
    )
    assert status == 0, err
    payload: dict[str, Any] = json.loads(out)
    return payload


# N_T = 1000 customers served; period [2026-01-01, 2026-02-01) = 31 days = 44 640 minutes.
SMALL = HEADER + (
    # E1: 100 customers for 60 min, sustained: 6 000 customer minutes
    "E1,2026-01-05T10:00Z,2026-01-05T11:00Z,100,F1,tree\n"
    # E2 restored in two steps from 08:00: 200 customers at 08:30 (30 min: 6 000),
    # 50 customers at 10:00 (120 min: 6 000); 250 customers interrupted, 12 000 customer minutes
    "E2,2026-01-10T08:00Z,2026-01-10T08:30Z,200,F2,cable\n"
    "E2,2026-01-10T08:00Z,2026-01-10T10:00Z,50,F2,cable\n"
    # E3: exactly 5 minutes: momentary, 300 customers (one momentary event each)
    "E3,2026-01-12T12:00Z,2026-01-12T12:05Z,300,F1,animal\n"
    # E4: 5 min 1 s: sustained, 60 customers x 301/60 min = 301 customer minutes
    "E4,2026-01-15T00:00Z,2026-01-15T00:05:01Z,60,F2,unknown\n"
    # E5 began before --from: outside the period (it only feeds T_MED)
    "E5,2025-12-31T23:00Z,2026-01-01T01:00Z,400,F1,storm\n"
    # E6 began inside the period and ends after it: counted whole, 10 x 90 = 900
    "E6,2026-01-31T23:30Z,2026-02-01T01:00Z,10,F1,tree\n"
    # E7 began at --to: outside ([from, to) excludes the end)
    "E7,2026-02-01T00:00Z,2026-02-01T02:00Z,999,F1,tree\n"
)


def test_small_file_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = report_json(capsys, write(tmp_path, SMALL))
    assert set(payload) == CONTRACT_KEYS
    assert set(payload["without_med"]) == {"saidi_min", "saifi", "caidi_min", "maifi_e"}
    # customer minutes (sustained): 6 000 + 12 000 + 301 + 900 = 19 201
    assert payload["customer_minutes"] == pytest.approx(19_201)
    # SAIDI = 19 201 / 1 000 = 19.201 min
    assert payload["saidi_min"] == pytest.approx(19.201)
    # SAIFI = (100 + 250 + 60 + 10) / 1 000 = 0.42
    assert payload["saifi"] == pytest.approx(0.42)
    # CAIDI = SAIDI / SAIFI = 19.201 / 0.42 = 45.7166...
    assert payload["caidi_min"] == pytest.approx(19.201 / 0.42)
    # ASAI = (1 000 x 44 640 - 19 201) / (1 000 x 44 640)
    assert payload["asai"] == pytest.approx((44_640_000 - 19_201) / 44_640_000)
    # MAIFI_E = 300 / 1 000 (E3 only)
    assert payload["maifi_e"] == pytest.approx(0.3)
    assert payload["ens_mwh"] is None
    # history before --from: one day with non-zero daily SAIDI (E5): beta undefined, no T_MED
    assert payload["t_med_min"] is None
    assert payload["major_event_days"] == []
    assert payload["without_med"] == {
        "saidi_min": payload["saidi_min"],
        "saifi": payload["saifi"],
        "caidi_min": payload["caidi_min"],
        "maifi_e": payload["maifi_e"],
    }


def test_momentary_boundary_is_five_minutes_inclusive(tmp_path: Path) -> None:
    table = read_outage_csv(
        write(
            tmp_path,
            HEADER
            + "A,2026-01-02T00:00Z,2026-01-02T00:05:00Z,10,F,x\n"  # 300 s: momentary
            + "B,2026-01-02T01:00Z,2026-01-02T01:05:00.000001Z,20,F,x\n",  # 300.000001 s: sustained
        )
    )
    assert table.momentary().tolist() == [True, False]
    got = compute_indices(
        table, customers_served=100, start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 2, 1, tzinfo=UTC)
    )
    assert got.maifi_e == pytest.approx(0.1)  # 10 / 100
    assert got.saifi == pytest.approx(0.2)  # 20 / 100
    assert got.saidi_min == pytest.approx(20 * (300.000001 / 60) / 100)


def test_stepped_restoration_counts_each_step_from_the_event_start(tmp_path: Path) -> None:
    # 300 customers off at 06:00; 100 back at 06:20, 100 at 07:00, 100 at 09:00.
    # customer minutes = 100 x 20 + 100 x 60 + 100 x 180 = 26 000; SAIFI = 300 / 1 000
    text = HEADER + "".join(
        f"S,2026-01-03T06:00Z,{end},100,F,cable\n"
        for end in ("2026-01-03T06:20Z", "2026-01-03T07:00Z", "2026-01-03T09:00Z")
    )
    got = compute_indices(
        read_outage_csv(write(tmp_path, text)),
        customers_served=1000,
        start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 2, 1, tzinfo=UTC),
    )
    assert got.customer_minutes == pytest.approx(26_000)
    assert got.saifi == pytest.approx(0.3)
    assert got.caidi_min == pytest.approx(26_000 / 300)  # the average restoration time of a customer


# History for T_MED (N_T = 1000): 2025-06-01 daily SAIDI 1 (100 x 10 min), 2025-06-02 daily SAIDI
# 4 (100 x 40 min). ln: 0 and ln 4 = 2 ln 2. alpha = ln 2; beta (n - 1) = sqrt(2 (ln 2)^2 / 1) =
# sqrt(2) ln 2. T_MED = exp(ln 2 + 2.5 sqrt(2) ln 2) = 2 ** (1 + 2.5 sqrt(2)) = 23.19... min.
HISTORY = (
    "H1,2025-06-01T12:00Z,2025-06-01T12:10Z,100,F1,tree\n"
    "H2,2025-06-02T12:00Z,2025-06-02T12:40Z,100,F1,tree\n"
    # seven years before: outside the five-year window, would change T_MED if counted
    "H0,2019-03-01T12:00Z,2019-03-01T20:00Z,1000,F1,storm\n"
)
T_MED_HAND = 2 ** (1 + 2.5 * math.sqrt(2))


def med_file(big_start: str, big_end: str) -> str:
    return (
        HEADER
        + HISTORY
        + (
            # the big event: 1 000 customers x 30 min = 30 000: daily SAIDI 30 > 23.19
            f"BIG,{big_start},{big_end},1000,F1,storm\n"
            # a momentary on the same day (UTC), 200 customers
            "M1,2026-01-10T12:00Z,2026-01-10T12:01Z,200,F2,animal\n"
            # 2026-01-20: 500 x 40 = 20 000: daily SAIDI 20 < 23.19, not a major event day
            "D2,2026-01-20T12:00Z,2026-01-20T12:40Z,500,F2,tree\n"
            "M2,2026-01-20T13:00Z,2026-01-20T13:01Z,100,F2,animal\n"
        )
    )


def test_major_event_days_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = report_json(capsys, write(tmp_path, med_file("2026-01-10T08:00Z", "2026-01-10T08:30Z")))
    assert payload["t_med_min"] == pytest.approx(T_MED_HAND)
    assert payload["major_event_days"] == ["2026-01-10"]
    # with: SAIDI = (30 000 + 20 000) / 1 000 = 50; SAIFI = 1 500 / 1 000; MAIFI_E = 300 / 1 000
    assert payload["saidi_min"] == pytest.approx(50)
    assert payload["saifi"] == pytest.approx(1.5)
    assert payload["maifi_e"] == pytest.approx(0.3)
    # without 2026-01-10 (BIG and the momentary M1 both began on it): SAIDI 20, SAIFI 0.5,
    # CAIDI 20 / 0.5 = 40, MAIFI_E 100 / 1 000
    assert payload["without_med"] == pytest.approx({"saidi_min": 20, "saifi": 0.5, "caidi_min": 40, "maifi_e": 0.1})


def test_time_zone_moves_a_late_evening_utc_event_to_the_next_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # BIG begins 2026-01-10 23:30 UTC = 2026-01-11 00:30 in Berlin (UTC+1 in winter)
    path = write(tmp_path, med_file("2026-01-10T23:30Z", "2026-01-11T00:00Z"))
    assert report_json(capsys, path)["major_event_days"] == ["2026-01-10"]
    berlin = report_json(capsys, path, "--tz", "Europe/Berlin")
    assert berlin["major_event_days"] == ["2026-01-11"]
    # M1 (2026-01-10 12:00 UTC) is no longer on the major event day: it stays in without_med
    assert berlin["without_med"]["maifi_e"] == pytest.approx(0.3)


def test_synthetic_five_year_history_against_pandas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1366)
    served = 50_000
    tz = "America/Chicago"
    first = pd.Timestamp("2020-06-01T00:00Z").value // 1000
    last = pd.Timestamp("2027-01-01T00:00Z").value // 1000
    n = 4000
    starts = rng.integers(first, last, n)
    minutes = np.exp(rng.normal(3.5, 1.3, n))  # median ~33 min, some <= 5 min (momentary)
    customers = rng.integers(1, 800, n)
    storms = rng.choice(n, 25, replace=False)
    customers[storms] = rng.integers(5_000, 30_000, 25)
    minutes[storms] = rng.uniform(300, 2000, 25)
    rows = []
    for i in range(n):
        row_start = pd.Timestamp(int(starts[i]) * 1000, tz="UTC")
        steps = 2 if i % 7 == 0 else 1  # every seventh event restored in two steps
        for k in range(steps):
            end = row_start + pd.Timedelta(minutes=float(minutes[i]) * (k + 1) / steps)
            rows.append((f"E{i}", row_start, end, int(customers[i]) // steps + k, f"F{i % 5}", "x"))
    frame = pd.DataFrame(rows, columns=["event", "start", "end", "customers", "feeder", "cause"])
    path = tmp_path / "history.csv"
    frame.assign(
        start=frame["start"].map(lambda t: t.isoformat()), end=frame["end"].map(lambda t: t.isoformat())
    ).to_csv(path, index=False)

    start, stop = pd.Timestamp("2026-01-01T00:00Z"), pd.Timestamp("2027-01-01T00:00Z")
    # independent calculation, pandas groupby
    begin = frame.groupby("event")["start"].transform("min")
    dur = (frame["end"] - frame["start"]).dt.total_seconds() / 60
    sustained = dur > 5
    cmi = frame["customers"] * dur
    day = begin.dt.tz_convert(tz).dt.date
    window_start = start.tz_convert(tz) - pd.DateOffset(years=5)
    hist = sustained & (begin >= window_start) & (begin < start)
    daily_hist = cmi[hist].groupby(day[hist]).sum() / served
    logs = np.log(daily_hist[daily_hist > 0])
    expected_t = math.exp(logs.mean() + 2.5 * logs.std(ddof=1))
    period = (begin >= start) & (begin < stop)
    daily_period = cmi[period & sustained].groupby(day[period & sustained]).sum() / served
    expected_meds = sorted(str(d) for d, v in daily_period.items() if v > expected_t)
    on_med = day.map(lambda d: d.isoformat() in expected_meds)
    keep = period & ~on_med

    status, out, err = run(
        capsys,
        "reliability",
        "--outages",
        str(path),
        "--customers-served",
        str(served),
        "--from",
        "2026-01-01T00:00Z",
        "--to",
        "2027-01-01T00:00Z",
        "--tz",
        tz,
        "--json",
    )
    assert status == 0, err
    got = json.loads(out)
    assert expected_meds, "the synthetic history should have major event days"
    assert got["t_med_min"] == pytest.approx(expected_t, rel=1e-9)
    assert got["major_event_days"] == expected_meds
    assert got["customer_minutes"] == pytest.approx(cmi[period & sustained].sum(), rel=1e-9)
    assert got["saidi_min"] == pytest.approx(cmi[period & sustained].sum() / served, rel=1e-9)
    assert got["saifi"] == pytest.approx(frame["customers"][period & sustained].sum() / served, rel=1e-9)
    assert got["maifi_e"] == pytest.approx(frame["customers"][period & ~sustained].sum() / served, rel=1e-9)
    minutes_in_year = 365 * 24 * 60
    assert got["asai"] == pytest.approx(1 - cmi[period & sustained].sum() / (served * minutes_in_year), rel=1e-12)
    assert got["without_med"]["saidi_min"] == pytest.approx(cmi[keep & sustained].sum() / served, rel=1e-9)
    assert got["without_med"]["saifi"] == pytest.approx(frame["customers"][keep & sustained].sum() / served, rel=1e-9)
    assert got["without_med"]["maifi_e"] == pytest.approx(
        frame["customers"][keep & ~sustained].sum() / served, rel=1e-9
    )


def test_t_med_needs_two_non_zero_days() -> None:
    assert t_med([]) is None
    assert t_med([0.0, 0.0, 5.0]) is None
    assert t_med([1.0, 4.0, 0.0]) == pytest.approx(T_MED_HAND)


def test_per_feeder_indices(tmp_path: Path) -> None:
    table = read_outage_csv(write(tmp_path, SMALL))
    got = indices_by_feeder(
        table,
        customers_served={"F1": 400, "F2": 600},
        start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 2, 1, tzinfo=UTC),
    )
    # F1: E1 6 000 + E6 900 = 6 900 customer minutes, 110 customers; E3 momentary 300
    assert got["F1"].saidi_min == pytest.approx(6900 / 400)
    assert got["F1"].saifi == pytest.approx(110 / 400)
    assert got["F1"].maifi_e == pytest.approx(300 / 400)
    # F2: E2 12 000 + E4 301 = 12 301, 310 customers
    assert got["F2"].saidi_min == pytest.approx(12_301 / 600)
    assert got["F2"].saifi == pytest.approx(310 / 600)
    with pytest.raises(InputError, match="F2"):
        indices_by_feeder(
            table,
            customers_served={"F1": 400},
            start=datetime(2026, 1, 1, tzinfo=UTC),
            end=datetime(2026, 2, 1, tzinfo=UTC),
        )


def test_report_function_matches_the_command(tmp_path: Path) -> None:
    table = read_outage_csv(write(tmp_path, med_file("2026-01-10T08:00Z", "2026-01-10T08:30Z")))
    report = reliability_report(
        table,
        customers_served=1000,
        start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 2, 1, tzinfo=UTC),
        tz=zone_of("UTC"),
    )
    assert report.major_event_days == [date(2026, 1, 10)]


@pytest.mark.parametrize(
    ("text", "row", "field"),
    [
        ("event,start,end,customers,feeder\nE,2026-01-02T00:00Z,2026-01-02T01:00Z,1,F\n", None, "cause"),
        (HEADER + "E,2026-01-02T00:00Z,2026-01-02T01:00Z,1,F,x\nE2,yesterday,2026-01-02T01:00Z,1,F,x\n", 2, "start"),
        (HEADER + "E,2026-01-02T00:00Z,2026-13-02T01:00Z,1,F,x\n", 1, "end"),
        (HEADER + "E,2026-01-02T02:00Z,2026-01-02T01:00Z,1,F,x\n", 1, "end"),
        (HEADER + "E,2026-01-02T00:00Z,2026-01-02T01:00Z,-5,F,x\n", 1, "customers"),
        (HEADER + "E,2026-01-02T00:00Z,2026-01-02T01:00Z,2.5,F,x\n", 1, "customers"),
        (HEADER + "E,2026-01-02T00:00Z,2026-01-02T01:00Z,,F,x\n", 1, "customers"),
        (HEADER + "E,2026-01-02T00:00Z,2026-01-02T01:00Z,1e3,F,x\n", 1, "customers"),
        (HEADER + ",2026-01-02T00:00Z,2026-01-02T01:00Z,1,F,x\n", 1, "event"),
        (HEADER + "E,2026-01-02T00:00Z,2026-01-02T01:00Z\n", 1, "customers"),
        (HEADER + "\n\nE,2026-01-02T00:00Z,nan,1,F,x\n", 3, "end"),
    ],
)
def test_bad_input_exits_2_naming_file_row_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, row: int | None, field: str
) -> None:
    path = write(tmp_path, text)
    status, out, err = run(
        capsys,
        "reliability",
        "--outages",
        str(path),
        "--customers-served",
        "100",
        "--from",
        "2026-01-01T00:00Z",
        "--to",
        "2026-02-01T00:00Z",
        "--json",
    )
    assert status == 2
    assert out == ""
    assert str(path) in err
    assert f"field {field!r}" in err
    if row is not None:
        assert f"row {row}," in err
    with pytest.raises(OutageFileError) as caught:
        read_outage_csv(path)
    assert (caught.value.row, caught.value.field) == (row, field)


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--customers-served", "0", "--customers-served"),
        ("--customers-served", "12.5", "--customers-served"),
        ("--tz", "Mars/Olympus", "--tz"),
        ("--tz", "../../etc/passwd", "--tz"),
        ("--from", "soon", "--from"),
        ("--to", "2025-01-01T00:00Z", "--to"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, named: str
) -> None:
    args = {
        "--outages": str(write(tmp_path, SMALL)),
        "--customers-served": "1000",
        "--from": "2026-01-01T00:00Z",
        "--to": "2026-02-01T00:00Z",
        "--tz": "UTC",
    }
    args[flag] = value
    status, _out, err = run(capsys, "reliability", *[x for kv in args.items() for x in kv], "--json")
    assert status == 2
    assert named in err


def test_missing_file_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.csv"
    status, _, err = run(
        capsys,
        "reliability",
        "--outages",
        str(missing),
        "--customers-served",
        "10",
        "--from",
        "2026-01-01",
        "--to",
        "2026-02-01",
    )
    assert status == 2
    assert str(missing) in err


def _exit_and_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    return run(
        capsys,
        "reliability",
        "--outages",
        str(path),
        "--customers-served",
        "1000",
        "--from",
        "2026-01-01T00:00Z",
        "--to",
        "2026-02-01T00:00Z",
        "--json",
    )


def test_hostile_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(7)
    # a large file of random bytes: not UTF-8, refused at once
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(rng.integers(0, 256, 8_000_000, dtype=np.uint8).tobytes())
    status, out, err = _exit_and_error(tmp_path, capsys, garbage)
    assert (status, out) == (2, "")
    assert str(garbage) in err
    # a large file of printable garbage after a good header: refused at its first row
    text_garbage = write(tmp_path, HEADER + "x" * 50 + "\n" + ("a,b,c,d,e,f\n" * 200_000), "text.csv")
    status, out, err = _exit_and_error(tmp_path, capsys, text_garbage)
    assert status == 2
    assert "row 1," in err
    # one enormous field (beyond the csv module's field limit)
    huge = write(tmp_path, HEADER + "E," + "9" * 500_000 + ",x,1,F,x\n", "huge.csv")
    status, out, err = _exit_and_error(tmp_path, capsys, huge)
    assert status == 2
    assert str(huge) in err
    # NUL bytes in a time
    nul = write(tmp_path, HEADER + "E,2026-01-02T00:00Z\x00,2026-01-02T01:00Z,1,F,x\n", "nul.csv")
    status, out, err = _exit_and_error(tmp_path, capsys, nul)
    assert status == 2
    assert str(nul) in err
    # an empty file: no header
    empty = write(tmp_path, "", "empty.csv")
    status, out, err = _exit_and_error(tmp_path, capsys, empty)
    assert status == 2
    assert "empty" in err
    # a header only: no outages, every index zero
    only = report_json(capsys, write(tmp_path, HEADER, "header.csv"))
    assert (only["saidi_min"], only["saifi"], only["caidi_min"], only["asai"]) == (0.0, 0.0, None, 1.0)


def test_bom_extra_columns_and_column_order_are_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reordered = "\ufeffcause,feeder,customers,end,start,event,crew,notes\n" + "".join(
        f'{c},{f},{n},{e},{s},{ev},crew 7,"a, b"\n'
        for ev, s, e, n, f, c in (line.split(",") for line in SMALL.splitlines()[1:])
    )
    path = tmp_path / "bom.csv"
    path.write_text(reordered, encoding="utf-8")
    assert report_json(capsys, path) == report_json(capsys, write(tmp_path, SMALL))


def test_offsets_and_naive_times_are_read_as_utc(tmp_path: Path) -> None:
    table = read_outage_csv(
        write(
            tmp_path,
            HEADER
            + "A,2026-01-02T01:00+01:00,2026-01-02T01:30+01:00,1,F,x\n"  # 00:00Z
            + "B,2026-01-02T00:00,2026-01-02T00:30,1,F,x\n",  # declared UTC
        )
    )
    assert table.start_us[0] == table.start_us[1]


def test_times_far_from_today_do_not_break_the_calendar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # years outside pandas' nanosecond range (1677-2262) and a --from whose five years reach before year 1
    path = write(
        tmp_path,
        HEADER
        + "A,0002-05-01T00:00Z,0002-05-01T01:00Z,5,F,x\n"
        + "B,0002-06-01T00:00Z,0002-06-01T03:00Z,5,F,x\n"
        + "C,9999-12-31T23:00Z,9999-12-31T23:59Z,5,F,x\n"
        + "D,0003-06-01T00:00Z,0003-06-01T00:59Z,5,F,x\n",
    )
    status, out, err = run(
        capsys,
        "reliability",
        "--outages",
        str(path),
        "--customers-served",
        "5",
        "--from",
        "0003-01-01T00:00Z",
        "--to",
        "0004-01-01T00:00Z",
        "--tz",
        "America/New_York",
        "--json",
    )
    assert status == 0, err
    got = json.loads(out)
    # history: daily SAIDI 60 and 180; T_MED = exp(mean(ln) + 2.5 std(ln)); D: 5 x 59 / 5 = 59
    logs = np.log([60.0, 180.0])
    assert got["t_med_min"] == pytest.approx(math.exp(logs.mean() + 2.5 * logs.std(ddof=1)))
    assert got["saidi_min"] == pytest.approx(59)


def test_rows_keep_their_data_row_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "event,start,end,customers,feeder,cause\n"
        "A,2026-01-05T10:00Z,2026-01-05T11:00Z,10,F1,x\n"
        "\n"
        "B,2026-01-06T10:00Z,2026-01-06T10:30Z,5,F1,y\n",
    )
    table = read_outage_csv(path)
    assert table.row is not None
    assert table.row.tolist() == [1, 3]  # the blank line counts as a row, as errors name them
    later = table.select(np.array([False, True]))
    assert later.row is not None
    assert later.row.tolist() == [3]
