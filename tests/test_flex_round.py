"""One day-ahead UFTP round end to end: forecast -> needs -> FlexRequest -> FlexOffer -> merit -> FlexOrder -> field.

The grid is the ANM test grid (``test_anm.lv_net``: a 20/0.4 kV transformer, the weak "Cable 1" to
three nodes with 50 kW of PV each, about 135 % loaded at the PV peak) with a fourth node on a feeder
of its own (Node 4, 20 kW of PV). Aggregator one has PV 1 and PV 2, aggregator two PV 3 and PV 4.
The CRO, the DSO's desk and both aggregators (shapeshifter-uftp services) talk over loopback;
every wait is bounded by ``DEADLINE_S`` and ends as soon as the message is in.

What is checked, and against what:

- the congestion forecast's needs are the peak intervals, where pandapower on the median injections
  finds Cable 1 above its rating (independent power flow);
- the selection is the one an exhaustive search over the same offers finds (a different algorithm);
- the offer at Node 4's point (cheapest of all, but more consumption there *raises* Cable 1's
  loading: pandapower's finite difference says so) is refused and never ordered;
- the ordered limits reach the DER through the real arbiter and Modbus; the twin's Cable 1 loading
  is under its limit in every needed interval, and pandapower on the outputs the twin reports agrees
  with the twin's loading within 2e-3;
- the curtailment the twin applied (available - output, its own account) equals what was ordered
  within 1 W, verification against the high-X-of-Y baseline finds full delivery, and both
  aggregators answer the FlexSettlement with Accepted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandapower as pp
import pandas as pd
import pytest
from leaks import assert_no_leaks
from test_anm import PROFILE, lv_net

from opendso.der import AssetKind, DerAsset, DerRegistry
from opendso.errors import InputError
from opendso.grid.io.pandapower_reader import from_pandapower
from opendso.grid.model import Grid
from opendso.markets.baselines import BaselineMethod, BaselineSpec
from opendso.markets.desk import FlexibilityDesk, needs_from_forecast, participant
from opendso.markets.merit import exhaustive_selection
from opendso.markets.model import CongestionPoint, FlexNeed
from opendso.markets.settlement import FlexContract
from opendso.markets.uftp import (
    CommonReferenceOperator,
    Directory,
    FlexProcurement,
    PortfolioEntry,
    SimulatedAggregator,
    connection_address,
    new_keypair,
)
from opendso.operations.setpoints import (
    FlexibleDer,
    SetpointArbiter,
    SetpointGate,
    SetpointGateConfig,
    SetpointSource,
)
from opendso.operations.switching import SafetyGate, SwitchingDispatcher, SwitchingState
from opendso.operations.switching.dispatch import route_setpoints_by_point_map
from opendso.planning.congestion import CongestionForecast, forecast_congestion
from opendso.planning.model import QuantileForecast
from opendso.store import Historian
from opendso.store.der import DerStore
from opendso.telemetry.modbus import ModbusPoller
from opendso.telemetry.points import point_map_for_grid
from opendso.telemetry.simulator import DerSettings, FieldSimulator, der_points

#: Every wait for a UFTP answer: generous for 2 busy cores, never a sleep.
DEADLINE_S = 10.0
DSO, CRO = "dso.opendso.org", "cro.opendso.org"
AGR1, AGR2 = "agr-one.example.com", "agr-two.example.com"
TZ = "Europe/Amsterdam"
PV = ("PV 1", "PV 2", "PV 3", "PV 4")
RATING_W = {"PV 1": 50e3, "PV 2": 50e3, "PV 3": 50e3, "PV 4": 20e3}
OWNER = {"PV 1": AGR1, "PV 2": AGR1, "PV 3": AGR2, "PV 4": AGR2}
CABLE = "line:Cable 1"
#: The DSO's clock: the day before the grid's profile day (the round is day-ahead).
NOW = datetime(2016, 5, 31, 10, 0, tzinfo=UTC)
#: The simulated seconds of one profile step.
STEP_S = 900.0
#: Agreement of the twin's loading with pandapower's on the same injections (line loading, fraction of rating).
PF_TOL = 2e-3


def flex_net() -> pp.pandapowerNet:
    """The ANM test grid plus Node 4 (20 kW PV, 3 kW load) on a feeder of its own."""
    net = lv_net()
    busbar = int(net.bus.index[net.bus.name == "LV busbar"][0])
    node4 = pp.create_bus(net, 0.4, name="Node 4")
    pp.create_line(net, busbar, node4, 0.1, std_type="NAYY 4x150 SE", name="Cable 4")
    pp.create_load(net, node4, p_mw=0.003, q_mvar=0.001, name="Load 4", profile="H0")
    pp.create_sgen(net, node4, p_mw=RATING_W["PV 4"] / 1e6, name="PV 4", type="PV", profile="PV1")
    return net


def cable_loading(outputs_w: dict[str, float]) -> float:
    """Cable 1's loading (fraction of its rating) by pandapower with the PV at ``outputs_w``."""
    net = flex_net()
    for name, p in outputs_w.items():
        net.sgen.loc[net.sgen.name == name, "p_mw"] = p / 1e6
    pp.runpp(net, tolerance_mva=1e-10, numba=False)
    return float(net.res_line.loading_percent[net.line.name == "Cable 1"].iloc[0]) / 100.0


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    with assert_no_leaks():
        yield


