"""The DER registry: records, the request state machine, the queue, the read API, the CSV import and the CLI.

Independent references: the state machine is checked against the issue's list of moves by
walking every pair of statuses; the nodes "behind" a node are checked against networkx (the
nodes cut off from the source when the node is removed); the queue against a sort by received
time done here.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import networkx as nx
import pytest

from opendso.cli.command import main
from opendso.der import (
    AccessPrinciple,
    Agreement,
    AgreementKind,
    AssetKind,
    ConnectionRequest,
    Control,
    ControlProtocol,
    DerAsset,
    DerRegistry,
    RequestStatus,
    read_der_csv,
)
from opendso.errors import ConflictError, DerFileError, InputError, NotFoundError
from opendso.grid.model import Grid
from opendso.store import migrate
from opendso.store.der import DerStore
from opendso.store.engine import create_engine

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)

#: The moves the issue's workflow allows (received -> studied -> offered -> accepted -> connected;
#: withdrawn by the customer before connection; rejected by the DSO before acceptance).
ALLOWED = {
    ("received", "studied"),
    ("studied", "offered"),
    ("offered", "accepted"),
    ("accepted", "connected"),
    *((s, "withdrawn") for s in ("received", "studied", "offered", "accepted")),
    *((s, "rejected") for s in ("received", "studied", "offered")),
}


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of("demo")


@pytest.fixture
def registry(db_url: str, grid: Grid) -> Iterator[DerRegistry]:
    engine = create_engine(db_url)
    migrate.upgrade(engine)
    audited: list[tuple[str, dict[str, object]]] = []

    def audit(action: str, **kw: object) -> None:
        audited.append((action, kw))

    reg = DerRegistry(DerStore(engine), grid, audit=audit, clock=lambda: T0)
    reg.audited = audited  # type: ignore[attr-defined]
    yield reg
    engine.dispose()


def mv_nodes(grid: Grid) -> list[str]:
    return sorted(str(n) for n in grid.names_of("node").tolist() if str(n).startswith("MV2.101 Bus"))


def pv(asset_id: str, node: str, *, flexible: AccessPrinciple | None = None, kw: float = 500.0) -> DerAsset:
    agreement = Agreement(AgreementKind.FLEXIBLE, flexible, 5.0, kw / 2) if flexible is not None else Agreement()
    return DerAsset(
        asset_id,
        f"Solar {asset_id}",
        AssetKind.PV,
        node,
        "Sunny Fields Ltd",
        export_kw=kw,
        control=Control(ControlProtocol.MODBUS, "10.0.0.7:502/1/40100"),
        agreement=agreement,
    )


# -- the records ----------------------------------------------------------------------------------------------
def test_the_state_machine_allows_exactly_the_workflow_moves() -> None:
    for a, b in itertools.product(RequestStatus, RequestStatus):
        request = ConnectionRequest("R1", "A1", T0, a)
        if (a.value, b.value) in ALLOWED:
            moved = request.moved(b, at=T0, actor="erin", note="ok")
            assert moved.status is b
            assert moved.history[-1].from_status is a
            assert request.status is a  # records are immutable
        else:
            with pytest.raises(ConflictError, match=f"cannot become {b.value}"):
                request.moved(b, at=T0, actor="erin")
    finals = {s for s in RequestStatus if not any(x == s.value for x, _ in ALLOWED)}
    assert {s.value for s in finals} == {"connected", "withdrawn", "rejected"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Agreement(AgreementKind.FIRM, AccessPrinciple.LIFO), "firm agreement has no"),
        (lambda: Agreement(AgreementKind.FLEXIBLE), "needs a principle"),
        (lambda: Agreement(AgreementKind.FLEXIBLE, AccessPrinciple.LIFO, 5.0), "curtailment cap and an export"),
        (lambda: Agreement(AgreementKind.FLEXIBLE, AccessPrinciple.LIFO, 101.0, 1.0), "more than 100"),
        (lambda: Agreement(AgreementKind.FLEXIBLE, AccessPrinciple.LIFO, 5.0, float("nan")), "not a number"),
        (
            lambda: DerAsset(
                "A1",
                "x",
                AssetKind.PV,
                "n",
                "o",
                export_kw=100.0,
                agreement=Agreement(AgreementKind.FLEXIBLE, AccessPrinciple.LIFO, 5.0, 200.0),
            ),
            "above the asset's export capacity",
        ),
        (lambda: DerAsset("A1", "x", AssetKind.BATTERY, "n", "o", export_kw=1.0), "battery needs a storage"),
        (lambda: DerAsset("A1", "x", AssetKind.PV, "n", "o", export_kw=1.0, storage_kwh=3.0), "stores no energy"),
        (lambda: DerAsset("A1", "x", AssetKind.HEAT_PUMPS, "n", "o"), "both 0"),
        (lambda: DerAsset("../etc", "x", AssetKind.PV, "n", "o", export_kw=1.0), "not an id"),
        (lambda: DerAsset("A1", "x\u202e", AssetKind.PV, "n", "o", export_kw=1.0), "name"),
        (lambda: DerAsset("A1", "x", AssetKind.PV, "n", "o", export_kw=-1.0), "outside"),
        (lambda: Control(ControlProtocol.NONE, "1.2.3.4"), "protocol is 'none'"),
        (lambda: ConnectionRequest("R1", "A1", datetime(2026, 1, 1)), "time zone"),
    ],
)
def test_malformed_records_are_refused(make: Callable[[], object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        make()


def test_records_round_trip_through_json() -> None:
    asset = pv("A1", "MV2.101 Bus 3", flexible=AccessPrinciple.PRO_RATA)
    assert DerAsset.from_json(json.loads(json.dumps(asset.to_json()))) == asset
    request = ConnectionRequest("R1", "A1", T0).moved(RequestStatus.STUDIED, at=T0, actor="erin", note="load flow ok")
    assert ConnectionRequest.from_json(json.loads(json.dumps(request.to_json()))) == request


# -- the registry -----------------------------------------------------------------------------------------
def test_the_queue_is_in_received_order_and_changes_are_checked(registry: DerRegistry, grid: Grid) -> None:
    nodes = mv_nodes(grid)
    with pytest.raises(InputError, match="not a node of the grid"):
        registry.add_asset(pv("A0", "Nowhere 1"), actor="erin")
    received = {"A1": T0 + timedelta(days=3), "A2": T0 + timedelta(days=1), "A3": T0 + timedelta(days=2)}
    for k, asset_id in enumerate(received):
        registry.add_asset(pv(asset_id, nodes[k]), actor="erin", source_ip="10.1.1.1")
        registry.submit(f"R-{asset_id}", asset_id, received_at=received[asset_id], actor="erin")
    with pytest.raises(ConflictError, match="exists already"):
        registry.add_asset(pv("A1", nodes[0]), actor="erin")
    with pytest.raises(ConflictError, match="has request R-A1"):
        registry.submit("R-A1b", "A1", actor="erin")
    with pytest.raises(NotFoundError):
        registry.submit("R-X", "nope", actor="erin")
    expected = sorted(received, key=lambda a: received[a])
    queue = registry.queue()
    assert [e.asset.id for e in queue] == expected
    assert [e.position for e in queue] == [1, 2, 3]
    assert [e.request.id for e in registry.ahead_of("R-A1")] == ["R-A2", "R-A3"]
    assert registry.ahead_of("R-A2") == []
    # moves: compare-and-set on the version read
    moved, version = registry.move("R-A2", 1, RequestStatus.STUDIED, actor="erin", note="studied")
    assert (moved.status, version) == (RequestStatus.STUDIED, 2)
    with pytest.raises(ConflictError, match="changed by someone else"):
        registry.move("R-A2", 1, RequestStatus.WITHDRAWN, actor="sam")
    with pytest.raises(ConflictError, match="cannot become connected"):
        registry.move("R-A2", 2, RequestStatus.CONNECTED, actor="erin")
    registry.move("R-A2", 2, RequestStatus.WITHDRAWN, actor="erin", note="customer withdrew")
    assert [e.request.id for e in registry.queue()] == ["R-A3", "R-A1"]
    with pytest.raises(ConflictError, match="not in the queue"):
        registry.ahead_of("R-A2")
    # after a withdrawal the asset may ask again, and joins the end of the queue
    registry.submit("R-A2b", "A2", received_at=T0 + timedelta(days=9), actor="erin")
    assert [e.request.id for e in registry.queue()] == ["R-A3", "R-A1", "R-A2b"]
    actions = [a for a, _ in registry.audited]  # type: ignore[attr-defined]
    assert actions.count("der.asset_added") == 3
    assert "der.request_withdrawn" in actions
    assert registry.audited[0][1]["source_ip"] == "10.1.1.1"  # type: ignore[attr-defined]


def test_an_asset_update_names_its_version(registry: DerRegistry, grid: Grid) -> None:
    nodes = mv_nodes(grid)
    registry.add_asset(pv("A1", nodes[0]), actor="erin")
    changed = pv("A1", nodes[1], flexible=AccessPrinciple.LIFO)
    _, version = registry.update_asset("A1", 1, changed, actor="erin")
    assert version == 2
    assert registry.asset("A1") == (changed, 2)
    with pytest.raises(ConflictError, match="changed by someone else"):
        registry.update_asset("A1", 1, pv("A1", nodes[2]), actor="sam")
    with pytest.raises(InputError, match="names asset A2"):
        registry.update_asset("A1", 2, pv("A2", nodes[2]), actor="sam")


def test_nodes_behind_a_node_are_those_cut_off_without_it(registry: DerRegistry, grid: Grid) -> None:
    from opendso.grid.topology import analyse_topology

    topology = analyse_topology(grid)
    energised = {
        str(n) for n, e in zip(grid.names_of("node").tolist(), topology.node_energised.tolist(), strict=True) if e
    }
    data = grid.pgm_input()
    ids = dict(zip(grid.names_of("node").tolist(), data["node"]["id"].tolist(), strict=True))
    g = nx.Graph()
    g.add_nodes_from(ids.values())
    for component in ("line", "link", "transformer"):
        branch = data[component]
        on = (branch["from_status"] == 1) & (branch["to_status"] == 1)
        g.add_edges_from(zip(branch["from_node"][on].tolist(), branch["to_node"][on].tolist(), strict=True))
    source = int(data["source"]["node"][0])
    checked = 0
    for node in mv_nodes(grid)[:12]:
        if node not in energised:
            continue
        cut = g.copy()
        cut.remove_node(ids[node])
        fed = nx.node_connected_component(cut, source)
        expected = {n for n in energised if ids[n] not in fed}
        assert registry.nodes_behind(node) == expected, node
        checked += 1
    assert checked >= 5


def test_flexible_assets_behind_a_node_in_the_order_of_their_principle(registry: DerRegistry, grid: Grid) -> None:
    # a node with a few nodes behind it, and one node outside its subtree
    candidates = [(n, registry.nodes_behind(n)) for n in mv_nodes(grid)]
    node, behind = next((n, b) for n, b in candidates if 4 <= len(b) <= 40)
    inside = sorted(behind - {node})[:3]
    outside = next(n for n in mv_nodes(grid) if n not in behind)
    days = {"L1": 1, "L2": 5, "L3": 3}
    for (asset_id, day), at in zip(days.items(), inside, strict=True):
        registry.add_asset(pv(asset_id, at, flexible=AccessPrinciple.LIFO), actor="erin")
        request, v = registry.submit(f"R{asset_id}", asset_id, received_at=T0 + timedelta(days=day), actor="erin")
        for to in (RequestStatus.STUDIED, RequestStatus.OFFERED, RequestStatus.ACCEPTED, RequestStatus.CONNECTED):
            request, v = registry.move(request.id, v, to, actor="erin")
    registry.add_asset(pv("P1", node, flexible=AccessPrinciple.PRO_RATA), actor="erin")  # existing, no request
    registry.add_asset(pv("P2", inside[0], flexible=AccessPrinciple.PRO_RATA), actor="erin")
    registry.add_asset(pv("F1", inside[1]), actor="erin")  # firm: never listed
    registry.add_asset(pv("X1", outside, flexible=AccessPrinciple.LIFO), actor="erin")  # not behind
    registry.add_asset(pv("Q1", inside[2], flexible=AccessPrinciple.LIFO), actor="erin")
    registry.submit("RQ1", "Q1", received_at=T0, actor="erin")  # still queued: not connected yet

    seniority = [f.asset.id for f in registry.flexible_behind(node)]
    assert seniority == ["P1", "P2", "L1", "L3", "L2"]
    assert "Q1" in [f.asset.id for f in registry.flexible_behind(node, connected_only=False)]
    lifo = registry.curtailment_order(node, AccessPrinciple.LIFO)
    assert [[f.asset.id for f in group] for group in lifo] == [["L2"], ["L3"], ["L1"]]  # newest first
    pro_rata = registry.curtailment_order(node, AccessPrinciple.PRO_RATA)
    assert [[f.asset.id for f in group] for group in pro_rata] == [["P1", "P2"]]
    with pytest.raises(InputError, match="sensitivity"):
        registry.curtailment_order(node, AccessPrinciple.TECHNICAL_BEST)
    assert [a.id for a in registry.assets_at(inside[2])] == ["L3"]  # Q1 is queued, not connected
    assert [a.id for a in registry.assets_at(inside[2], connected_only=False)] == ["L3", "Q1"]
    assert [a.id for a in registry.assets_at(inside[0])] == ["L1", "P2"]
    assert registry.feeder_of(node) is not None
    assert [a.id for a, _ in registry.assets(feeder=registry.feeder_of(outside))] == (
        ["X1"] if registry.feeder_of(outside) != registry.feeder_of(node) else [a.id for a, _ in registry.assets()]
    )


# -- the CSV ------------------------------------------------------------------------------------------------
HEADER = (
    "asset_id,name,kind,node,owner,aggregator,export_kw,import_kw,storage_kwh,control_protocol,control_address,"
    "agreement,principle,curtailment_cap_pct,export_limit_kw,request_id,received_at,status"
)


def _csv(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "der.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def good_rows(nodes: list[str]) -> list[str]:
    return [
        f"PV-1,Solar farm 1,pv,{nodes[0]},Sunny Ltd,,2000,0,,modbus,10.0.0.7:502/1/40100,flexible,lifo,5,500,"
        "CR-1,2026-03-01T09:00Z,connected",
        f"BAT-1,Grid battery,battery,{nodes[1]},Store Co,Agg One,1000,1000,2000,iec104,CA 12 IOA 4001,flexible,"
        "pro_rata,3,400,CR-2,2026-05-01T09:00+02:00,offered",
        f"DC-1,Data centre,flexible_load,{nodes[2]},Cloud Inc,,0,8000,,openadr,ven-dc1,,,,,CR-3,2026-02-01T00:00Z,",
        f"HP-1,Heat pumps Elm St,heat_pumps,{nodes[3]},Housing Assoc,,0,300,,none,,firm,,,,,,",
    ]


def test_a_registry_csv_is_read_whole(tmp_path: Path, grid: Grid) -> None:
    nodes = mv_nodes(grid)
    table = read_der_csv(_csv(tmp_path, good_rows(nodes)), nodes=set(grid.names_of("node").tolist()))
    assert [a.id for a in table.assets] == ["PV-1", "BAT-1", "DC-1", "HP-1"]
    assert [(r.id, r.status.value) for r in table.requests] == [
        ("CR-1", "connected"),
        ("CR-2", "offered"),
        ("CR-3", "received"),
    ]
    battery = table.assets[1]
    assert battery.agreement == Agreement(AgreementKind.FLEXIBLE, AccessPrinciple.PRO_RATA, 3.0, 400.0)
    assert battery.aggregator == "Agg One"
    assert table.requests[1].received_at == datetime(2026, 5, 1, 7, 0, tzinfo=UTC)
    # columns may come in any order and optional ones may be left out
    minimal = _csv(tmp_path, ["n1,A7,P,wind,O,5,0"], header="node,asset_id,name,kind,owner,export_kw,import_kw")
    assert read_der_csv(minimal).assets[0].kind is AssetKind.WIND


def test_every_problem_of_a_malformed_csv_is_named_with_row_and_field(tmp_path: Path, grid: Grid) -> None:
    nodes = mv_nodes(grid)
    rows = [
        *good_rows(nodes)[:2],
        f"PV-1,Again,pv,{nodes[0]},X,,10,0,,,,,,,,,,",  # 3: duplicate asset id
        f"PV-3,Solar 3,nuclear,{nodes[0]},X,,ten,0,,,,,,,,,,",  # 4: kind, export_kw
        "PV-4,Solar 4,pv,No such bus,X,,10,0,,,,,,,,,,",  # 5: node
        f"PV-5,Solar 5,pv,{nodes[0]},X,,10,0,,,,flexible,lifo,5,50,,,",  # 6: export limit above capacity
        f"PV-6,Solar 6,pv,{nodes[0]},X,,10,0,,,,,,,,CR-9,2026-03-01T09:00,",  # 7: no zone
        f"PV-7,Solar 7,pv,{nodes[0]},X,,10,0,,,,,,,,,2026-03-01T09:00Z,",  # 8: time without request
        f"PV-8,Solar 8,pv,{nodes[0]},X,,10,0,,,,,,,,CR-1,2026-03-01T09:00Z,",  # 9: duplicate request id
    ]
    with pytest.raises(DerFileError) as caught:
        read_der_csv(_csv(tmp_path, rows), nodes=set(grid.names_of("node").tolist()))
    found = {(row, field) for row, field, _ in caught.value.problems}
    assert found == {
        (3, "asset_id"),
        (4, "kind"),
        (4, "export_kw"),
        (5, "node"),
        (6, "export_limit_kw"),
        (7, "received_at"),
        (8, "received_at"),
        (9, "request_id"),
    }
    message = str(caught.value)
    assert "der.csv, row 5, field 'node': 'No such bus' is not a node of the grid" in message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty"),
        (b"asset_id,name\n", "required column is missing"),
        (HEADER.encode() + b",colour\n", "unknown column"),
        (HEADER.encode() + b"\n", "no data rows"),
        (b"\xff\xfe" + HEADER.encode("utf-16-le"), "not UTF-8"),
        (HEADER.encode() + b'\nA1,"unterminated\n', "malformed CSV|more values|is empty"),
        (HEADER.encode() + b"\nA1,x,pv,n,o,,1,0,,,,,,,,,,,extra\n", "more values than columns"),
    ],
)
def test_hostile_files_are_refused_with_one_error(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "der.csv"
    path.write_bytes(content)
    with pytest.raises(DerFileError, match=problem):
        read_der_csv(path)


def test_an_import_is_all_or_nothing(registry: DerRegistry, tmp_path: Path, grid: Grid) -> None:
    nodes = mv_nodes(grid)
    table = read_der_csv(_csv(tmp_path, good_rows(nodes)), nodes=set(grid.names_of("node").tolist()))
    registry.add_asset(pv("DC-1", nodes[5]), actor="erin")  # one id of the file is stored already
    with pytest.raises(ConflictError, match="DC-1 exists already"):
        registry.import_records(table.assets, table.requests, actor="cli:erin", source="der.csv")
    assert [a.id for a, _ in registry.assets()] == ["DC-1"]
    assert registry.requests() == []


# -- the command line -------------------------------------------------------------------------------------
def test_the_cli_imports_lists_and_shows_the_queue(
    tmp_path: Path, grid: Grid, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = mv_nodes(grid)
    data = ["--data-dir", str(tmp_path / "data")]
    path = _csv(tmp_path, good_rows(nodes))
    assert main(["der", "import", str(path), "--grid", "demo", *data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["assets"] == 4
    # a second import of the same file names the first row already stored, and stores nothing
    assert main(["der", "import", str(path), "--grid", "demo", *data]) == 2
    err = capsys.readouterr().err
    assert "row 1, field 'asset_id': asset PV-1 is in the registry already" in err
    assert main(["der", "list", *data, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [a["id"] for a in listed] == ["BAT-1", "DC-1", "HP-1", "PV-1"]
    assert main(["der", "queue", *data, "--json"]) == 0
    queue = json.loads(capsys.readouterr().out)
    # connected requests left the queue; the rest are in received order
    assert [(e["position"], e["id"]) for e in queue] == [(1, "CR-3"), (2, "CR-2")]
    assert main(["der", "queue", *data]) == 0
    assert "CR-3" in capsys.readouterr().out
    bad = _csv(tmp_path, ["X-1,x,pv,Nowhere,o,,1,0,,,,,,,,,,"])
    assert main(["der", "import", str(bad), "--grid", "demo", *data]) == 2
    assert "field 'node'" in capsys.readouterr().err


def test_migration_0009_creates_and_drops_exactly_the_der_tables(tmp_path: Path) -> None:
    import sqlalchemy as sa
    from alembic import command

    from opendso.store import der_schema
    from opendso.store.migrate import alembic_config, upgrade

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine, "0008")
    before = set(sa.inspect(engine).get_table_names())
    upgrade(engine, "0009")
    added = set(sa.inspect(engine).get_table_names()) - before
    assert added == {getattr(der_schema, name).name for name in der_schema.__all__}
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0008")
    assert set(sa.inspect(engine).get_table_names()) == before
    engine.dispose()
