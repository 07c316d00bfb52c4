"""Settlement of flexibility orders: per ISP ordered and delivered power, per order the money, per aggregator totals.

The records follow UFTP's FlexSettlement (Shapeshifter specification, message catalog, "FlexSettlement":
the ``FlexOrderSettlement`` element and its ``ISP`` elements, as shapeshifter-uftp 3.0.0rc1 models them
in ``FlexOrderSettlementISP``): every ISP of an order carries exactly ``Start``, ``Duration``,
``BaselinePower``, ``OrderedFlexPower``, ``ActualPower``, ``DeliveredFlexPower`` and ``PowerDeficiency``
(integer W, UFTP sign; the deficiency, "flex power sold but not delivered", as an amount >= 0), and
every order ``Price``, ``Penalty`` ("due a non-zero PowerDeficiency") and ``NetSettlement`` (Price minus
Penalty), as decimals. The specification sends a FlexSettlement "on a regular basis (typically monthly)":
:func:`settle` takes any period of days. The protocol adapter maps these records onto the message
objects; nothing here builds them.

The rules, from the :class:`FlexContract`:

- **Price** is the price of the ordered option (UFTP gives one price for the whole option), rounded
  to cents (half up);
- **Penalty** = ``penalty_per_mwh`` x the energy not delivered *beyond the tolerance*: per ISP
  ``max(0, PowerDeficiency - tolerance * |OrderedFlexPower|)`` x 15 min, summed, in MWh; capped by
  ``penalty_cap`` (an amount per order) and by ``penalty_cap_share`` (a fraction of the order's
  price), whichever is lower; rounded to cents;
- the ISP values are the verification's (:mod:`opendso.markets.verification`) rounded to whole W,
  with ``DeliveredFlexPower = ActualPower - BaselinePower`` and ``PowerDeficiency`` recomputed from
  those integers, so that the aggregator can check every figure from the message alone;
- ``Start`` numbers the ISP within its day in the contract's ``time_zone`` (the first ISP of a day
  is 1; UFTP's periods are the market's local days); an order must lie within one day (UFTP's
  ``Period``).

The report per aggregator and period sums orders, energies (MWh) and money, with the delivered
share (delivered / ordered energy).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from opendso.errors import InputError, NotFoundError
from opendso.markets.baselines import Baseline
from opendso.markets.model import ISP, FlexOption, check_aware, check_party_id
from opendso.markets.verification import DEFAULT_TOLERANCE, Verification, verify_delivery

__all__ = [
    "AggregatorReport",
    "FlexContract",
    "OrderDelivery",
    "OrderSettlement",
    "Settlement",
    "SettlementIsp",
    "settle",
]

log = logging.getLogger(__name__)

_CENT = Decimal("0.01")
_ISP_H = Decimal(int(ISP.total_seconds())) / Decimal(3600)


def _money(what: str, value: object) -> Decimal:
    """``value`` as a Decimal amount >= 0, or InputError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise InputError(f"{what}: {value!r} is not an amount")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise InputError(f"{what}: {value!r} is not an amount") from None
    if not amount.is_finite():
        raise InputError(f"{what}: {value!r} is not a finite amount")
    if amount < 0:
        raise InputError(f"{what}: {amount} is negative; prices and penalties must be >= 0")
    return amount


