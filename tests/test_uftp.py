"""UFTP end to end over loopback: CRO portfolio, FlexRequest -> FlexOffer -> FlexOrder -> FlexSettlement.

Real library clients and services (shapeshifter-uftp 3.0.0rc1) on 127.0.0.1 ephemeral ports; every
wait is bounded by ``DEADLINE_S`` and ends as soon as the awaited message is in. Expected values are
worked by hand from the UFTP rules (ISP numbering from local midnight, the sign convention, the
price of an option = energy x price), not taken from the code under test.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from uftp_world import AGR, CP1, CP2, CRO, DEADLINE_S, DSO, World, cheapest_full, uftp_world

from opendso.errors import InputError
from opendso.markets.model import ISP, CongestionPoint, FlexNeed
from opendso.markets.uftp import connection_address


@pytest.fixture
def world() -> World:
    with uftp_world() as w:
        yield w


def test_cro_keeps_congestion_points_and_connections_and_answers_queries(world: World) -> None:
    # the CRO's register, as published by the DSO and the AGR
    points = world.cro.congestion_points()
    assert points[CP1.id] == (DSO, tuple(connection_address(DSO, n) for n in CP1.nodes))
    assert world.cro.aggregator_of(connection_address(DSO, "node 5")) == AGR
    # the DSO's query was answered with the AGR of each connection
    assert world.dso.aggregators_at(CP1.id) == (AGR,)
    # the AGR's query: both congestion points of the DSO, with its connections
    query_id = world.agr.query_portfolio(CRO, period=world.tomorrow)
    assert world.agr.wait_for(lambda a: a.response_to(query_id) is not None, DEADLINE_S)
    answer = world.agr.response_to(query_id)
    assert str(answer.result) == "Accepted"
    (view,) = answer.dso_views
    (portfolio,) = view.dso_portfolios
    assert portfolio.dso_domain == DSO
    assert {p.entity_address for p in portfolio.congestion_points} == {CP1.id, CP2.id}


def test_flex_request_carries_the_needs_in_uftp_numbers_and_sign(world: World) -> None:
    world.dso.request_flex(CP1.id, world.needs(4), [-50_000.0] * 4, expires=world.clock.now + timedelta(hours=1))
    assert world.agr.wait_for(lambda a: bool(a.received("FlexRequest")), DEADLINE_S)
    (request,) = world.agr.received("FlexRequest")
    assert request.congestion_point == CP1.id
    assert request.period.to_date() == world.tomorrow
    assert str(request.isp_duration) == "PT15M"
    requested = {i.start: (i.min_power, i.max_power) for i in request.isps if str(i.disposition) == "Requested"}
    # 08:00 local is ISP 8 * 4 + 1 = 33; less consumption is negative; at least 50 kW, at most twice that
    assert requested == dict.fromkeys((33, 34, 35, 36), (-100000, -50000))
    covered = sorted(n for i in request.isps for n in range(i.start, i.start + i.duration))
    assert covered == list(range(1, 97))  # 96 ISPs on a day without a clock change, each once


def test_full_round_trip_offer_order_settlement_accepted_and_disputed(world: World) -> None:
    expires = world.clock.now + timedelta(hours=1)
    for cp in (CP1, CP2):
        world.dso.request_flex(cp.id, world.needs(4), [-50_000.0] * 4, expires=expires)
    assert world.dso.wait_for(lambda d: len(d.open_offers()) == 2, DEADLINE_S)
    offers = {o.congestion_point: o for o in world.dso.open_offers()}
    full = offers[CP1.id].option("full")
    # 4 ISPs x 50 kW x 0.25 h = 50 kWh = 0.05 MWh, at 80 EUR/MWh = 4 EUR for the whole option
    assert full.first == 0
    assert full.power_w == (-50_000.0,) * 4
    assert full.price == pytest.approx(4.0, abs=1e-9)
    assert offers[CP1.id].option("half").price == pytest.approx(2.0, abs=1e-9)

    refs = world.dso.place_orders(cheapest_full)
    assert len(refs) == 2
    assert world.dso.wait_for(lambda d: all(o.status == "accepted" for o in d.orders()), DEADLINE_S)
    assert world.dso.open_offers() == ()  # ordered offers are not for sale again
    by_cp = {o.congestion_point: o.order_reference for o in world.dso.orders()}

    origin = world.origin()

    def record(order: str, net: float) -> dict[str, object]:
        isps = [
            {
                "time": origin + k * ISP,
                "baseline_w": 200_000,
                "ordered_w": -50_000,
                "actual_w": 155_000,
                "delivered_w": -45_000,
                "deficiency_w": 5_000,
            }
            for k in range(4)
        ]
        return {"order": order, "price": 4.0, "penalty": 0.5, "net": net, "isps": isps}

    # the second record in UFTP's names (as markets.settlement writes them), and netted without the penalty
    uftp_named = {
        "order_reference": by_cp[CP2.id],
        "price": "4.00",
        "penalty": "0.50",
        "net_settlement": "4.00",
        "isps": [
            {
                "start": 33 + k,
                "duration": 1,
                "baseline_power": 200_000,
                "ordered_flex_power": -50_000,
                "actual_power": 155_000,
                "delivered_flex_power": -45_000,
                "power_deficiency": 5_000,
            }
            for k in range(4)
        ],
    }
    settlement_id = world.dso.settle(
        AGR,
        [record(by_cp[CP1.id], 3.5), uftp_named],
        period_start=world.tomorrow,
        period_end=world.tomorrow,
    )
    assert world.dso.wait_for(lambda d: d.settlement(settlement_id).status != "sent", DEADLINE_S)
    settled = world.dso.settlement(settlement_id)
    assert settled.status == "accepted"
    assert settled.dispositions[by_cp[CP1.id]] == ("Accepted", None)
    assert settled.dispositions[by_cp[CP2.id]] == ("Disputed", "net settlement is not price minus penalty")
    # what the AGR received is what UFTP carries: ISP numbers from local midnight, W, and the amounts
    (message,) = world.agr.received("FlexSettlement")
    first = next(s for s in message.flex_order_settlements if s.order_reference == by_cp[CP1.id])
    assert [i.start for i in first.isps] == [33, 34, 35, 36]
    assert (first.isps[0].baseline_power, first.isps[0].actual_power, first.isps[0].delivered_flex_power) == (
        200_000,
        155_000,
        -45_000,
    )


def test_every_message_in_and_out_is_logged(world: World) -> None:
    world.dso.request_flex(CP1.id, world.needs(2), [-10_000.0] * 2, expires=world.clock.now + timedelta(hours=1))
    assert world.dso.wait_for(lambda d: len(d.open_offers()) == 1, DEADLINE_S)
    assert world.dso.wait_for(lambda d: any(e.kind == "FlexOfferResponse" for e in d.log.entries()), DEADLINE_S)
    kinds = [(e.direction, e.kind) for e in world.dso.log.entries()]
    for expected in [
        ("out", "DsoPortfolioUpdate"),
        ("in", "DsoPortfolioUpdateResponse"),
        ("out", "FlexRequest"),
        ("in", "FlexRequestResponse"),
        ("in", "FlexOffer"),
        ("out", "FlexOfferResponse"),
    ]:
        assert expected in kinds


def test_a_revision_supersedes_the_earlier_request(world: World) -> None:
    expires = world.clock.now + timedelta(hours=1)
    first = world.dso.request_flex(CP1.id, world.needs(1), [-20_000.0], expires=expires, aggregators=[AGR])
    second = world.dso.request_flex(CP1.id, world.needs(1), [-30_000.0], expires=expires, aggregators=[AGR])
    by_id = {r.message_id: r for r in world.dso.requests()}
    assert (by_id[first[0]].superseded, by_id[first[0]].revision) == (True, 1)
    assert (by_id[second[0]].superseded, by_id[second[0]].revision) == (False, 2)


def test_bad_input_is_one_clear_error(world: World) -> None:
    expires = world.clock.now + timedelta(hours=1)
    needs = world.needs(2)
    with pytest.raises(InputError, match="one requested W per need"):
        world.dso.request_flex(CP1.id, needs, [-1.0], expires=expires)
    with pytest.raises(InputError, match="not published"):
        world.dso.request_flex("ea1.2020-01.org.opendso:cp-9", needs, [-1.0, -1.0], expires=expires)
    twin = [needs[0], FlexNeed(element="line:L2", interval=0, time=needs[0].time, excess=0.2)]
    with pytest.raises(InputError, match="both directions"):
        world.dso.request_flex(CP1.id, twin, [-1.0, 1.0], expires=expires)
    with pytest.raises(InputError, match="timezone-aware"):
        world.dso.request_flex(CP1.id, needs, [-1.0, -1.0], expires=datetime(2030, 1, 1))
    with pytest.raises(InputError, match="not open"):
        world.dso.place_orders(lambda offers: [("no-such-offer", "full")])
    plain = CongestionPoint("cp-plain", "x", ("n1",))
    with pytest.raises(InputError, match="not a UFTP entity address"):
        world.dso.publish_congestion_points([plain], cro=CRO, start=world.tomorrow)
    with pytest.raises(InputError, match="no order"):
        world.dso.settle(AGR, [{"order": "OR-none"}], period_start=world.tomorrow, period_end=world.tomorrow)
    with pytest.raises(InputError, match="no settlement records"):
        world.dso.settle(AGR, [], period_start=world.tomorrow, period_end=world.tomorrow)
