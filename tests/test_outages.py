"""Outage management: records, restoration steps, customer calls on SimBench MV grids, indices from the database.

- IEEE 1366 indices from stored records against values worked out by hand (CAIFI and CTAIDI included);
- ``opendso reliability`` from the database equals the CSV report for the same history imported;
- ``opendso outages import``: one transaction (a bad row or an event imported before changes nothing);
- a trip's outage interrupts exactly the nodes the trip de-energises, with their customers;
- calls from one lateral predict that lateral's protective device; calls from two laterals, past the
  threshold, their nearest common protective device (found independently from the source paths).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import feeder_breaker

from opendso.cli import main
from opendso.errors import ConflictError, InputError, NotFoundError, UnknownSwitchError
from opendso.grid.customers import customer_counts
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology, path_from_source
from opendso.operations.outages import (
    OutageManager,
    OutageState,
    SupplyTree,
    add_restoration_step,
    assign_crew,
    cancel,
    close,
    open_outage_from_trip,
    report_from_store,
    set_etr,
)
from opendso.store import Historian
from opendso.store.outage_schema import outage_calls, outages
from opendso.store.outages import LoadRecord, OutageRecord, OutageStore

RURAL = "simbench:1-MV-rural--0-sw"
URBAN = "simbench:1-MV-urban--0-sw"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OutageStore]:
    historian = Historian.open(f"sqlite:///{tmp_path / 'opendso.db'}")
    yield OutageStore(historian.engine)
    historian.close()


@pytest.fixture
def any_store(db_url: str) -> Iterator[OutageStore]:
    """A store on SQLite and on PostgreSQL (skipped without a server, except under CI)."""
    historian = Historian.open(db_url)
    yield OutageStore(historian.engine)
    historian.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _record(start: datetime, loads: list[tuple[str, str, int]]) -> OutageRecord:
    return OutageRecord(
        source="trip",
        state=str(OutageState.CONFIRMED),
        start=start,
        customers=sum(c for _, _, c in loads),
        created_by="test",
        feeder="F1",
        loads_known=True,
        nodes=tuple(n for _, n, _ in loads),
        # 1 kW per customer: L1 100 kW, L2 50 kW, L3 200 kW
        loads=tuple(LoadRecord(load=ld, node=n, customers=c, p_w=1000.0 * c) for ld, n, c in loads),
    )


# -- indices from records, by hand ---------------------------------------------------------------------------
def test_indices_from_records_by_hand(any_store: OutageStore) -> None:
    """Two outages, N_T = 1000, March 2026 (31 days).

    A, 2 March 10:00: L1 (100 customers, node N1) back at 10:30, L2 (50, N2) at 11:00.
    B, 5 March 08:00: L3 (200, N3) back at 08:03 (momentary), L1 (100, N1) at 09:00.
    Sustained customer minutes 100*30 + 50*60 + 100*60 = 12,000; customer interruptions
    100 + 50 + 100 = 250; momentary 200. Distinct customers with a sustained interruption:
    L1 and L2, 150 (L3 was off only momentarily).
    SAIDI 12, SAIFI 0.25, CAIDI 48, MAIFI_E 0.2, ASAI 1 - 12000 / (1000 * 31 * 1440),
    CAIFI 250 / 150, CTAIDI 12000 / 150 = 80 min. Energy not supplied (1 kW per customer,
    sustained load interruptions only): 100 kW * 0.5 h + 50 kW * 1 h + 100 kW * 1 h = 0.2 MWh.
    """
    store = any_store
    a = _record(T0, [("L1", "N1", 100), ("L2", "N2", 50)])
    a = add_restoration_step(a, T0 + timedelta(minutes=30), nodes=["N1"], actor="op")
    assert a.state == OutageState.RESTORING
    assert a.customers_off == 50
    a = close(a, T0 + timedelta(minutes=60), actor="op", cause="tree on line")
    b0 = datetime(2026, 3, 5, 8, 0, tzinfo=UTC)
    b = _record(b0, [("L1", "N1", 100), ("L3", "N3", 200)])
    b = add_restoration_step(b, b0 + timedelta(minutes=3), nodes=["N3"], actor="op")
    b = add_restoration_step(b, b0 + timedelta(minutes=60), nodes=["N1"], actor="op")
    assert b.state == OutageState.RESTORED
    assert b.end == b0 + timedelta(minutes=60)
    # a cancelled prediction counts nothing
    c = cancel(_record(b0, [("L9", "N9", 999)]), b0 + timedelta(minutes=20))
    for record in (a, b, c):
        store.save(record, now=T0)

    report = report_from_store(
        store,
        customers_served=1000,
        start=datetime(2026, 3, 1, tzinfo=UTC),
        end=datetime(2026, 4, 1, tzinfo=UTC),
    )
    got = report.to_json()
    assert got["customer_minutes"] == pytest.approx(12_000)
    assert got["saidi_min"] == pytest.approx(12.0)
    assert got["saifi"] == pytest.approx(0.25)
    assert got["caidi_min"] == pytest.approx(48.0)
    assert got["maifi_e"] == pytest.approx(0.2)
    assert got["asai"] == pytest.approx(1 - 12_000 / (1000 * 31 * 1440), rel=1e-12)
    assert got["customers_interrupted_distinct"] == 150
    assert got["caifi"] == pytest.approx(250 / 150)
    assert got["ctaidi_min"] == pytest.approx(80.0)
    assert got["ens_mwh"] == pytest.approx(0.2)
    assert got["t_med_min"] is None
    assert got["major_event_days"] == []
    # per feeder (an area): the same rows, its own N_T
    area = report_from_store(
        store,
        customers_served=500,
        start=datetime(2026, 3, 1, tzinfo=UTC),
        end=datetime(2026, 4, 1, tzinfo=UTC),
        feeders=["F1"],
    )
    assert area.indices.saidi_min == pytest.approx(24.0)
    assert report_from_store(
        store, customers_served=500, start=T0, end=T0 + timedelta(days=1), feeders=["F2"]
    ).indices.saifi == pytest.approx(0.0)


def test_counts_only_records_give_no_caifi(store: OutageStore) -> None:
    record = OutageRecord(source="planned", state="confirmed", start=T0, customers=10, created_by="t", feeder="F")
    record = add_restoration_step(record, T0 + timedelta(minutes=20), customers=4, actor="op")
    store.save(close(record, T0 + timedelta(minutes=40), actor="op"), now=T0)
    got = report_from_store(
        store, customers_served=100, start=T0 - timedelta(days=1), end=T0 + timedelta(days=1)
    ).to_json()
    assert got["customer_minutes"] == pytest.approx(4 * 20 + 6 * 40)
    assert "caifi" not in got
    assert "ctaidi_min" not in got
    assert got["ens_mwh"] is None


# -- the record's life: bad input ------------------------------------------------------------------------------
def test_steps_refuse_times_nodes_and_counts_that_do_not_fit() -> None:
    a = _record(T0, [("L1", "N1", 100), ("L2", "N2", 50)])
    with pytest.raises(InputError, match="before the outage's start"):
        add_restoration_step(a, T0 - timedelta(minutes=1), nodes=["N1"], actor="op")
    with pytest.raises(InputError, match="before the outage's start"):
        close(a, T0 - timedelta(seconds=1), actor="op")
    with pytest.raises(InputError, match="not interrupted"):
        add_restoration_step(a, T0 + timedelta(minutes=5), nodes=["N7"], actor="op")
    with pytest.raises(InputError, match="name the nodes"):
        add_restoration_step(a, T0 + timedelta(minutes=5), customers=10, actor="op")
    with pytest.raises(InputError, match="time zone"):
        add_restoration_step(a, datetime(2026, 3, 2, 11, 0), nodes=["N1"], actor="op")
    stepped = add_restoration_step(a, T0 + timedelta(minutes=30), nodes=["N1"], actor="op")
    with pytest.raises(InputError, match="before the last restoration step"):
        close(stepped, T0 + timedelta(minutes=10), actor="op")
    with pytest.raises(ConflictError, match="close it instead"):
        cancel(stepped, T0 + timedelta(minutes=40))
    done = close(stepped, T0 + timedelta(minutes=40), actor="op")
    for action in (
        lambda: close(done, T0 + timedelta(hours=1), actor="op"),
        lambda: assign_crew(done, "crew 7", T0),
        lambda: set_etr(done, T0 + timedelta(hours=2)),
    ):
        with pytest.raises(ConflictError, match="restored"):
            action()
    with pytest.raises(InputError, match="before the outage's start"):
        set_etr(a, T0 - timedelta(hours=1))
    with pytest.raises(InputError, match="control character"):
        assign_crew(a, "crew\x00 7", T0)
    with pytest.raises(InputError, match="one line"):
        assign_crew(a, "crew\n7", T0)
    counted = OutageRecord(source="call", state="confirmed", start=T0, customers=10, created_by="t")
    with pytest.raises(InputError, match="between 0 and the 10"):
        add_restoration_step(counted, T0 + timedelta(minutes=9), customers=11, actor="op")


# -- a trip ----------------------------------------------------------------------------------------------------
def test_trip_outage_interrupts_what_the_trip_de_energises(grid_of: Callable[[str], Grid]) -> None:
    grid = grid_of(RURAL)
    row = feeder_breaker(grid)
    name = str(grid.switch_names[row])
    closed = grid.switches["closed"].copy()
    closed[row] = 0
    dead = ~analyse_topology(grid.with_switch_states(closed)).node_energised & analyse_topology(grid).node_energised
    counts = customer_counts(grid)
    load_rows = grid.node_positions(grid.component("sym_load")["node"])
    expected = int(counts[dead[load_rows]].sum())

    record = open_outage_from_trip(grid, name, T0, actor="scada")
    assert record.state == OutageState.CONFIRMED
    assert record.source == "trip"
    assert record.device == name
    assert set(record.nodes) == {str(n) for n in grid.names_of("node")[dead]}
    assert record.customers == expected > 0
    assert sum(ld.customers for ld in record.loads) == expected
    p_w = np.abs(grid.component("sym_load")["p_specified"])
    with_customers = dead[load_rows] & (counts > 0)
    assert sum(ld.p_w or 0.0 for ld in record.loads) == pytest.approx(float(p_w[with_customers].sum()))
    # the states read after the trip give the same outage
    after = open_outage_from_trip(grid.with_switch_states(closed), name, T0)
    assert after.nodes == record.nodes
    assert after.customers == record.customers
    with pytest.raises(UnknownSwitchError):
        open_outage_from_trip(grid, "no such switch", T0)

    # restore half the nodes, then close: every customer counted once, nodes named
    half = record.nodes[: len(record.nodes) // 2]
    stepped = add_restoration_step(record, T0 + timedelta(minutes=12), nodes=half, actor="op")
    done = close(stepped, T0 + timedelta(minutes=50), actor="op")
    assert sum(s.customers for s in done.steps) == expected
    assert {n for s in done.steps for n in s.nodes} == set(record.nodes)


# -- calls -----------------------------------------------------------------------------------------------------
def _protective_on_path(grid: Grid, tree: SupplyTree, node_row: int) -> list[int]:
    """The protective switch rows on the source path of a node, from the source down (independent of SupplyTree)."""
    topology = analyse_topology(grid)
    path = path_from_source(topology, int(topology.node_id[node_row]))
    assert path is not None
    kinds = np.array([str(k).lower() for k in grid.switch_kinds])
    protective = np.isin(kinds, ["cb", "fuse", "recloser"]) & (grid.switches["closed"] == 1)
    out = []
    for branch in path.branches.tolist():
        hits = np.flatnonzero(protective & (grid.switches["element"] == branch))
        if hits.size:
            out.append(int(hits[0]))
    return out


def _laterals(grid: Grid, tree: SupplyTree) -> list[tuple[int, list[int]]]:
    """Protective switches with the load nodes whose deepest protective device they are (at least two)."""
    loads = grid.component("sym_load")
    rows = sorted({int(r) for r in grid.node_positions(loads["node"]) if tree.topology.node_energised[r]})
    by_device: dict[int, list[int]] = {}
    for r in rows:
        path = _protective_on_path(grid, tree, r)
        if path:
            by_device.setdefault(path[-1], []).append(r)
    return [(d, nodes) for d, nodes in sorted(by_device.items()) if len(nodes) >= 2]


def _load_at(grid: Grid, node_row: int) -> str:
    loads = grid.component("sym_load")
    at = grid.node_positions(loads["node"])
    return str(grid.names_of("sym_load")[np.flatnonzero(at == node_row)[0]])


@pytest.mark.parametrize("code", [RURAL, URBAN])
def test_calls_from_one_lateral_predict_its_device(
    code: str, grid_of: Callable[[str], Grid], store: OutageStore
) -> None:
    grid = grid_of(code)
    manager = OutageManager(store, grid, threshold=3)
    tree = manager.tree()
    laterals = _laterals(grid, tree)
    assert laterals
    device, nodes = max(laterals, key=lambda item: len(item[1]))
    outage_ids = set()
    for k, node_row in enumerate(nodes[:4]):
        call, record = manager.log_call(
            time=T0 + timedelta(minutes=k), text=f"no power at {k}", actor="op", load=_load_at(grid, node_row)
        )
        outage_ids.add(record.id)
        assert call.outage_id == record.id
    assert len(outage_ids) == 1
    record = store.get(outage_ids.pop())
    assert record.state == OutageState.PREDICTED
    assert record.source == "call"
    assert record.device == str(grid.switch_names[device])
    assert record.start == T0
    assert len(store.calls(int(record.id))) == min(4, len(nodes))
    # the prediction interrupts what opening the device would: the same nodes and customers as a trip of it
    trip = open_outage_from_trip(grid, str(grid.switch_names[device]), T0)
    assert set(record.nodes) == set(trip.nodes)
    assert record.customers == trip.customers


def test_calls_from_two_laterals_extend_past_the_threshold_only(grid_of: Callable[[str], Grid], tmp_path: Path) -> None:
    grid = grid_of(URBAN)
    probe = OutageManager(OutageStore(Historian.open(f"sqlite:///{tmp_path / 'probe.db'}").engine), grid)
    tree = probe.tree()
    laterals = _laterals(grid, tree)
    pair = None
    for i, (d1, n1) in enumerate(laterals):
        for d2, n2 in laterals[i + 1 :]:
            p1, p2 = _protective_on_path(grid, tree, n1[0]), _protective_on_path(grid, tree, n2[0])
            common = [s for s in p1 if s in p2]
            if common and tree.feeder_of(n1[0]) == tree.feeder_of(n2[0]) is not None and d1 not in p2 and d2 not in p1:
                pair = (d1, n1, d2, n2, common[-1])
                break
        if pair:
            break
    assert pair is not None, "the urban grid has two laterals under one protective device"
    d1, n1, d2, n2, expected = pair

    # threshold 3: the second call (outside the first prediction) opens its own
    low = OutageManager(OutageStore(Historian.open(f"sqlite:///{tmp_path / 'a.db'}").engine), grid, threshold=3)
    _, first = low.log_call(time=T0, text="dark", actor="op", node=str(tree.node_names[n1[0]]))
    _, second = low.log_call(time=T0 + timedelta(minutes=1), text="dark", actor="op", node=str(tree.node_names[n2[0]]))
    assert first.id != second.id
    assert (first.device, second.device) == (str(grid.switch_names[d1]), str(grid.switch_names[d2]))

    # threshold 2: the second call extends the first prediction to the nearest common protective device
    high = OutageManager(OutageStore(Historian.open(f"sqlite:///{tmp_path / 'b.db'}").engine), grid, threshold=2)
    _, first = high.log_call(time=T0, text="dark", actor="op", node=str(tree.node_names[n1[0]]))
    _, grown = high.log_call(time=T0 + timedelta(minutes=1), text="dark", actor="op", node=str(tree.node_names[n2[0]]))
    assert grown.id == first.id
    assert grown.device == str(grid.switch_names[expected])
    assert grown.start == T0
    assert {str(tree.node_names[n1[0]]), str(tree.node_names[n2[0]])} <= set(grown.nodes)
    assert len(high.store.open_outages()) == 1


def test_calls_refuse_unknown_places_and_bad_text(grid_of: Callable[[str], Grid], store: OutageStore) -> None:
    grid = grid_of(RURAL)
    manager = OutageManager(store, grid)
    node = str(grid.names_of("node")[-1])
    with pytest.raises(NotFoundError, match="no node"):
        manager.log_call(time=T0, text="dark", actor="op", node="no such node")
    with pytest.raises(NotFoundError, match="no load"):
        manager.log_call(time=T0, text="dark", actor="op", load="no such load")
    with pytest.raises(InputError, match="either"):
        manager.log_call(time=T0, text="dark", actor="op")
    for bad in ("", "dark\x1b[2J", "dark\u202e", "x" * 5000):
        with pytest.raises(InputError):
            manager.log_call(time=T0, text=bad, actor="op", node=node)
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outage_calls)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(outages)).scalar_one() == 0
    with pytest.raises(InputError, match="threshold"):
        OutageManager(store, grid, threshold=0)


def test_a_call_in_a_tripped_area_joins_the_trip_outage(grid_of: Callable[[str], Grid], store: OutageStore) -> None:
    grid = grid_of(RURAL)
    row = feeder_breaker(grid)
    manager = OutageManager(store, grid)
    trip = manager.open_from_trip(str(grid.switch_names[row]), T0, actor="scada")
    closed = grid.switches["closed"].copy()
    closed[row] = 0
    after = grid.with_switch_states(closed)
    call, joined = manager.log_call(
        time=T0 + timedelta(minutes=3), text="dark", actor="op", node=trip.nodes[0], grid=after
    )
    assert joined.id == trip.id
    assert call.outage_id == trip.id
    assert joined.state == OutageState.CONFIRMED


# -- the database report equals the CSV report -----------------------------------------------------------------
def _history(path: Path) -> None:
    rng = np.random.default_rng(1366)
    first = pd.Timestamp("2020-06-01T00:00Z").value // 1000
    last = pd.Timestamp("2027-01-01T00:00Z").value // 1000
    n = 700
    starts = np.sort(rng.integers(first, last, n))
    minutes = np.exp(rng.normal(3.5, 1.3, n))
    customers = rng.integers(1, 800, n)
    storms = rng.choice(n, 8, replace=False)
    customers[storms] = rng.integers(5_000, 20_000, 8)
    minutes[storms] = rng.uniform(300, 2000, 8)
    lines = ["event,start,end,customers,feeder,cause"]
    for i in range(n):
        t = pd.Timestamp(int(starts[i]) * 1000, tz="UTC")
        steps = 2 if i % 5 == 0 else 1
        for k in range(steps):
            end = t + pd.Timedelta(minutes=float(minutes[i]) * (k + 1) / steps)
            lines.append(f"E{i},{t.isoformat()},{end.isoformat()},{int(customers[i]) // steps + k},F{i % 3},c{i % 4}")
    # two storms in the reported year: 30,000 customers for 10 h, daily SAIDI 450 min, far above T_MED
    for day in ("2026-02-14", "2026-07-30"):
        lines.append(f"S{day},{day}T18:00:00+00:00,{day}T23:59:00+00:00,15000,F1,storm")
        lines.append(f"S{day},{day}T18:00:00+00:00,{day}T23:59:00+00:00,15000,F2,storm")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_database_report_equals_the_csv_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "history.csv"
    _history(csv)
    db = ["--data-dir", str(tmp_path / "data")]
    status, out, err = run(capsys, "outages", "import", str(csv), *db, "--json")
    assert status == 0, err
    assert json.loads(out)["imported"] == 702
    common = ["--customers-served", "40000", "--from", "2026-01-01T00:00Z", "--to", "2027-01-01T00:00Z"]
    for extra in ([], ["--tz", "America/Chicago"], ["--feeder", "F1"], ["--feeder", "F0", "--feeder", "F2"]):
        status, from_csv, err = run(capsys, "reliability", "--outages", str(csv), *common, *extra, "--json")
        assert status == 0, err
        status, from_db, err = run(capsys, "reliability", *db, *common, *extra, "--json")
        assert status == 0, err
        a, b = json.loads(from_csv), json.loads(from_db)
        assert a.keys() == b.keys()
        assert a["major_event_days"] == b["major_event_days"]
        for key, value in a.items():
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-12), key
            elif isinstance(value, dict):
                for inner, number in value.items():
                    assert b[key][inner] == pytest.approx(number, rel=1e-12), (key, inner)
            else:
                assert b[key] == value, key
        if not extra:
            assert a["t_med_min"] is not None
            assert a["major_event_days"] == ["2026-02-14", "2026-07-30"]
            assert a["without_med"]["saidi_min"] < a["saidi_min"]

    status, out, err = run(capsys, "outages", "list", *db, "--json", "--limit", "5")
    assert status == 0, err
    listed = json.loads(out)
    assert len(listed) == 5
    assert all(r["state"] == "restored" and r["source"] == "import" for r in listed)
    assert listed[0]["external_id"] == "S2026-07-30"
    status, out, _ = run(capsys, "outages", "list", *db)
    assert status == 0
    assert "restored" in out


def _count(data: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{data / 'opendso.db'}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(outages)).scalar_one())
    finally:
        engine.dispose()


def test_import_is_one_transaction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    db = ["--data-dir", str(data)]
    good = tmp_path / "good.csv"
    good.write_text(
        "event,start,end,customers,feeder,cause\n"
        "A,2026-01-05T10:00Z,2026-01-05T11:00Z,10,F1,x\n"
        "B,2026-01-06T10:00Z,2026-01-06T10:30Z,5,F1,y\n",
        encoding="utf-8",
    )
    assert run(capsys, "outages", "import", str(good), *db)[0] == 0
    assert _count(data) == 2
    # end before start in row 3: exit 2 naming the file and the row; nothing stored
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "event,start,end,customers,feeder,cause\n"
        "C,2026-02-05T10:00Z,2026-02-05T11:00Z,10,F1,x\n"
        "D,2026-02-06T10:00Z,2026-02-06T10:30Z,5,F1,y\n"
        "E,2026-02-07T10:00Z,2026-02-07T09:30Z,5,F1,y\n",
        encoding="utf-8",
    )
    status, _, err = run(capsys, "outages", "import", str(bad), *db)
    assert status == 2
    assert "bad.csv" in err
    assert "row 3" in err
    assert "before" in err
    assert _count(data) == 2
    # an event imported before (row 2 of this file): exit 2, nothing stored
    again = tmp_path / "again.csv"
    again.write_text(
        "event,start,end,customers,feeder,cause\n"
        "F,2026-03-05T10:00Z,2026-03-05T11:00Z,10,F1,x\n"
        "\n"
        "B,2026-01-06T10:00Z,2026-01-06T10:30Z,5,F1,y\n",
        encoding="utf-8",
    )
    status, _, err = run(capsys, "outages", "import", str(again), *db)
    assert status == 2
    assert "again.csv" in err
    assert "row 3" in err
    assert "'B'" in err
    assert _count(data) == 2


def test_reliability_from_a_missing_database_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(
        capsys,
        "reliability",
        "--data-dir",
        str(tmp_path / "nowhere"),
        "--customers-served",
        "10",
        "--from",
        "2026-01-01T00:00Z",
        "--to",
        "2026-02-01T00:00Z",
    )
    assert status == 2
    assert "no database" in err


def test_records_round_trip_whole(any_store: OutageStore) -> None:
    store = any_store
    a = _record(T0, [("L1", "N1", 100), ("L2", "N2", 50)])
    a = assign_crew(a, "crew 7", T0 + timedelta(minutes=2))
    a = set_etr(a, T0 + timedelta(hours=2))
    saved = store.save(add_restoration_step(a, T0 + timedelta(minutes=30), nodes=["N1"], actor="op"), now=T0)
    back = store.get(int(saved.id))  # type: ignore[arg-type]
    assert back == saved
    assert back.to_dict(with_loads=True)["loads"][0] == {
        "load": "L1",
        "node": "N1",
        "customers": 100,
        "p_w": 100_000.0,
        "restored": (T0 + timedelta(minutes=30)).isoformat(),
    }
    with pytest.raises(NotFoundError):
        store.get(99999)
    assert math.isclose(back.customers_off, 50)
