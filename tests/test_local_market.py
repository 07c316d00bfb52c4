"""The local (peer-to-peer) market: the double auction, network charges and network approval.

References, all independent of the code under test:

- the auction against an exhaustive search of every fill of every order (integer kWh) on small
  books: the traded set maximises the gains from trade (to 1e-9 EUR), and the uniform price is a
  competitive equilibrium price (no filled order beyond its limit, no unfilled order that would
  trade at it); hand-worked books for the k = 0.5 price;
- network charges against hand-computed cases, path lengths from networkx over SimBench's own
  network exported from the grid (line ``length_km``);
- network approval against an independent pandapower power flow of the same interval (the grid
  exported with :func:`to_pandapower`, the profile values of that step, the trades as loads): the
  approved set shows no line or transformer above 100 % loading (+1e-4) nor a node above 1.1 p.u.
  (+1e-5) that the base state does not already have; the cleared set before approval shows one.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import networkx as nx
import numpy as np
import pandapower as pp
import pandapower.topology as top
import pandas as pd
import pytest

from opendso.calc.timeseries import ViolationLimits
from opendso.errors import InputError
from opendso.grid.io.pandapower_writer import to_pandapower
from opendso.grid.model import Grid
from opendso.grid.sources import load_grid
from opendso.markets.local import (
    ChargeBasis,
    LocalMarket,
    MarketResult,
    NetworkTariff,
    Order,
    Side,
    clear_auction,
    market_setpoints,
    net_schedules,
)
from opendso.operations.setpoints import SetpointSource
from opendso.planning.history import profile_times

CODE = "1-LV-rural1--0-sw"
FEEDER = "LV1.101 Bus 4 / LV1.101 Line 3"
FEEDER_NODES = ("LV1.101 Bus 5", "LV1.101 Bus 6", "LV1.101 Bus 7", "LV1.101 Bus 12", "LV1.101 Bus 14")
#: A sunny noon of the profile year.
NOON = datetime(2016, 6, 1, 12, 0, tzinfo=UTC)
#: The feeder's far end (about 0.24 km of cable from the busbar) and its near part (0.05 to 0.1 km).
FAR = ("LV1.101 Bus 5", "LV1.101 Bus 6")
NEAR = ("LV1.101 Bus 7", "LV1.101 Bus 12", "LV1.101 Bus 14")
LOADING_TOL = 1e-4
U_TOL = 1e-5


@pytest.fixture(scope="module")
def grid() -> Grid:
    return load_grid(f"simbench:{CODE}")


@pytest.fixture(scope="module")
def market(grid: Grid) -> LocalMarket:
    return LocalMarket(grid, FEEDER)


# -- the auction ---------------------------------------------------------------------------------------------


def _book(rng: np.random.Generator, n_bids: int, n_asks: int) -> list[Order]:
    orders = []
    for k in range(n_bids):
        orders.append(
            Order(f"b{k}", "n", Side.BUY, int(rng.integers(1, 4)), round(float(rng.uniform(0.05, 0.3)), 2), NOON)
        )
    for k in range(n_asks):
        orders.append(
            Order(f"s{k}", "n", Side.SELL, int(rng.integers(1, 4)), round(float(rng.uniform(0.05, 0.3)), 2), NOON)
        )
    return orders


def _best_welfare(orders: list[Order]) -> float:
    """Every integer fill of every order with as much bought as sold: the largest gains from trade."""
    bids = [o for o in orders if o.side is Side.BUY]
    asks = [o for o in orders if o.side is Side.SELL]
    best = 0.0
    for fb in itertools.product(*[range(int(o.energy_kwh) + 1) for o in bids]):
        for fa in itertools.product(*[range(int(o.energy_kwh) + 1) for o in asks]):
            if sum(fb) != sum(fa):
                continue
            w = sum(q * o.price for q, o in zip(fb, bids, strict=True)) - sum(
                q * o.price for q, o in zip(fa, asks, strict=True)
            )
            best = max(best, w)
    return best


@pytest.mark.parametrize("seed", range(25))
def test_auction_maximises_welfare_at_an_equilibrium_price(seed: int) -> None:
    rng = np.random.default_rng(seed)
    orders = _book(rng, int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    result = clear_auction(orders)
    by_id = {o.participant: o for o in orders}
    welfare = sum(t.energy_kwh * (by_id[t.buyer].price - by_id[t.seller].price) for t in result.trades)
    assert welfare == pytest.approx(_best_welfare(orders), abs=1e-9)
    if not result.trades:
        assert result.price is None
        return
    price = result.price
    assert price is not None
    filled = {o.participant: 0.0 for o in orders}
    for t in result.trades:
        filled[t.buyer] += t.energy_kwh
        filled[t.seller] += t.energy_kwh
    for o in orders:
        assert filled[o.participant] <= o.energy_kwh + 1e-12
        if o.side is Side.BUY:
            if filled[o.participant] > 0:
                assert o.price >= price - 1e-12, o  # pays no more than its limit
            if filled[o.participant] < o.energy_kwh - 1e-12:
                assert o.price <= price + 1e-12, o  # would not buy more at that price
        else:
            if filled[o.participant] > 0:
                assert o.price <= price + 1e-12, o
            if filled[o.participant] < o.energy_kwh - 1e-12:
                assert o.price >= price - 1e-12, o
    assert sum(filled[o.participant] for o in orders if o.side is Side.BUY) == pytest.approx(
        sum(filled[o.participant] for o in orders if o.side is Side.SELL)
    )


def test_auction_price_and_pairs_by_hand() -> None:
    # bids 0.30 x 5 and 0.20 x 60; asks 0.05 x 60 and 0.08 x 10. The walk: b0-s0 5, b1-s0 55, b1-s1 5;
    # s1 keeps 5 kWh at 0.08, so the equilibrium interval is [max(0.08, -), min(0.20, 0.08)] = 0.08.
    orders = [
        Order("b0", "n", "buy", 5, 0.30, NOON),
        Order("b1", "n", "buy", 60, 0.20, NOON),
        Order("s0", "n", "sell", 60, 0.05, NOON),
        Order("s1", "n", "sell", 10, 0.08, NOON),
    ]
    result = clear_auction(orders)
    assert result.price == pytest.approx(0.08, abs=1e-12)
    assert [(t.buyer, t.seller, t.energy_kwh) for t in result.trades] == [
        ("b0", "s0", 5.0),
        ("b1", "s0", 55.0),
        ("b1", "s1", 5.0),
    ]
    # one bid 0.20 x 10 against one ask 0.10 x 10: the midpoint
    one = clear_auction([Order("b", "n", "buy", 10, 0.20, NOON), Order("s", "n", "sell", 10, 0.10, NOON)])
    assert one.price == pytest.approx(0.15, abs=1e-12)
    assert one.cleared_kwh == 10.0
    # the unfilled bid at 0.12 bounds the price from below: [max(0.10, 0.12), 0.25] -> 0.185
    below = clear_auction(
        [
            Order("b", "n", "buy", 3, 0.25, NOON),
            Order("c", "n", "buy", 4, 0.12, NOON),
            Order("s", "n", "sell", 3, 0.10, NOON),
        ]
    )
    assert below.price == pytest.approx(0.185, abs=1e-12)
    assert below.cleared_kwh == 3.0
    # the marginal bid partly filled (1 kWh of it left at 0.25): only 0.25 clears the market
    part = clear_auction(
        [
            Order("b", "n", "buy", 4, 0.25, NOON),
            Order("c", "n", "buy", 4, 0.12, NOON),
            Order("s", "n", "sell", 3, 0.10, NOON),
        ]
    )
    assert part.price == pytest.approx(0.25, abs=1e-12)
    assert part.cleared_kwh == 3.0
    # no crossing: no trade, no price
    none = clear_auction([Order("b", "n", "buy", 10, 0.10, NOON), Order("s", "n", "sell", 10, 0.20, NOON)])
    assert none.price is None
    assert not none.trades


# -- network charges -------------------------------------------------------------------------------------------


def _km(grid: Grid, a: str, b: str) -> float:
    net = copy.deepcopy(_exported(grid))
    net.line.loc[grid.component("line")["id"], "length_km"] = grid.extra["line"]["length_km"]
    graph = top.create_nxgraph(net)  # lines weighted by length_km, transformers 0
    idx = {str(n): i for i, n in net.bus["name"].items()}
    return float(nx.shortest_path_length(graph, idx[a], idx[b], weight="weight"))


def test_distance_charges_by_hand(grid: Grid) -> None:
    tariff = NetworkTariff(ChargeBasis.DISTANCE, eur_per_kwh_km=0.02, base_eur_per_kwh=0.001, buyer_share=0.25)
    m = LocalMarket(grid, FEEDER, tariff=tariff)
    a, b = "LV1.101 Bus 14", "LV1.101 Bus 5"
    km = _km(grid, a, b)
    assert km > 0
    assert m.charge_rate(a, b) == pytest.approx(0.001 + 0.02 * km, rel=1e-9)
    assert m.charge_rate(a, a) == pytest.approx(0.001, rel=1e-12)
    # 10 kWh from a to b at 0.10 (bid 0.12, ask 0.08): the charge split 1/4 to the buyer, 3/4 to the seller
    orders = [Order("buyer", b, "buy", 10, 0.12, NOON), Order("seller", a, "sell", 10, 0.08, NOON)]
    result = m.run(orders)
    charge = 10 * (0.001 + 0.02 * km)
    rows = {r.participant: r for r in result.participants}
    assert rows["buyer"].network_charge_eur == pytest.approx(0.25 * charge, rel=1e-9)
    assert rows["seller"].network_charge_eur == pytest.approx(0.75 * charge, rel=1e-9)
    assert rows["buyer"].energy_cost_eur == pytest.approx(10 * 0.10, rel=1e-12)
    assert rows["seller"].energy_cost_eur == pytest.approx(-10 * 0.10, rel=1e-12)


def test_voltage_level_charges_on_one_lv_feeder(grid: Grid) -> None:
    levels = {"lv": 0.011, "transformer": 0.03, "mv": 0.05}
    m = LocalMarket(grid, FEEDER, tariff=NetworkTariff(ChargeBasis.VOLTAGE_LEVEL, levels=levels))
    for a, b in itertools.combinations(FEEDER_NODES, 2):
        assert m.charge_rate(a, b) == 0.011  # one LV feeder: the path never leaves LV lines
    with pytest.raises(InputError, match="levels"):
        NetworkTariff(ChargeBasis.VOLTAGE_LEVEL, levels={"lv": 0.01})


# -- network approval against pandapower ------------------------------------------------------------------------


_EXPORTED: dict[str, Any] = {}


def _exported(grid: Grid) -> Any:
    """The grid exported to pandapower once per test module (copied before each use)."""
    if grid.name not in _EXPORTED:
        _EXPORTED[grid.name] = to_pandapower(grid)
    return _EXPORTED[grid.name]


def _pandapower_check(grid: Grid, interval: datetime, result: MarketResult | None, *, approved: bool) -> dict[str, Any]:
    """Solve the interval in pandapower with the trades as loads; the worst loading and voltages."""
    net = copy.deepcopy(_exported(grid))
    step = int(profile_times(grid).get_indexer(pd.DatetimeIndex([interval]))[0])
    assert grid.profiles is not None
    update = grid.profiles.update_data(step, step + 1)
    table = {"sym_load": (net.load, "p_mw", "q_mvar"), "sym_gen": (net.sgen, "p_mw", "q_mvar")}
    for component, columns in update.items():
        frame, p_col, q_col = table[component]
        ids = columns["id"][0] if "id" in columns else grid.component(component)["id"]
        if "p_specified" in columns:
            frame.loc[ids, p_col] = columns["p_specified"][0] / 1e6
        if "q_specified" in columns:
            frame.loc[ids, q_col] = columns["q_specified"][0] / 1e6
    if result is not None:
        node_id = dict(zip(grid.names_of("node").tolist(), grid.component("node")["id"].tolist(), strict=True))
        for auction in result.auctions:
            for t in auction.trades:
                kwh = t.approved_kwh if approved else t.energy_kwh
                mw = kwh * 4 / 1e3  # kWh in a quarter-hour as constant power
                pp.create_load(net, node_id[t.buyer_node], p_mw=mw)
                pp.create_load(net, node_id[t.seller_node], p_mw=-mw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=1e-10, trafo_model="pi", trafo_loading="power", numba=False)
    return {
        "line": net.res_line["loading_percent"].to_numpy() / 100,
        "trafo": net.res_trafo["loading_percent"].to_numpy() / 100,
        "vm": net.res_bus["vm_pu"].to_numpy(),
    }


def _new_violations(base: dict[str, Any], case: dict[str, Any]) -> list[str]:
    found = []
    for key in ("line", "trafo"):
        cap = np.maximum(1.0, base[key]) + LOADING_TOL
        found += [f"{key} {k} at {v:.4f}" for k, v in enumerate(case[key]) if v > cap[k]]
    vm_cap = np.maximum(1.1, base["vm"]) + U_TOL
    vm_low = np.minimum(0.9, base["vm"]) - U_TOL
    found += [f"bus {k} at {v:.4f} p.u." for k, v in enumerate(case["vm"]) if v > vm_cap[k] or v < vm_low[k]]
    return found


def _random_book(rng: np.random.Generator, interval: datetime) -> list[Order]:
    """Sellers at the far end of the feeder, buyers anywhere on it: a lot of energy travels along the feeder."""
    orders = []
    for k in range(int(rng.integers(2, 4))):
        node = FAR[int(rng.integers(0, len(FAR)))]
        orders.append(
            Order(f"s{k}", node, "sell", float(rng.uniform(20, 60)), float(rng.uniform(0.03, 0.10)), interval)
        )
    for k in range(int(rng.integers(2, 4))):
        node = NEAR[int(rng.integers(0, len(NEAR)))]
        orders.append(Order(f"b{k}", node, "buy", float(rng.uniform(20, 60)), float(rng.uniform(0.12, 0.30)), interval))
    return orders


@pytest.mark.parametrize("seed", range(4))
def test_approved_trades_cause_no_violation_in_pandapower(grid: Grid, market: LocalMarket, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    interval = NOON + timedelta(minutes=15 * seed)
    orders = _random_book(rng, interval)
    cleared = market.run(orders, approve=False)
    approved = market.run(orders)
    base = _pandapower_check(grid, interval, None, approved=True)
    unapproved = _new_violations(base, _pandapower_check(grid, interval, cleared, approved=False))
    assert unapproved, "the book is meant to overload the feeder without approval"
    assert _new_violations(base, _pandapower_check(grid, interval, approved, approved=True)) == []
    trades = approved.auctions[0].trades
    assert sum(t.approved_kwh for t in trades) > 0  # curtailed, not all refused
    assert any(t.curtailed_kwh > 1e-9 and t.refused_by for t in trades)
    for t in trades:
        assert 0.0 <= t.approved_kwh <= t.energy_kwh + 1e-12
        if t.curtailed_kwh > 1e-9:
            assert t.refused_by is not None
            assert t.refused_by.split(":")[0] in ("line", "transformer", "node")


def test_overvoltage_is_curtailed_and_named(grid: Grid) -> None:
    # A far seller exporting a lot at noon into a buyer near the busbar raises the far end's voltage.
    # The cable overloads first on this feeder, so its loading limit is lifted here (10x) to let the
    # voltage limit bind alone.
    market = LocalMarket(grid, FEEDER, limits=ViolationLimits(loading_max=10.0))
    orders = [
        Order("far", "LV1.101 Bus 5", "sell", 120, 0.05, NOON),
        Order("near", "LV1.101 Bus 7", "buy", 120, 0.20, NOON),
    ]
    cleared = market.run(orders, approve=False)
    assert _pandapower_check(grid, NOON, cleared, approved=False)["vm"].max() > 1.1 + 1e-3
    approved = market.run(orders)
    (trade,) = approved.auctions[0].trades
    assert 0 < trade.approved_kwh < 120
    assert trade.refused_by == "node:LV1.101 Bus 5"
    vm = _pandapower_check(grid, NOON, approved, approved=True)["vm"]
    assert vm.max() <= 1.1 + U_TOL
    assert vm.max() >= 1.1 - 1e-3  # curtailed to the limit, not far below it
    rows = {r.participant: r for r in approved.participants}
    assert rows["far"].curtailed_kwh == pytest.approx(120 - trade.approved_kwh)
    assert rows["far"].price == approved.auctions[0].price


def test_schedules_and_setpoints(market: LocalMarket) -> None:
    orders = [
        Order("far", "LV1.101 Bus 5", "sell", 60, 0.05, NOON),
        Order("near", "LV1.101 Bus 7", "buy", 60, 0.20, NOON),
        Order("other", "LV1.101 Bus 12", "buy", 2, 0.01, NOON),  # does not clear
    ]
    result = market.run(orders)
    (trade,) = result.auctions[0].trades
    schedules = net_schedules(result)
    assert schedules["near"][NOON] == pytest.approx(trade.approved_kwh * 4000)
    assert schedules["far"][NOON] == pytest.approx(-trade.approved_kwh * 4000)
    assert schedules["other"][NOON] == 0.0
    points = {"LV1.101 Bus 5": "PV far/p_limit", "LV1.101 Bus 12": "PV other/p_limit"}
    requests = {r.point: r for r in market_setpoints(result, NOON, points)}
    assert set(requests) == {"PV far/p_limit", "PV other/p_limit"}
    assert requests["PV far/p_limit"].source is SetpointSource.MARKET
    assert requests["PV far/p_limit"].limit_w == pytest.approx(trade.approved_kwh * 4000)
    assert requests["PV other/p_limit"].limit_w is None
    body = result.to_json()
    assert body["intervals"][0]["approved_kwh"] == pytest.approx(trade.approved_kwh)
    assert {p["participant"] for p in body["participants"]} == {"far", "near", "other"}


# -- bad input -------------------------------------------------------------------------------------------------


def test_bad_orders_are_refused_with_what_and_where(grid: Grid, market: LocalMarket) -> None:
    with pytest.raises(InputError, match=r"'LV1\.101 Bus 99' is not a node"):
        market.run([Order("p", "LV1.101 Bus 99", "buy", 1, 0.1, NOON)])
    with pytest.raises(InputError, match="not on feeder"):
        market.run([Order("p", "LV1.101 Bus 1", "buy", 1, 0.1, NOON)])
    with pytest.raises(InputError, match="energy_kwh must be > 0"):
        Order("p", "LV1.101 Bus 5", "buy", 0, 0.1, NOON)
    with pytest.raises(InputError, match="energy_kwh must be > 0"):
        Order("p", "LV1.101 Bus 5", "sell", -3, 0.1, NOON)
    with pytest.raises(InputError, match="price nan is not a finite number"):
        Order("p", "LV1.101 Bus 5", "buy", 1, math.nan, NOON)
    with pytest.raises(InputError, match="timezone-aware"):
        Order("p", "LV1.101 Bus 5", "buy", 1, 0.1, datetime(2016, 6, 1, 12))  # the naive time under test
    with pytest.raises(InputError, match="not the start of a quarter-hour"):
        Order("p", "LV1.101 Bus 5", "buy", 1, 0.1, NOON + timedelta(minutes=7))
    with pytest.raises(InputError, match="side must be"):
        Order("p", "LV1.101 Bus 5", "hold", 1, 0.1, NOON)
    with pytest.raises(InputError, match="is not an id"):
        Order("p q", "LV1.101 Bus 5", "buy", 1, 0.1, NOON)
    with pytest.raises(InputError, match="is not a feeder"):
        LocalMarket(grid, "no such feeder")
    with pytest.raises(InputError, match="another interval"):
        clear_auction(
            [Order("a", "n", "buy", 1, 0.1, NOON), Order("b", "n", "sell", 1, 0.1, NOON + timedelta(minutes=15))]
        )