@pytest.fixture(scope="module")
def grid() -> Grid:
    return from_pandapower(flex_net(), name="flex-lv")


def pv_forecast(grid: Grid, scale: float = 1.0) -> QuantileForecast:
    """PV output over the profile's ten quarter-hours: median the profile, 10 % / 90 % at -10 % / +5 %."""
    time = np.array([np.datetime64("2016-06-01T10:00") + np.timedelta64(15 * k, "m") for k in range(len(PROFILE))])
    median = np.array([[scale * f * RATING_W[g] for g in PV] for f in PROFILE])
    values = np.stack([0.9 * median, median, 1.05 * median])
    return QuantileForecast(
        tuple(f"sym_gen:{g}" for g in PV), time.astype("datetime64[s]"), np.array([0.1, 0.5, 0.9]), values, NOW
    )


@pytest.fixture(scope="module")
def quantiles(grid: Grid) -> QuantileForecast:
    return pv_forecast(grid)


@pytest.fixture(scope="module")
def forecast(grid: Grid, quantiles: QuantileForecast) -> CongestionForecast:
    return forecast_congestion(grid, quantiles, scenarios=40, seed=3)


def make_registry(grid: Grid, historian: Historian) -> DerRegistry:
    registry = DerRegistry(DerStore(historian.engine), grid, clock=lambda: NOW)
    for k, g in enumerate(PV, start=1):
        asset = DerAsset(
            f"A{k}",
            f"Solar {k}",
            AssetKind.PV,
            f"Node {k}",
            f"Owner {k}",
            aggregator=OWNER[g],
            export_kw=RATING_W[g] / 1e3,
        )
        registry.add_asset(asset, actor="test")
    return registry


@dataclass
class Desk:
    desk: FlexibilityDesk
    dso: FlexProcurement
    agr1: SimulatedAggregator
    agr2: SimulatedAggregator
    main: CongestionPoint  # the point behind Cable 1
    side: CongestionPoint  # Node 4's point


def _portfolio(
    agr: str, points: tuple[CongestionPoint, ...], terms: dict[str, tuple[float, float]]
) -> list[PortfolioEntry]:
    out = []
    for p in points:
        mine = [n for n in p.nodes if OWNER[f"PV {n.split()[-1]}"] == agr]
        if mine:
            flex_w, price = terms[p.id]
            out.append(PortfolioEntry(p.id, tuple(connection_address(DSO, n) for n in mine), flex_w, price))
    return out


