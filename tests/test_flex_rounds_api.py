"""Day-ahead flexibility rounds over the control room's API, on the emulated UFTP market.

The grid is SimBench 1-LV-rural1 with its PV profiles tripled: at midday the PV drives the
transformer above its rating in reverse, so the congestion forecast has needs there. Two
aggregators hold the four PV plants behind the transformer (the registry's DER).

What is checked, and against what: the roles, the 404 before the first round, the JSON shape the
desk documents, that a second round while one runs is refused (409) naming the running one, bad
bodies (422 naming the field, 400 for a bad time), the audit record; and that every bought option
relieves its need: pandapower, on the grid in the state of the grid's profiles at the need's
interval, finds the transformer's loading lower with the option's change of consumption at the
option's congestion point than without (an independent power flow, not the desk's sensitivities).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandapower as pp
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_switching_api import Api, make_api

from opendso.der import DerRegistry
from opendso.der.model import AssetKind, DerAsset
from opendso.grid import Grid
from opendso.grid.io.pandapower_writer import to_pandapower
from opendso.planning.history import profile_times
from opendso.service.routes.flexround import aggregator_domain, close_market, market_of
from opendso.store.der import DerStore

CODE = "simbench:1-LV-rural1--0-sw"
ISSUED = "2016-06-10T08:00:00Z"
#: The PV profiles are scaled by this: midday PV then overloads the transformer in reverse.
PV_SCALE = 3.0
#: id, aggregator, node, export kW (the PV plants of the grid, scaled as their profiles)
ASSETS = (
    ("F-PV7", "Flexa", "LV1.101 Bus 7", 120.0),
    ("F-PV8", "Flexa", "LV1.101 Bus 8", 57.0),
    ("V-PV11", "Voltwise", "LV1.101 Bus 11", 235.0),
    ("V-PV13", "Voltwise", "LV1.101 Bus 13", 69.0),
)
BODY = {"issued": ISSUED, "steps": 24, "threshold": 0.5, "scenarios": 20}


def congested(base: Grid) -> Grid:
    """``base`` with its PV profiles scaled by :data:`PV_SCALE`."""
    assert base.profiles is not None
    assignments = tuple(
        replace(a, scale=a.scale * PV_SCALE) if a.component == "sym_gen" else a for a in base.profiles.assignments
    )
    return replace(base, profiles=replace(base.profiles, assignments=assignments))


def add_assets(registry: DerRegistry) -> None:
    """The two aggregators' PV (:data:`ASSETS`) in ``registry``."""
    for asset_id, aggregator, node, export_kw in ASSETS:
        asset = DerAsset(
            asset_id, f"PV {asset_id}", AssetKind.PV, node, "Owner", aggregator=aggregator, export_kw=export_kw
        )
        registry.add_asset(asset, actor="test")


@pytest.fixture(scope="module")
def grid(grid_of: Callable[[str], Grid]) -> Grid:
    return congested(grid_of(CODE))


@dataclass
class Market:
    api: Api
    round: dict[str, Any]
    response_status: int
    audit_before: int
    read_by_viewer: dict[str, Any]  # GET /api/flex/rounds/latest as a viewer right after the round


