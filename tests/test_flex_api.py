"""The flexibility desk's API: portfolios, operating envelopes and the TSO-DSO interface over HTTP.

The calculations behind it are checked against pandapower in test_envelopes.py and
test_tso_interface.py; here: the routes serve them with the right roles, shapes and caching, a
TSO request is judged and audited, and bad input is a 4xx naming it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_switching_api import Api, make_api

from opendso.der import DerRegistry
from opendso.der.model import AssetKind, DerAsset
from opendso.grid import Grid
from opendso.markets.tso import CSV_COLUMNS
from opendso.service.security import Role
from opendso.store.der import DerStore

CODE = "simbench:1-LV-rural1--0-sw"
ISSUED = "2016-06-10T00:00:00Z"
ASSETS = (
    ("F-PV1", "Flexa", "LV1.101 Bus 5", AssetKind.PV, 80.0, 0.0, 0.0),
    ("F-BAT1", "Flexa", "LV1.101 Bus 5", AssetKind.BATTERY, 40.0, 40.0, 80.0),
    ("F-EV1", "Flexa", "LV1.101 Bus 9", AssetKind.EV_HUB, 0.0, 30.0, 0.0),
    ("V-PV1", "Voltwise", "LV1.101 Bus 13", AssetKind.PV, 120.0, 0.0, 0.0),
    ("V-BAT1", "Voltwise", "LV1.101 Bus 3", AssetKind.BATTERY, 20.0, 20.0, 40.0),
)


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return grid_of(CODE)


@pytest.fixture
def api(grid: Grid, tmp_path: Path) -> Iterator[Api]:
    service = make_api(grid, tmp_path)
    registry = DerRegistry(DerStore(service.historian.engine), grid)
    for asset_id, aggregator, node, kind, export_kw, import_kw, storage in ASSETS:
        registry.add_asset(
            DerAsset(
                asset_id,
                f"DER {asset_id}",
                kind,
                node,
                "An owner",
                aggregator=aggregator,
                export_kw=export_kw,
                import_kw=import_kw,
                storage_kwh=storage,
            ),
            actor="test",
        )
    yield service
    service.historian.close()


def test_every_role_reads_the_portfolios_and_they_tally_with_the_registry(api: Api) -> None:
    for role in Role:
        client, headers = api.client(role.value)
        response = client.get("/api/flex/portfolios", headers=headers)
        assert response.status_code == 200, (role, response.text)
    books = {b["aggregator"]: b for b in response.json()["aggregators"]}
    assert sorted(books) == ["Flexa", "Voltwise"]
    assert books["Flexa"]["count"] == 3
    assert books["Voltwise"]["count"] == 2
    assert TestClient(api.app).get("/api/flex/portfolios").status_code == 401


def test_envelopes_cover_every_aggregator_and_interval_within_capacity_and_are_cached(api: Api) -> None:
    viewer, headers = api.client("viewer")
    path = f"/api/flex/envelopes?issued={ISSUED}&steps=8&rule=equal"
    first = viewer.get(path, headers=headers)
    assert first.status_code == 200, first.text
    payload = first.json()
    assert payload["rule"] == "equal"
    assert len(payload["intervals"]) == 8
    assert payload["intervals"][0]["time"] == ISSUED
    capacity = {}
    for asset_id, aggregator, node, _kind, export_kw, import_kw, _ in ASSETS:
        del asset_id
        cap = capacity.setdefault((aggregator, node), [0.0, 0.0])
        cap[0] += import_kw * 1e3
        cap[1] += export_kw * 1e3
    seen = set()
    for envelope in payload["envelopes"]:
        for point in envelope["points"]:
            key = (envelope["aggregator"], point["node"])
            seen.add(key)
            assert len(point["intervals"]) == 8
            assert all(0.0 <= i["import_max_w"] <= capacity[key][0] + 1e-6 for i in point["intervals"])
            assert all(0.0 <= i["export_max_w"] <= capacity[key][1] + 1e-6 for i in point["intervals"])
    assert seen == set(capacity)
    again = viewer.get(path, headers=headers)
    assert again.json() == payload  # served from the cache ("seconds" would differ if computed again)


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("rule=fair", 422, "rule"),
        ("steps=0", 422, "steps"),
        ("steps=1000", 422, "steps"),
        ("issued=2016-06-10T00:00:00", 400, "issued"),
        ("issued=2030-01-01T00:00:00Z", 400, "after the grid's profiles"),
        ("u_min=1.05&u_max=1.0", 400, "u_min"),
        ("loading_max=nan", 422, "loading_max"),
    ],
)
def test_bad_envelope_queries_are_4xx_naming_them(api: Api, query: str, status: int, says: str) -> None:
    viewer, headers = api.client("viewer")
    response = viewer.get(f"/api/flex/envelopes?{query}", headers=headers)
    assert response.status_code == status, response.text
    assert says in response.text


def test_the_tso_day_ahead_report_is_served_as_json_and_csv(api: Api) -> None:
    viewer, headers = api.client("viewer")
    report = viewer.get(f"/api/tso/day-ahead?issued={ISSUED}&steps=8", headers=headers)
    assert report.status_code == 200, report.text
    payload = report.json()
    assert payload["issued"] == ISSUED
    assert payload["gsps"], "the MV/LV transformer is the grid-supply point"
    for gsp in payload["gsps"]:
        assert len(gsp["intervals"]) == 8
    table = viewer.get(f"/api/tso/day-ahead.csv?issued={ISSUED}&steps=8", headers=headers)
    assert table.status_code == 200
    assert table.headers["content-type"].startswith("text/csv")
    assert "attachment" in table.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 8 * len(payload["gsps"])


def test_a_tso_request_is_judged_audited_and_refused_to_viewers(api: Api) -> None:
    viewer, vh = api.client("viewer")
    report = viewer.get(f"/api/tso/day-ahead?issued={ISSUED}&steps=96", headers=vh).json()
    gsp = report["gsps"][0]["gsp"]
    body = {"gsp": gsp, "direction": "up", "mw": 0.01, "intervals": ["2016-06-10T12:00:00Z", "2016-06-10T12:15:00Z"]}
    assert viewer.post("/api/tso/requests", json=body, headers=vh).status_code == 403
    operator, oh = api.client("operator")
    before = api.room.audit.last_seq()
    answer = operator.post("/api/tso/requests", json=body, headers=oh)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["status"] in {"accepted", "partial", "refused"}
    assert [i["interval_start"] for i in result["intervals"]] == body["intervals"]
    records = [r for r in api.room.audit.read(before) if r.action == "tso.request"]
    assert len(records) == 1
    assert records[0].actor == "operator"
    assert records[0].result == result["status"]
    # a request for far more than the DER behind the GSP can give is not accepted whole
    big = operator.post("/api/tso/requests", json={**body, "mw": 500.0, "all_or_none": True}, headers=oh)
    assert big.status_code == 200, big.text
    assert big.json()["status"] == "refused"
    assert all(i["reason"] for i in big.json()["intervals"])


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"gsp": "nowhere"}, 400, "grid-supply point"),
        ({"direction": "sideways"}, 422, "direction"),
        ({"mw": -1.0}, 422, "mw"),
        ({"mw": "Infinity"}, 422, "mw"),
        ({"intervals": []}, 422, "intervals"),
        ({"intervals": ["2016-06-10T12:00:00"]}, 400, "intervals"),
        ({"intervals": ["2016-06-10T12:00:00Z", "2016-06-11T12:00:00Z"]}, 400, "one day"),
        ({"price": 3}, 422, "price"),
    ],
)
def test_bad_tso_requests_are_4xx_naming_them(api: Api, change: dict[str, object], status: int, says: str) -> None:
    operator, headers = api.client("operator")
    viewer, vh = api.client("viewer")
    gsp = viewer.get(f"/api/tso/day-ahead?issued={ISSUED}&steps=4", headers=vh).json()["gsps"][0]["gsp"]
    body = {"gsp": gsp, "direction": "up", "mw": 0.01, "intervals": ["2016-06-10T12:00:00Z"], **change}
    response = operator.post("/api/tso/requests", json=body, headers=headers)
    assert response.status_code == status, response.text
    assert says in response.text