@contextmanager
def uftp_desk(grid: Grid, registry: DerRegistry, plan_with: Callable[[FlexibilityDesk], object]) -> Iterator[Desk]:
    """CRO, DSO desk and both aggregators on loopback; the desk planned by ``plan_with`` before the AGRs start."""
    directory = Directory()
    cro = CommonReferenceOperator(domain=CRO, keypair=new_keypair(), directory=directory)
    dso = FlexProcurement(domain=DSO, keypair=new_keypair(), directory=directory, clock=lambda: NOW)
    contract = FlexContract("contract-2016", Decimal("200"), time_zone=TZ)
    spec = BaselineSpec(
        method=BaselineMethod.HIGH_X_OF_Y, x=4, y=5, backcast_days=10, min_backcast_days=5, time_zone=TZ
    )
    desk = FlexibilityDesk(
        grid, registry, dso, cro=CRO, contract=contract, baseline=spec, margin=0.02, deadline_s=DEADLINE_S
    )
    plan_with(desk)
    points = desk.round.plan.points
    main = next(
        (p for p in points if "Node 1" in p.nodes),
        points[0] if points else CongestionPoint("ea1.2020-01.x:cp", "x", ("Node 1",)),
    )
    side = next((p for p in points if "Node 4" in p.nodes), main)
    # aggregator one: 30 kW at 60 EUR/MWh; aggregator two: 30 kW at 80 behind Cable 1, 20 kW at 10 at Node 4
    # (prices whose options cost whole cents: the settlement rounds Price to cents, the AGR compares exactly)
    agr1 = SimulatedAggregator(
        domain=AGR1,
        keypair=new_keypair(),
        directory=directory,
        portfolio=_portfolio(AGR1, points, {main.id: (30e3, 60.0)}),
    )
    terms2 = {main.id: (30e3, 80.0), side.id: (20e3, 10.0)}
    agr2 = SimulatedAggregator(
        domain=AGR2, keypair=new_keypair(), directory=directory, portfolio=_portfolio(AGR2, points, terms2)
    )
    parts = (cro, dso, agr1, agr2)
    try:
        for p in parts:
            p.start()
        for agr in (agr1, agr2):
            if points:
                agr.register_connections(CRO, start=NOW.date())
                assert agr.wait_for(lambda a: bool(a.received("AgrPortfolioUpdateResponse")), DEADLINE_S)
        yield Desk(desk, dso, agr1, agr2, main, side)
    finally:
        for p in reversed(parts):
            p.close()


@dataclass
class Field:
    sim: FieldSimulator
    arbiter: SetpointArbiter

    def loading(self, grid: Grid) -> float:
        names = [f"line:{n}" for n in grid.names_of("line")]
        return float(self.sim.result.output["line"]["loading"][names.index(CABLE)])


@asynccontextmanager
async def field(grid: Grid) -> AsyncIterator[Field]:
    """The twin serving the four PV over Modbus, a poller, the dispatcher, the gate and the arbiter; clock paused."""
    point_map = der_points(point_map_for_grid(grid, port=0, poll_period_s=0.05), list(PV))
    sim = FieldSimulator(
        grid,
        point_map,
        noise=0,
        speed=1.0,
        publish_period_s=0.2,
        server_options={"field": {"port": 0}},
        der={g: DerSettings(watchdog_s=24 * 3600.0) for g in PV},
    )
    async with sim:
        sim.pause()
        port = sim.servers[0].port  # type: ignore[attr-defined]
        live = replace(point_map, sources={"field": replace(point_map.sources["field"], port=port)})
        poller = ModbusPoller(name="field", point_map=live, source="field", timeout_s=2.0)
        async with poller:
            dispatcher = SwitchingDispatcher(
                SafetyGate(),
                lambda: grid,
                SwitchingState,
                lambda switch: None,
                setpoint_route=route_setpoints_by_point_map([poller], live),
                feedback_timeout_s=5.0,
                clock=sim.simulated_clock,
            )
            gate = SetpointGate(
                [FlexibleDer(f"{g}/p_limit", RATING_W[g], (), g) for g in PV], SetpointGateConfig(max_age_s=3600.0)
            )
            yield Field(sim, SetpointArbiter(dispatcher, gate, refresh_s=3600.0, clock=sim.simulated_clock))


def history(registry: DerRegistry, points: tuple[CongestionPoint, ...], days: int = 40) -> pd.DataFrame:
    """Past consumption (W, UFTP sign) of each aggregator at each point: sunny days like the event day, +-0.2 %."""
    assets = [a for a, _ in registry.assets()]
    event_day = pd.Timestamp("2016-06-01", tz="UTC")
    index = pd.date_range(event_day - pd.Timedelta(days=days), event_day, freq="15min", inclusive="left")
    columns = {}
    for p in points:
        for agr in (AGR1, AGR2):
            kw = sum(a.export_kw for a in assets if a.aggregator == agr and a.node in p.nodes)
            if not kw:
                continue
            series = np.zeros(index.size)
            for d in range(days):
                factor = 1.0 + 0.002 * ((d * 7) % 5 - 2)
                first = d * 96 + 40  # 10:00 UTC
                series[first : first + len(PROFILE)] = [-kw * 1e3 * f * factor for f in PROFILE]
            columns[participant(agr, p.id)] = series
    return pd.DataFrame(columns, index=index)