def _cents(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class FlexContract:
    """The terms orders are settled under (UFTP's bilateral contract, ``ContractID``).

    ``penalty_per_mwh``: per MWh not delivered beyond the tolerance (>= 0, in ``currency``);
    ``tolerance``: the share of each ordered ISP that may go undelivered without penalty;
    ``penalty_cap``: at most this much penalty per order; ``penalty_cap_share``: at most this
    fraction of the order's price; ``time_zone``: the zone of the settlement days and ISP numbers.
    """

    id: str
    penalty_per_mwh: Decimal
    tolerance: float = DEFAULT_TOLERANCE
    penalty_cap: Decimal | None = None
    penalty_cap_share: float | None = None
    currency: str = "EUR"
    time_zone: str = "UTC"

    def __post_init__(self) -> None:
        check_party_id("contract id", self.id)
        object.__setattr__(self, "penalty_per_mwh", _money(f"contract {self.id} penalty per MWh", self.penalty_per_mwh))
        if self.penalty_cap is not None:
            object.__setattr__(self, "penalty_cap", _money(f"contract {self.id} penalty cap", self.penalty_cap))
        share = self.penalty_cap_share
        if share is not None and (
            isinstance(share, bool) or not isinstance(share, int | float) or not math.isfinite(share) or share < 0
        ):
            raise InputError(f"contract {self.id}: penalty cap share must be a fraction >= 0, got {share!r}")
        tol = self.tolerance
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0.0 <= tol < 1.0:
            raise InputError(f"contract {self.id}: tolerance must be a fraction in [0, 1), got {tol!r}")
        if not isinstance(self.currency, str) or not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise InputError(f"contract {self.id}: currency {self.currency!r} is not an ISO 4217 code")
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(f"contract {self.id}: time zone {self.time_zone!r} is not an IANA time zone") from None

    def to_json(self) -> dict[str, Any]:
        """The contract as JSON (amounts as decimal strings)."""
        return {
            "id": self.id,
            "penalty_per_mwh": str(self.penalty_per_mwh),
            "tolerance": self.tolerance,
            "penalty_cap": None if self.penalty_cap is None else str(self.penalty_cap),
            "penalty_cap_share": self.penalty_cap_share,
            "currency": self.currency,
            "time_zone": self.time_zone,
        }


@dataclass(frozen=True, eq=False)
class OrderDelivery:
    """One ordered option and what was measured: the input of :func:`settle`.

    ``start``: the start of interval 0 of the option's interval indices (the request's first ISP);
    ``measured_w``: the measured consumption of the aggregator's connections at the congestion point
    for each ISP of the option (W, UFTP sign); ``baseline``: one participant's baseline over exactly
    those ISPs; ``baseline_reference``: UFTP's ``BaselineReference``, where one applies.
    """

    order_reference: str
    aggregator: str
    congestion_point: str
    option: FlexOption
    start: datetime
    measured_w: Sequence[float]
    baseline: Baseline
    baseline_reference: str | None = None

    def __post_init__(self) -> None:
        check_party_id("order reference", self.order_reference)
        check_party_id(f"order {self.order_reference} aggregator", self.aggregator)
        check_party_id(f"order {self.order_reference} congestion point", self.congestion_point)
        if not isinstance(self.option, FlexOption):
            raise InputError(f"order {self.order_reference}: option must be a FlexOption")
        object.__setattr__(self, "start", check_aware(f"order {self.order_reference} start", self.start))
        if (self.start - datetime(1970, 1, 1, tzinfo=UTC)) % ISP:
            raise InputError(f"order {self.order_reference}: start {self.start.isoformat()} is not on the ISP grid")
        if not isinstance(self.baseline, Baseline) or len(self.baseline.participants) != 1:
            raise InputError(f"order {self.order_reference}: the baseline must be one participant's Baseline")
        first = self.start + self.option.first * ISP
        n = len(self.option.power_w)
        if self.baseline.start != first or self.baseline.steps != n:
            raise InputError(
                f"order {self.order_reference}: the baseline covers {self.baseline.steps} ISPs from "
                f"{self.baseline.start.isoformat()}, the order {n} ISPs from {first.isoformat()}: they do not line up"
            )
        if len(self.measured_w) != n:
            raise InputError(
                f"order {self.order_reference}: {len(self.measured_w)} measured values for {n} ordered ISPs"
            )

    @property
    def first_time(self) -> datetime:
        """The start of the order's first ISP."""
        return self.start + self.option.first * ISP


@dataclass(frozen=True)
class SettlementIsp:
    """One ISP of an order's settlement: exactly the fields of UFTP's ``FlexOrderSettlementISP`` (W)."""

    start: int
    duration: int
    baseline_power: int
    ordered_flex_power: int
    actual_power: int
    delivered_flex_power: int
    power_deficiency: int

    def to_json(self) -> dict[str, int]:
        """The ISP under UFTP's attribute names."""
        return {
            "Start": self.start,
            "Duration": self.duration,
            "BaselinePower": self.baseline_power,
            "OrderedFlexPower": self.ordered_flex_power,
            "ActualPower": self.actual_power,
            "DeliveredFlexPower": self.delivered_flex_power,
            "PowerDeficiency": self.power_deficiency,
        }


@dataclass(frozen=True, eq=False)
class OrderSettlement:
    """One order settled: its ISPs, Price, Penalty, NetSettlement (UFTP ``FlexOrderSettlement``) and energies."""

    order_reference: str
    aggregator: str
    congestion_point: str
    contract_id: str
    period: date
    baseline_reference: str | None
    isps: tuple[SettlementIsp, ...]
    price: Decimal
    penalty: Decimal
    net_settlement: Decimal
    currency: str
    ordered_mwh: float
    delivered_mwh: float
    not_delivered_mwh: float
    penalised_mwh: Decimal
    delivered_share: float
    full: bool
    verification: Verification

    def to_json(self) -> dict[str, Any]:
        """The order's settlement as JSON (UFTP names for the message fields, amounts as decimal strings)."""
        return {
            "OrderReference": self.order_reference,
            "Period": self.period.isoformat(),
            "ContractID": self.contract_id,
            "BaselineReference": self.baseline_reference,
            "CongestionPoint": self.congestion_point,
            "Price": str(self.price),
            "Penalty": str(self.penalty),
            "NetSettlement": str(self.net_settlement),
            "ISP": [i.to_json() for i in self.isps],
            "aggregator": self.aggregator,
            "currency": self.currency,
            "ordered_mwh": self.ordered_mwh,
            "delivered_mwh": self.delivered_mwh,
            "not_delivered_mwh": self.not_delivered_mwh,
            "penalised_mwh": str(self.penalised_mwh),
            "delivered_share": self.delivered_share,
            "full": self.full,
        }


@dataclass(frozen=True)
class AggregatorReport:
    """One aggregator's settlement over a period: orders, energies (MWh), money and the delivered share."""

    aggregator: str
    period_start: date
    period_end: date
    currency: str
    orders: int
    full_orders: int
    ordered_mwh: float
    delivered_mwh: float
    not_delivered_mwh: float
    delivered_share: float
    price: Decimal
    penalty: Decimal
    net_settlement: Decimal

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (amounts as decimal strings)."""
        return {
            "aggregator": self.aggregator,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "currency": self.currency,
            "orders": self.orders,
            "full_orders": self.full_orders,
            "ordered_mwh": self.ordered_mwh,
            "delivered_mwh": self.delivered_mwh,
            "not_delivered_mwh": self.not_delivered_mwh,
            "delivered_share": self.delivered_share,
            "price": str(self.price),
            "penalty": str(self.penalty),
            "net_settlement": str(self.net_settlement),
        }


@dataclass(frozen=True)
class Settlement:
    """The settlement of a period under one contract: every order, and the report per aggregator."""

    contract_id: str
    currency: str
    period_start: date
    period_end: date
    orders: tuple[OrderSettlement, ...]
    reports: tuple[AggregatorReport, ...]

    def report(self, aggregator: str) -> AggregatorReport:
        """The report of ``aggregator``; :class:`~opendso.errors.NotFoundError` when it had no orders in the period."""
        for r in self.reports:
            if r.aggregator == aggregator:
                return r
        raise NotFoundError(f"settlement: no orders of aggregator {aggregator!r} in the period")

    def to_json(self) -> dict[str, Any]:
        """The settlement as JSON (UFTP ``PeriodStart``/``PeriodEnd``/``Currency``, orders and reports)."""
        return {
            "ContractID": self.contract_id,
            "Currency": self.currency,
            "PeriodStart": self.period_start.isoformat(),
            "PeriodEnd": self.period_end.isoformat(),
            "FlexOrderSettlement": [o.to_json() for o in self.orders],
            "reports": [r.to_json() for r in self.reports],
        }


def _isp_numbers(delivery: OrderDelivery, zone: ZoneInfo) -> tuple[date, list[int]]:
    """The local day of the order and each ISP's number within it (1 = the day's first ISP)."""
    first = delivery.first_time
    n = len(delivery.option.power_w)
    last = first + (n - 1) * ISP
    day = first.astimezone(zone).date()
    if last.astimezone(zone).date() != day:
        raise InputError(
            f"order {delivery.order_reference}: its ISPs run from {first.isoformat()} to {last.isoformat()},"
            f" across the end of the day in {zone.key}: an order belongs to one period (day)"
        )
    midnight = datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(UTC)
    k0 = (first - midnight) // ISP
    return day, [k0 + 1 + k for k in range(n)]


def _settle_order(delivery: OrderDelivery, contract: FlexContract, zone: ZoneInfo) -> OrderSettlement:
    ref = delivery.order_reference
    try:
        verification = verify_delivery(
            np.asarray(delivery.option.power_w, dtype=float),
            np.asarray(delivery.measured_w, dtype=float),
            delivery.baseline,
            tolerance=contract.tolerance,
        )
    except InputError as exc:
        raise InputError(f"order {ref}: {exc}") from None
    period, numbers = _isp_numbers(delivery, zone)
    baseline = [round(float(v)) for v in verification.baseline_w[:, 0]]
    actual = [round(float(v)) for v in verification.measured_w[:, 0]]
    ordered = [round(float(v)) for v in verification.ordered_w[:, 0]]
    tol = Decimal(str(contract.tolerance))
    isps: list[SettlementIsp] = []
    penalised_wisp = Decimal(0)
    deficiency_total = 0
    ordered_total = 0
    for number, b, a, o in zip(numbers, baseline, actual, ordered, strict=True):
        d = a - b
        size = abs(o)
        useful = min(max(d if o > 0 else -d if o < 0 else 0, 0), size)
        deficiency = size - useful
        isps.append(SettlementIsp(number, 1, b, o, a, d, deficiency))
        penalised_wisp += max(Decimal(0), Decimal(deficiency) - tol * Decimal(size))
        deficiency_total += deficiency
        ordered_total += size
    penalised_mwh = penalised_wisp * _ISP_H / Decimal(1_000_000)
    price = _cents(_money(f"order {ref} price", delivery.option.price))
    penalty = contract.penalty_per_mwh * penalised_mwh
    if contract.penalty_cap is not None:
        penalty = min(penalty, contract.penalty_cap)
    if contract.penalty_cap_share is not None:
        penalty = min(penalty, price * Decimal(str(contract.penalty_cap_share)))
    penalty = _cents(penalty)
    isp_h = float(_ISP_H)
    ordered_mwh = ordered_total * isp_h / 1e6
    not_delivered_mwh = deficiency_total * isp_h / 1e6
    return OrderSettlement(
        order_reference=ref,
        aggregator=delivery.aggregator,
        congestion_point=delivery.congestion_point,
        contract_id=contract.id,
        period=period,
        baseline_reference=delivery.baseline_reference,
        isps=tuple(isps),
        price=price,
        penalty=penalty,
        net_settlement=price - penalty,
        currency=contract.currency,
        ordered_mwh=ordered_mwh,
        delivered_mwh=ordered_mwh - not_delivered_mwh,
        not_delivered_mwh=not_delivered_mwh,
        penalised_mwh=penalised_mwh,
        delivered_share=1.0 if ordered_total == 0 else 1.0 - deficiency_total / ordered_total,
        full=penalised_wisp == 0,
        verification=verification,
    )


def _report(aggregator: str, orders: list[OrderSettlement], start: date, end: date, currency: str) -> AggregatorReport:
    ordered = sum(o.ordered_mwh for o in orders)
    delivered = sum(o.delivered_mwh for o in orders)
    price = sum((o.price for o in orders), Decimal("0.00"))
    penalty = sum((o.penalty for o in orders), Decimal("0.00"))
    return AggregatorReport(
        aggregator=aggregator,
        period_start=start,
        period_end=end,
        currency=currency,
        orders=len(orders),
        full_orders=sum(1 for o in orders if o.full),
        ordered_mwh=ordered,
        delivered_mwh=delivered,
        not_delivered_mwh=sum(o.not_delivered_mwh for o in orders),
        delivered_share=1.0 if ordered == 0 else delivered / ordered,
        price=price,
        penalty=penalty,
        net_settlement=price - penalty,
    )


def settle(
    deliveries: Sequence[OrderDelivery],
    contract: FlexContract,
    *,
    period_start: date | None = None,
    period_end: date | None = None,
) -> Settlement:
    """Settle every order of ``deliveries`` under ``contract``, and report per aggregator over the period.

    The period (days in the contract's time zone, both ends included) defaults to the first and
    last order's day; an order outside a given period, a repeated order reference, or no orders
    at all is an :class:`InputError`, as is any bad input of the orders (named by order reference).
    """
    if not isinstance(contract, FlexContract):
        raise InputError(f"settlement: contract must be a FlexContract, got {type(contract).__name__}")
    if not deliveries:
        raise InputError("settlement: no orders to settle")
    refs = [d.order_reference for d in deliveries]
    dupes = sorted({r for r in refs if refs.count(r) > 1})
    if dupes:
        raise InputError(f"settlement: order reference(s) {', '.join(dupes)} appear more than once")
    zone = ZoneInfo(contract.time_zone)
    orders = [_settle_order(d, contract, zone) for d in deliveries]
    start = period_start if period_start is not None else min(o.period for o in orders)
    end = period_end if period_end is not None else max(o.period for o in orders)
    if end < start:
        raise InputError(f"settlement: period end {end.isoformat()} is before its start {start.isoformat()}")
    outside = [o.order_reference for o in orders if not start <= o.period <= end]
    if outside:
        raise InputError(
            f"settlement: order(s) {', '.join(outside)} lie outside the period {start.isoformat()}..{end.isoformat()}"
        )
    by_agr: dict[str, list[OrderSettlement]] = {}
    for o in orders:
        by_agr.setdefault(o.aggregator, []).append(o)
    reports = tuple(_report(a, by_agr[a], start, end, contract.currency) for a in sorted(by_agr))
    log.info(
        "event=settlement contract=%s orders=%d aggregators=%d period=%s..%s penalty=%s",
        contract.id,
        len(orders),
        len(reports),
        start.isoformat(),
        end.isoformat(),
        sum((o.penalty for o in orders), Decimal("0.00")),
    )
    return Settlement(
        contract_id=contract.id,
        currency=contract.currency,
        period_start=start,
        period_end=end,
        orders=tuple(orders),
        reports=reports,
    )