@pytest.fixture(scope="module")
def market(grid: Grid, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    api = make_api(grid, tmp_path_factory.mktemp("rounds"))
    add_assets(DerRegistry(DerStore(api.historian.engine), api.grid))
    try:
        viewer, vh = api.client("viewer")
        assert viewer.get("/api/flex/rounds/latest", headers=vh).status_code == 404
        operator, oh = api.client("operator")
        before = api.room.audit.last_seq()
        response = operator.post("/api/flex/rounds", json=BODY, headers=oh)
        latest = viewer.get("/api/flex/rounds/latest", headers=vh)
        assert latest.status_code == 200, latest.text
        yield Market(api, response.json(), response.status_code, before, latest.json())
    finally:
        close_market(api.app)
        api.historian.close()


def test_before_the_first_round_latest_is_404(grid: Grid, tmp_path: Path) -> None:
    api = make_api(grid, tmp_path)
    try:
        viewer, vh = api.client("viewer")
        response = viewer.get("/api/flex/rounds/latest", headers=vh)
        assert response.status_code == 404
        assert "no flexibility round yet" in response.text
    finally:
        close_market(api.app)
        api.historian.close()


def test_an_operator_runs_a_round_and_a_viewer_reads_it(market: Market) -> None:
    assert market.response_status == 200, market.round
    record = market.round
    keys = {"grid", "start", "horizon", "margin", "time", "needs", "congestion_points", "requests", "offers"}
    assert keys | {"orders", "selection", "delivery", "settlement", "issued"} <= set(record)
    assert record["horizon"] == BODY["steps"] == len(record["time"])
    assert record["needs"], "the tripled PV overloads the transformer at midday"
    assert {n["element"] for n in record["needs"]} == {"transformer:MV1.101-LV1.101-Trafo 1"}
    assert all(n["probability"] >= BODY["threshold"] for n in record["needs"])
    domains = {aggregator_domain("Flexa"), aggregator_domain("Voltwise")}
    assert {a for p in record["congestion_points"] for a in p["aggregators"]} == domains
    assert record["requests"]
    assert all(set(r["aggregators"]) <= domains for r in record["requests"])
    assert {o["aggregator"] for o in record["offers"]} == domains
    for offer in record["offers"]:
        for option in offer["options"]:
            assert option["status"] in ("bought", "not bought", "refused")
    selection = record["selection"]
    assert selection is not None
    assert selection["needs_met"] + selection["needs_unmet"] == len(record["needs"])
    bought = [(o, opt) for o in record["offers"] for opt in o["options"] if opt["status"] == "bought"]
    assert bought
    assert selection["total_cost"] == pytest.approx(sum(opt["price"] for _, opt in bought), abs=1e-6)
    ordered = {(o["offer_id"], o["option"]) for o in record["orders"]}
    assert ordered == {(o["id"], opt["reference"]) for o, opt in bought}
    assert all(o["status"] == "accepted" for o in record["orders"])
    assert record["delivery"] == []
    assert record["settlement"] is None
    assert market.read_by_viewer == record
    assert TestClient(market.api.app).get("/api/flex/rounds/latest").status_code == 401


def _state_at(grid: Grid, when: str) -> Grid:
    """The grid with its loads and generators at the profiles' values of the interval starting ``when``."""
    assert grid.profiles is not None
    times = profile_times(grid)
    step = int(times.get_loc(pd.Timestamp(when)))
    arrays = {c: grid.component(c).copy() for c in ("sym_load", "sym_gen")}
    for a in grid.profiles.assignments:
        values = a.evaluate(grid.profiles.values[step : step + 1])[0]
        rows = np.searchsorted(arrays[a.component]["id"], a.ids)
        arrays[a.component][a.attribute][rows] = values
    return grid.with_input(**arrays)


def _trafo_loading(net: Any) -> float:
    pp.runpp(net, tolerance_mva=1e-9, numba=False)
    return float(net.res_trafo.loading_percent.iloc[0])


def test_every_bought_option_relieves_the_transformer_by_pandapower(market: Market) -> None:
    record = market.round
    points = {p["id"]: p for p in record["congestion_points"]}
    needs = {n["interval"]: n for n in record["needs"]}
    nets: dict[int, tuple[Any, float]] = {}  # interval -> (pandapower net in that state, base loading %)
    checked = 0
    for offer in record["offers"]:
        nodes = points[offer["congestion_point"]]["nodes"]
        for option in offer["options"]:
            if option["status"] != "bought":
                continue
            for j, power_w in enumerate(option["power_w"]):
                k = option["first"] + j
                if k not in needs or power_w == 0:
                    continue
                if k not in nets:
                    net = to_pandapower(_state_at(market.api.grid, record["time"][k]))
                    nets[k] = (net, _trafo_loading(net))
                net, before = nets[k]
                buses = [int(net.bus.index[net.bus.name == node][0]) for node in nodes]
                added = [pp.create_load(net, b, p_mw=power_w / len(nodes) / 1e6) for b in buses]
                after = _trafo_loading(net)
                net.load.drop(index=added, inplace=True)
                assert after < before, (offer["congestion_point"], k, before, after)
                checked += 1
    assert checked


def test_viewers_may_not_run_a_round_and_bad_bodies_name_the_field(market: Market) -> None:
    viewer, vh = market.api.client("viewer")
    assert viewer.post("/api/flex/rounds", json=BODY, headers=vh).status_code == 403
    operator, oh = market.api.client("operator")
    for field, value in (("steps", 0), ("steps", 97), ("threshold", 1.5), ("scenarios", 5), ("scenarios", 501)):
        response = operator.post("/api/flex/rounds", json={**BODY, field: value}, headers=oh)
        assert response.status_code == 422, (field, value)
        assert field in response.text
    response = operator.post("/api/flex/rounds", json={**BODY, "colour": "red"}, headers=oh)
    assert response.status_code == 422
    assert "colour" in response.text
    response = operator.post("/api/flex/rounds", json={**BODY, "issued": "2016-01-01T12:00:00Z"}, headers=oh)
    assert response.status_code == 400  # before the week of history the forecast needs
    assert "issue time" in response.text
    response = operator.post("/api/flex/rounds", json={**BODY, "issued": "yesterday"}, headers=oh)
    assert response.status_code == 400
    assert "issued" in response.text


def test_a_second_round_while_one_runs_is_409_naming_it(market: Market) -> None:
    operator, oh = market.api.client("operator")
    emulation = market_of(market.api.app)
    with emulation.round_slot("issued 2016-06-10T08:00:00+00:00 by someone"):
        response = operator.post("/api/flex/rounds", json=BODY, headers=oh)
    assert response.status_code == 409
    assert "issued 2016-06-10T08:00:00+00:00 by someone" in response.text


def test_a_second_round_on_the_same_market_becomes_the_latest(market: Market) -> None:
    operator, oh = market.api.client("operator")
    later = {**BODY, "issued": "2016-06-11T09:00:00Z", "steps": 8}
    response = operator.post("/api/flex/rounds", json=later, headers=oh)
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["issued"] == "2016-06-11T09:00:00Z"
    assert second["horizon"] == 8
    assert second["needs"]
    assert {o["aggregator"] for o in second["offers"]} == {aggregator_domain("Flexa"), aggregator_domain("Voltwise")}
    assert all(o["status"] == "accepted" for o in second["orders"])
    viewer, vh = market.api.client("viewer")
    assert viewer.get("/api/flex/rounds/latest", headers=vh).json() == second


def test_the_round_is_audited(market: Market) -> None:
    records = [r for r in market.api.room.audit.read(market.audit_before) if r.action == "flex.round"]
    assert records
    first = records[0]
    assert first.actor == "operator"
    assert first.result == "ok"
    assert first.details["orders"] == len(market.round["orders"])
    assert first.details["steps"] == BODY["steps"]