# -- the round ---------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_uftp_round_relieves_the_cable_in_the_field_and_settles(
    grid: Grid, quantiles: QuantileForecast, forecast: CongestionForecast, tmp_path: Path
) -> None:
    needs = needs_from_forecast(forecast, threshold=0.5)
    # the needs are the PV peak: pandapower on the median injections finds Cable 1 overloaded exactly there
    median = {g: [f * RATING_W[g] for f in PROFILE] for g in PV}
    overloaded = [k for k in range(len(PROFILE)) if cable_loading({g: median[g][k] for g in PV}) > 1.0]
    assert sorted({n.interval for n in needs if n.element == CABLE}) == overloaded == [2, 3, 4]
    historian = Historian.open(f"sqlite:///{tmp_path / 'der.sqlite'}")
    try:
        registry = make_registry(grid, historian)
        with uftp_desk(grid, registry, lambda d: d.plan(forecast, quantiles=quantiles)) as w:
            plan = w.desk.round.plan
            assert w.main != w.side
            assert set(w.main.nodes) == {"Node 1", "Node 2", "Node 3"}
            # the desk asks only behind Cable 1: Node 4's point cannot relieve it
            assert {r.congestion_point for r in plan.requests} == {w.main.id}
            assert all(r.requested_w > 0 for r in plan.requests)  # more consumption = less PV export
            w.desk.publish(start=NOW.date())
            # a cheap offer at Node 4's point, asked for here so that it is on the table
            peak = [n for n in plan.needs if n.element == CABLE]
            w.dso.request_flex(
                w.side.id, peak, [20e3] * len(peak), expires=NOW + timedelta(hours=6), aggregators=[AGR2]
            )
            assert w.dso.wait_for(lambda d: any(o.congestion_point == w.side.id for o in d.open_offers()), DEADLINE_S)
            selection = w.desk.procure(expires=NOW + timedelta(hours=6))
            assert selection is not None
            assert selection.all_met
            # by hand: about 40 kW asked per ISP; each AGR offers 30 kW (full) or 15 kW (half) over 3 ISPs.
            # Pairs reaching 40 kW: one's full + two's half 1.35 + 0.90, one's half + two's full 0.675 + 1.80,
            # both full 1.35 + 1.80 EUR (kWh x EUR/MWh): the first is the cheapest
            assert selection.total_cost == pytest.approx(1.35 + 0.90, abs=1e-9)
            # pandapower: more consumption at Node 4 raises Cable 1's loading (the wrong sign)
            at_peak = {g: median[g][3] for g in PV}
            more_load = cable_loading({**at_peak, "PV 4": at_peak["PV 4"] - 1e3})
            assert more_load > cable_loading(at_peak)
            side_offer = next(o for o in w.desk.round.offers if o.congestion_point == w.side.id)
            assert {r.offer_id for r in selection.refused} == {side_offer.id}
            assert all("does not relieve" in r.reason for r in selection.refused)
            assert side_offer.id not in {b.offer_id for b in selection.bought}
            # the same offers, sensitivities and needs by exhaustive search: the same set at the same cost
            targets = [replace(n, excess=n.excess + w.desk.margin) for n in plan.needs]
            assert plan.sensitivities is not None
            check = exhaustive_selection(targets, w.desk.round.offers, plan.sensitivities, horizon=plan.horizon)
            assert {(b.offer_id, b.option) for b in selection.bought} == {(b.offer_id, b.option) for b in check.bought}
            assert selection.total_cost == pytest.approx(check.total_cost, abs=1e-9)
            orders = [o for o in w.dso.orders() if o.order_reference in w.desk.round.order_refs]
            assert orders
            assert all(o.status == "accepted" for o in orders)
            assert {o.aggregator for o in orders} == {AGR1, AGR2}  # neither alone is enough

            # -- activation in the field, interval by interval ------------------------------------------
            measured = {participant(a, w.main.id): [0.0] * plan.horizon for a in (AGR1, AGR2)}
            curtailed = {a: [0.0] * plan.horizon for a in (AGR1, AGR2)}
            async with field(grid) as f:
                origin_s = f.sim.elapsed_s  # a few microseconds ran before the clock was paused
                for k in range(plan.horizon):
                    f.sim.advance_to(origin_s + k * STEP_S)
                    assert f.sim.step == k
                    available = {f"{g}/p_limit": f.sim.generator_power(g)[0] for g in PV}
                    for request in w.desk.activation_requests(k, available):
                        outcome = await f.arbiter.submit(request)
                        assert outcome.status in ("sent", "unchanged"), outcome
                    power = {g: f.sim.generator_power(g) for g in PV}
                    after = f.loading(grid)
                    for g in ("PV 1", "PV 2", "PV 3"):
                        measured[participant(OWNER[g], w.main.id)][k] -= power[g][1]
                        curtailed[OWNER[g]][k] += power[g][0] - power[g][1]
                    if k in overloaded:
                        # without the orders, the same field would overload the cable (pandapower)
                        assert cable_loading({g: power[g][0] for g in PV}) > 1.0
                        assert after < 1.0, (k, after)
                        reference = cable_loading({g: power[g][1] for g in PV})
                        assert after == pytest.approx(reference, abs=PF_TOL)
                for point in w.desk.release_points():
                    await f.arbiter.release(SetpointSource.MARKET, point, reason="round over")
            # the twin curtailed what was ordered, by its own account
            for o in orders:
                option = next(x for x in w.desk.round.offers if x.id == o.offer_id).option(o.option_reference)
                for j, k in enumerate(option.intervals):
                    assert curtailed[o.aggregator][k] == pytest.approx(option.power_w[j], abs=1.0)

            # -- verification and settlement -----------------------------------------------------------
            settlement = await asyncio.to_thread(w.desk.verify_and_settle, measured, history(registry, plan.points))
            assert settlement is not None
            for settled in settlement.orders:
                assert settled.full
                assert settled.penalty == Decimal("0.00")
                assert settled.delivered_share >= 0.95
            assert w.desk.dispositions() == {o.order_reference: ("Accepted", None) for o in orders}
            record = w.desk.to_json()
    finally:
        historian.close()
    assert record["needs"]
    assert record["requests"]
    assert record["orders"]
    statuses = {opt["status"] for offer in record["offers"] for opt in offer["options"]}
    assert statuses == {"bought", "not bought", "refused"}
    assert record["selection"]["needs_unmet"] == 0
    assert {d["order_reference"] for d in record["delivery"]} == {o.order_reference for o in orders}
    assert {r["aggregator"] for r in record["settlement"]["reports"]} == {AGR1, AGR2}


