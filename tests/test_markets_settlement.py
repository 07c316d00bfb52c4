"""Verification of delivery and settlement of flexibility orders (issue 12 items 3 and 4).

Every figure is worked by hand in the comments next to it; the record fields are checked against
shapeshifter-uftp 3.0.0rc1's own FlexOrderSettlementISP (names and UFTP attribute names).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from shapeshifter_uftp.uftp.messages.flex_settlement import (  # type: ignore[import-untyped]
    FlexOrderSettlement,
    FlexOrderSettlementISP,
)

from opendso.errors import InputError, NotFoundError
from opendso.markets.baselines import Baseline
from opendso.markets.model import FlexOption
from opendso.markets.settlement import FlexContract, OrderDelivery, SettlementIsp, settle
from opendso.markets.verification import verify_delivery

TOL_W = 1e-6
ISP = timedelta(minutes=15)
REQUEST_START = datetime(2026, 6, 17, 12, 0, tzinfo=UTC)  # interval 0; the option starts at interval 2 (12:30Z)


def _baseline(start: datetime, power_kw: list[float], below_kw: float = 50.0, above_kw: float = 30.0) -> Baseline:
    p = np.asarray(power_kw, dtype=float)[:, None] * 1e3
    return Baseline(
        method="high_x_of_y",
        parameters={},
        participants=("cp",),
        start=start,
        power_w=p,
        lower_w=p - below_kw * 1e3,
        upper_w=p + above_kw * 1e3,
        levels=(0.1, 0.9),
    )


# The hand case: 200, 200, 100, 100 kW less consumption ordered; baseline 500, 500, 400, 400 kW;
# measured 300, 315, 250, 420 kW -> delivered (measured - baseline) -200, -185, -150, +20 kW.
ORDER_KW = [-200.0, -200.0, -100.0, -100.0]
BASE_KW = [500.0, 500.0, 400.0, 400.0]
MEASURED_KW = [300.0, 315.0, 250.0, 420.0]


def _kw(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=float) * 1e3


def test_verification_by_hand() -> None:
    first = REQUEST_START + 2 * ISP
    v = verify_delivery(_kw(ORDER_KW), _kw(MEASURED_KW), _baseline(first, BASE_KW), tolerance=0.05)
    np.testing.assert_allclose(v.delivered_w[:, 0], _kw([-200, -185, -150, 20]), atol=TOL_W)
    np.testing.assert_allclose(v.reduction_w[:, 0], _kw([200, 185, 150, -20]), atol=TOL_W)
    # baseline band [-50, +30] kW: delivered in [measured - upper, measured - lower]
    np.testing.assert_allclose(v.delivered_low_w[:, 0], _kw([-230, -215, -180, -10]), atol=TOL_W)
    np.testing.assert_allclose(v.delivered_high_w[:, 0], _kw([-150, -135, -100, 70]), atol=TOL_W)
    np.testing.assert_allclose(v.reduction_low_w[:, 0], _kw([150, 135, 100, -70]), atol=TOL_W)
    np.testing.assert_allclose(v.reduction_high_w[:, 0], _kw([230, 215, 180, 10]), atol=TOL_W)
    # deficiency: full; 15 kW short; over-delivered (no credit beyond the order); the wrong way (all 100 kW)
    np.testing.assert_allclose(v.deficiency_w[:, 0], _kw([0, 15, 0, 100]), atol=TOL_W)
    # beyond 5 % of the ordered ISP: 15 - 10 = 5 kW; 100 - 5 = 95 kW
    np.testing.assert_allclose(v.deficiency_beyond_tolerance_w[:, 0], _kw([0, 5, 0, 95]), atol=TOL_W)
    assert v.ordered_kwh[0] == pytest.approx(600 * 0.25)  # 150 kWh
    assert v.not_delivered_kwh[0] == pytest.approx(115 * 0.25)  # 28.75 kWh
    assert v.delivered_kwh[0] == pytest.approx(485 * 0.25)
    assert v.not_delivered_beyond_tolerance_kwh[0] == pytest.approx(100 * 0.25)
    assert v.share[0] == pytest.approx(1 - 115 / 600)
    # with the baseline at its lower end the deficiencies are 50, 65, 0, 100 kW; at its upper end 0, 0, 0, 90 kW
    assert v.share_low[0] == pytest.approx(1 - 215 / 600)
    assert v.share_high[0] == pytest.approx(1 - 90 / 600)
    assert not v.full[0]
    assert v.to_json()["participants"][0]["deficiency_w"][3] == pytest.approx(100e3)


def test_verification_within_tolerance_counts_as_full_and_is_vectorised() -> None:
    first = REQUEST_START
    base = Baseline(
        method="meter_before",
        parameters={},
        participants=("a", "b"),
        start=first,
        power_w=_kw([100, 100])[:, None] * np.ones((1, 2)),
        lower_w=_kw([100, 100])[:, None] * np.ones((1, 2)),
        upper_w=_kw([100, 100])[:, None] * np.ones((1, 2)),
        levels=(0.1, 0.9),
    )
    ordered = np.array([[-100e3, 50e3], [-100e3, 50e3]])  # a: 100 kW less; b: 50 kW more (e.g. charging)
    measured = np.array([[4e3, 148e3], [0.0, 146e3]])  # a: 96 and 100 kW reduced; b: 48 and 46 kW more
    v = verify_delivery(ordered, measured, base, tolerance=0.05)
    np.testing.assert_allclose(v.deficiency_w, [[4e3, 2e3], [0.0, 4e3]], atol=TOL_W)
    # a: 4 kW <= 5 kW tolerance -> full; b: 4 kW > 2.5 kW in the second ISP -> 1.5 kW beyond
    np.testing.assert_allclose(v.deficiency_beyond_tolerance_w, [[0.0, 0.0], [0.0, 1.5e3]], atol=TOL_W)
    assert v.full.tolist() == [True, False]
    np.testing.assert_allclose(v.share, [1 - 4 / 200, 1 - 6 / 100])


def _delivery(
    ref: str = "order-1",
    aggregator: str = "agr-a.example",
    price: float = 1234.565,
    order_kw: list[float] | None = None,
    measured_kw: list[float] | None = None,
    base_kw: list[float] | None = None,
    first: int = 2,
    request_start: datetime = REQUEST_START,
) -> OrderDelivery:
    order_kw = ORDER_KW if order_kw is None else order_kw
    option = FlexOption(reference=f"{ref}-opt", first=first, power_w=tuple(_kw(order_kw).tolist()), price=price)
    return OrderDelivery(
        order_reference=ref,
        aggregator=aggregator,
        congestion_point="ea1.2026-11.opendso:cp-1",
        option=option,
        start=request_start,
        measured_w=tuple(_kw(MEASURED_KW if measured_kw is None else measured_kw).tolist()),
        baseline=_baseline(request_start + first * ISP, BASE_KW if base_kw is None else base_kw),
    )


def test_settlement_by_hand() -> None:
    contract = FlexContract(id="contract-1", penalty_per_mwh=Decimal("300"), tolerance=0.05)
    s = settle([_delivery()], contract)
    o = s.orders[0]
    # ISPs 12:30..13:15 UTC are the 51st..54th of the day (12:30 is 50 ISPs after midnight)
    assert [i.start for i in o.isps] == [51, 52, 53, 54]
    assert o.isps[1] == SettlementIsp(
        start=52,
        duration=1,
        baseline_power=500_000,
        ordered_flex_power=-200_000,
        actual_power=315_000,
        delivered_flex_power=-185_000,
        power_deficiency=15_000,
    )
    assert [i.power_deficiency for i in o.isps] == [0, 15_000, 0, 100_000]
    assert [i.delivered_flex_power for i in o.isps] == [-200_000, -185_000, -150_000, 20_000]
    # price 1234.565 rounds half up to 1234.57; penalised energy (5 + 95) kW x 0.25 h = 0.025 MWh x 300 = 7.50
    assert o.price == Decimal("1234.57")
    assert o.penalised_mwh == Decimal("0.025")
    assert o.penalty == Decimal("7.50")
    assert o.net_settlement == Decimal("1227.07")
    assert o.period == date(2026, 6, 17)
    assert o.ordered_mwh == pytest.approx(0.15)
    assert o.not_delivered_mwh == pytest.approx(0.02875)
    assert o.delivered_share == pytest.approx(1 - 115 / 600)
    assert not o.full
    js = s.to_json()
    assert js["FlexOrderSettlement"][0]["ISP"][3] == {
        "Start": 54,
        "Duration": 1,
        "BaselinePower": 400_000,
        "OrderedFlexPower": -100_000,
        "ActualPower": 420_000,
        "DeliveredFlexPower": 20_000,
        "PowerDeficiency": 100_000,
    }
    assert js["FlexOrderSettlement"][0]["NetSettlement"] == "1227.07"
    assert json.loads(json.dumps(js)) == js
    assert json.loads(json.dumps(o.verification.to_json()))["participants"][0]["share"] == pytest.approx(1 - 115 / 600)


def test_isp_numbers_in_the_contract_time_zone() -> None:
    # 12:30 UTC is 14:30 in Amsterdam in June (CEST): 58 ISPs after local midnight -> Start 59
    contract = FlexContract(id="contract-1", penalty_per_mwh=Decimal(0), time_zone="Europe/Amsterdam")
    o = settle([_delivery()], contract).orders[0]
    assert [i.start for i in o.isps] == [59, 60, 61, 62]


def test_penalty_caps() -> None:
    capped = FlexContract(id="c", penalty_per_mwh=Decimal("300"), penalty_cap=Decimal("5.00"))
    assert settle([_delivery()], capped).orders[0].penalty == Decimal("5.00")
    # 0.1 % of 1234.57 = 1.23457 -> 1.23, below the 7.50 the energy would cost
    share = FlexContract(id="c", penalty_per_mwh=Decimal("300"), penalty_cap_share=0.001)
    o = settle([_delivery()], share).orders[0]
    assert o.penalty == Decimal("1.23")
    assert o.net_settlement == Decimal("1233.34")
    # no tolerance: the whole 115 kW x 0.25 h = 0.02875 MWh x 300 = 8.625 -> 8.63 (half up)
    strict = FlexContract(id="c", penalty_per_mwh=Decimal("300"), tolerance=0.0)
    assert settle([_delivery()], strict).orders[0].penalty == Decimal("8.63")


def test_report_per_aggregator_and_period() -> None:
    contract = FlexContract(id="contract-1", penalty_per_mwh=Decimal("300"))
    full = _delivery(
        "order-2", price=100.0, order_kw=[-100.0, -100.0], measured_kw=[304.0, 300.0], base_kw=[400.0, 400.0]
    )
    other = _delivery(
        "order-3", aggregator="agr-b.example", price=50.0, request_start=REQUEST_START + timedelta(days=1)
    )
    s = settle([_delivery(), full, other], contract, period_start=date(2026, 6, 1), period_end=date(2026, 6, 30))
    a = s.report("agr-a.example")
    # order-1: 0.15 MWh ordered, 0.02875 short, 1234.57 - 7.50; order-2: 0.05 MWh, 4 kW x 0.25 h short, within 5 %
    assert a.orders == 2
    assert a.full_orders == 1
    assert a.ordered_mwh == pytest.approx(0.20)
    assert a.not_delivered_mwh == pytest.approx(0.02875 + 0.001)
    assert a.delivered_share == pytest.approx((0.20 - 0.02975) / 0.20)
    assert a.price == Decimal("1334.57")
    assert a.penalty == Decimal("7.50")
    assert a.net_settlement == Decimal("1327.07")
    b = s.report("agr-b.example")
    assert (b.orders, b.price, b.penalty, b.net_settlement) == (1, Decimal("50.00"), Decimal("7.50"), Decimal("42.50"))
    assert (s.period_start, s.period_end) == (date(2026, 6, 1), date(2026, 6, 30))
    assert s.to_json()["reports"][0]["aggregator"] == "agr-a.example"
    assert s.orders[2].period == date(2026, 6, 18)
    with pytest.raises(NotFoundError, match=r"agr-c.example"):
        s.report("agr-c.example")


def test_records_map_onto_shapeshifter_uftp_messages() -> None:
    ours = [f.name for f in dataclasses.fields(SettlementIsp)]
    theirs = [f.name for f in dataclasses.fields(FlexOrderSettlementISP)]
    assert ours == theirs
    uftp_names = [f.metadata["name"] for f in dataclasses.fields(FlexOrderSettlementISP)]
    o = settle([_delivery()], FlexContract(id="c", penalty_per_mwh=Decimal("300"))).orders[0]
    assert list(o.isps[0].to_json()) == uftp_names
    # the UFTP helper's mapping: the records construct the library's message objects unchanged
    isps = [FlexOrderSettlementISP(**dataclasses.asdict(i)) for i in o.isps]
    msg = FlexOrderSettlement(
        isps=isps,
        order_reference=o.order_reference,
        period=o.period.isoformat(),
        congestion_point=o.congestion_point,
        price=o.price,
        penalty=o.penalty,
        net_settlement=o.net_settlement,
    )
    assert msg.net_settlement == msg.price - msg.penalty


# --- bad input: one InputError each ----------------------------------------------------------------------


def test_negative_prices_are_refused() -> None:
    with pytest.raises(InputError, match=r"penalty per MWh: -1 is negative"):
        FlexContract(id="c", penalty_per_mwh=Decimal("-1"))
    with pytest.raises(InputError, match=r"penalty cap: -5 is negative"):
        FlexContract(id="c", penalty_per_mwh=Decimal("1"), penalty_cap=Decimal("-5"))
    with pytest.raises(InputError, match=r"price must be >= 0"):
        _delivery(price=-10.0)
    with pytest.raises(InputError, match=r"not a finite amount"):
        FlexContract(id="c", penalty_per_mwh=Decimal("NaN"))


def test_nan_reading_names_the_interval() -> None:
    bad = _delivery(measured_kw=[300.0, float("nan"), 250.0, 420.0])
    with pytest.raises(
        InputError, match=r"order-1: .*measured power of participant 'cp' in interval 1 \(ISP starting "
    ):
        settle([bad], FlexContract(id="c", penalty_per_mwh=Decimal(1)))


def test_misaligned_intervals_are_refused() -> None:
    option = FlexOption(reference="o", first=2, power_w=tuple(_kw(ORDER_KW).tolist()), price=1.0)
    with pytest.raises(InputError, match=r"do not line up"):
        OrderDelivery(
            order_reference="order-1",
            aggregator="agr-a.example",
            congestion_point="ea1.2026-11.opendso:cp-1",
            option=option,
            start=REQUEST_START,
            measured_w=tuple(_kw(MEASURED_KW).tolist()),
            baseline=_baseline(REQUEST_START + 3 * ISP, BASE_KW),
        )
    with pytest.raises(InputError, match=r"the intervals do not line up"):
        verify_delivery(_kw(ORDER_KW[:3]), _kw(MEASURED_KW), _baseline(REQUEST_START, BASE_KW))
    with pytest.raises(InputError, match=r"not on the ISP grid"):
        _delivery(request_start=REQUEST_START + timedelta(minutes=5))


def test_naive_times_are_refused() -> None:
    with pytest.raises(InputError, match=r"timezone-aware"):
        _delivery(request_start=REQUEST_START.replace(tzinfo=None))


def test_order_periods() -> None:
    late = _delivery("late", first=46)  # 23:30..00:30 UTC: across midnight
    with pytest.raises(InputError, match=r"late: .*across the end of the day"):
        settle([late], FlexContract(id="c", penalty_per_mwh=Decimal(1)))
    with pytest.raises(InputError, match=r"order-1 appear more than once"):
        settle([_delivery(), _delivery()], FlexContract(id="c", penalty_per_mwh=Decimal(1)))
    with pytest.raises(InputError, match=r"outside the period"):
        settle(
            [_delivery()],
            FlexContract(id="c", penalty_per_mwh=Decimal(1)),
            period_start=date(2026, 7, 1),
            period_end=date(2026, 7, 31),
        )
    with pytest.raises(InputError, match=r"no orders"):
        settle([], FlexContract(id="c", penalty_per_mwh=Decimal(1)))