def test_a_round_without_needs_sends_nothing(grid: Grid, tmp_path: Path) -> None:
    cloudy = pv_forecast(grid, scale=0.5)
    quiet = forecast_congestion(grid, cloudy, scenarios=20, seed=1)
    assert needs_from_forecast(quiet) == ()
    historian = Historian.open(f"sqlite:///{tmp_path / 'der.sqlite'}")
    try:
        with uftp_desk(grid, make_registry(grid, historian), lambda d: d.plan(quiet, quantiles=cloudy)) as w:
            assert w.desk.procure(expires=NOW + timedelta(hours=6)) is None
            assert tuple(w.dso.log.entries()) == ()
            assert w.agr1.received() == ()
            assert w.agr2.received() == ()
            assert w.desk.activation_requests(3, {}) == ()
            assert w.desk.to_json()["requests"] == []
    finally:
        historian.close()


def test_bad_input_is_one_clear_error(
    grid: Grid, quantiles: QuantileForecast, forecast: CongestionForecast, tmp_path: Path
) -> None:
    for bad in (-0.1, 1.5):
        with pytest.raises(InputError, match="threshold"):
            needs_from_forecast(forecast, threshold=bad)
    with pytest.raises(InputError, match="no element 'line:Cable 9'"):
        needs_from_forecast(forecast, elements=["line:Cable 9"])
    historian = Historian.open(f"sqlite:///{tmp_path / 'der.sqlite'}")
    try:
        lost = FlexNeed("line:Cable 9", 0, datetime(2016, 6, 1, 10, tzinfo=UTC), 0.1)
        with uftp_desk(grid, make_registry(grid, historian), lambda d: d.plan((), quantiles=quantiles)) as w:
            with pytest.raises(InputError, match="no line 'Cable 9'"):
                w.desk.plan([lost])
            with pytest.raises(InputError, match="threshold"):
                w.desk.plan(forecast, threshold=2.0)
    finally:
        historian.close()
