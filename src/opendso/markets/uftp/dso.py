"""The DSO side of UFTP: publish congestion points, request flexibility, buy offers, follow orders, settle.

:class:`FlexProcurement` is the flexibility desk. It runs the library's ``ShapeshifterDsoService``
behind OpenDSO's transport gate, checks every incoming message
(:mod:`opendso.markets.uftp.validation`) and keeps its conversations in memory
(:mod:`opendso.markets.uftp.records`); every message in and out is in :attr:`FlexProcurement.log`.

The flow (Shapeshifter specification, use cases 3.1 and 3.3 with the CRO, 3.7 FlexRequests,
3.8 FlexOffers, 3.9 revocation, 3.10 FlexOrders, 3.11 settlement):

1. :meth:`~FlexProcurement.publish_congestion_points` sends a DSOPortfolioUpdate to the CRO;
   :meth:`~FlexProcurement.query_congestion_point` asks which AGRs represent its connections.
2. :meth:`~FlexProcurement.request_flex` turns needs (:class:`~opendso.markets.model.FlexNeed`)
   and the W asked per ISP into FlexRequests, one per Period and aggregator.
3. FlexOffers arrive, are checked, answered (FlexOfferResponse) and kept as
   :class:`~opendso.markets.model.FlexOffer` records (:meth:`~FlexProcurement.open_offers`).
4. :meth:`~FlexProcurement.place_orders` asks an injected selector which (offer, option) to buy
   and sends a FlexOrder for each, copying the option's ISPs unchanged; FlexOrderResponses set
   each order's status.
5. :meth:`~FlexProcurement.settle` sends a FlexSettlement from per-order settlement records; the
   FlexSettlementResponse gives each order's Accepted/Disputed and the dispute reason.

Sign convention (UFTP, message catalog "Power"): power is seen from the prosumer, positive =
consumption, negative = production; every power in these messages is a deviation from the
baseline. A FlexRequest's *Requested* ISP asks for a deviation between MinPower and MaxPower
(specification, FlexRequest: "Lower/Upper bound for available/requested space to deviate from the
baseline"): for a need of ``r`` W (``r < 0``: less consumption / more production), OpenDSO sends
``MaxPower = r`` (at least that much) and ``MinPower = r * over_request`` (at most that much), and
mirrored for ``r > 0``. The *Available* ISPs of the rest of the Period carry
``MinPower = -available_w``, ``MaxPower = +available_w``: the room to deviate without congestion.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from shapeshifter_uftp import (  # type: ignore[import-untyped]
    AcceptedRejected,
    ContractSettlement,
    ContractSettlementISP,
    ContractSettlementPeriod,
    DPrognosisResponse,
    DsoPortfolioQuery,
    DsoPortfolioUpdate,
    DsoPortfolioUpdateCongestionPoint,
    DsoPortfolioUpdateConnection,
    FlexOfferResponse,
    FlexOfferRevocationResponse,
    FlexOrder,
    FlexOrderISP,
    FlexOrderSettlement,
    FlexOrderSettlementISP,
    FlexRequest,
    FlexRequestISP,
    FlexSettlement,
    MeteringResponse,
    ShapeshifterDsoService,
)
from shapeshifter_uftp.uftp import AvailableRequested, RedispatchBy  # type: ignore[import-untyped]
from xsdata.models.datatype import XmlDate, XmlDuration

from opendso.errors import InputError, NotFoundError, RemoteError
from opendso.markets.model import ISP, CongestionPoint, FlexNeed, FlexOffer, FlexOption, check_aware
from opendso.markets.uftp.cro import connection_address
from opendso.markets.uftp.directory import Directory, Keypair, Participant
from opendso.markets.uftp.endpoint import (
    Endpoint,
    Gate,
    GuardedService,
    MessageLedger,
    MessageLog,
    send_message,
)
from opendso.markets.uftp.periods import isp_number, isp_time, isps_in_period, period_start, zone
from opendso.markets.uftp.records import DeskState, ReceivedOffer, SentOrder, SentRequest, SentSettlement
from opendso.markets.uftp.validation import check_dso_message, parse_time

__all__ = ["EA_PATTERN", "FlexProcurement", "Selector"]

log = logging.getLogger(__name__)

#: (offers) -> the (offer id, option reference) pairs to buy.
Selector = Callable[[Sequence[FlexOffer]], Sequence[tuple[str, str]]]

#: UFTP's entity address pattern (EA1 or EAN), as the message schema has it.
EA_PATTERN = r"(ea1\.[0-9]{4}-[0-9]{2}\..{1,244}:.{1,244}|ean\.[0-9]{12,34})"

#: per ISP: our name -> the names a settlement record may use (ours, or UFTP's as markets.settlement has them)
_SETTLEMENT_ISP_FIELDS = {
    "baseline_w": ("baseline_w", "baseline_power"),
    "ordered_w": ("ordered_w", "ordered_flex_power"),
    "actual_w": ("actual_w", "actual_power"),
    "delivered_w": ("delivered_w", "delivered_flex_power"),
    "deficiency_w": ("deficiency_w", "power_deficiency"),
}

_MISSING = object()


def _get(record: Any, name: str) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, _MISSING)
    return getattr(record, name, _MISSING)


def _field(record: Any, *names: str, default: Any = _MISSING) -> Any:
    """The first of ``names`` the record (a mapping or an object) has, else ``default``, else :class:`InputError`."""
    for name in names:
        value = _get(record, name)
        if value is not _MISSING:
            return value
    if default is not _MISSING:
        return default
    raise InputError(f"settlement record: field {' or '.join(repr(n) for n in names)} is missing")


def _iso(time: datetime) -> str:
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _xml_date(day: date) -> XmlDate:
    return XmlDate(day.year, day.month, day.day)


class _DsoService(GuardedService, ShapeshifterDsoService):  # type: ignore[misc]
    def __init__(self, desk: FlexProcurement, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._desk = desk
        self._guard(desk, ShapeshifterDsoService, "dso", desk._check)

    def process_flex_offer(self, message: Any) -> None:
        self._desk._on_flex_offer(message)

    def process_flex_offer_revocation(self, message: Any) -> None:
        self._desk._on_revocation(message)

    def process_flex_order_response(self, message: Any) -> None:
        self._desk._on_order_response(message)

    def process_flex_settlement_response(self, message: Any) -> None:
        self._desk._on_settlement_response(message)

    def process_flex_request_response(self, message: Any) -> None:
        self._desk._on_request_response(message)

    def process_d_prognosis(self, message: Any) -> None:
        self._desk._on_prognosis(message)

    def process_dso_portfolio_update_response(self, message: Any) -> None:
        self._desk._on_update_response(message)

    def process_dso_portfolio_query_response(self, message: Any) -> None:
        self._desk._on_query_response(message)

    def process_flex_reservation_update_response(self, message: Any) -> None:
        pass  # OpenDSO sends no FlexReservationUpdate: validation refuses any answer as an unknown reference

    def process_metering(self, message: Any) -> None:
        self._desk._respond(message, MeteringResponse, metering_message_id=message.message_id)


class FlexProcurement:
    """The DSO's flexibility desk over UFTP: state in memory, one method per step, every message logged.

    ``clock`` gives the current time (UTC, aware) for expiry and Period checks; ``market_time_zone``
    is the market's agreed TimeZone (UFTP's default ``Europe/Amsterdam``).
    """

    def __init__(
        self,
        *,
        domain: str,
        keypair: Keypair,
        directory: Directory,
        market_time_zone: str = "Europe/Amsterdam",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] | None = None,
        gate: Callable[..., Gate] = Gate,
    ) -> None:
        self.domain = domain
        self.directory = directory
        self.log = MessageLog()
        self.ledger = MessageLedger()
        self._keypair = keypair
        self._tz_name = market_time_zone
        self._lock = threading.RLock()
        self._state = DeskState(market_tz=zone(market_time_zone), clock=clock or (lambda: datetime.now(UTC)))
        self._revisions: dict[tuple[str, date, str], int] = {}
        self._published: dict[str, tuple[str, ...]] = {}
        self._service = _DsoService(
            self,
            sender_domain=domain,
            signing_key=keypair.private_key,
            key_lookup_function=directory.key,
            endpoint_lookup_function=directory.endpoint,
        )
        self._endpoint = Endpoint(gate(self._service, directory), host=host, port=port)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Serve, register in the directory as DSO; the endpoint URL."""
        url = self._endpoint.start()
        self.directory.register(Participant(self.domain, "DSO", self._keypair.public_key, url))
        return url

    def close(self) -> None:
        """Stop serving and the library's worker threads."""
        self._endpoint.close()
        self._service.inbound_executor.shutdown(wait=True)
        self._service.outbound_executor.shutdown(wait=True)

    def wait_for(self, predicate: Callable[[FlexProcurement], bool], timeout_s: float) -> bool:
        """Block until ``predicate(self)`` holds (re-checked on every message) or ``timeout_s`` passed."""
        return self.log.wait_for(lambda _: predicate(self), timeout_s)

    # ------------------------------------------------------------------ reading the state

    def requests(self) -> tuple[SentRequest, ...]:
        """Every FlexRequest sent."""
        with self._lock:
            return tuple(self._state.requests.values())

    def open_offers(self) -> tuple[FlexOffer, ...]:
        """The offers that can still be ordered: not revoked, not ordered, not expired, request still current."""
        now = self._state.clock()
        with self._lock:
            return tuple(r.offer for r in self._state.offers.values() if self._orderable(r, now))

    def offer_status(self, offer_id: str) -> ReceivedOffer:
        """The record of one received offer, or :class:`NotFoundError`."""
        with self._lock:
            found = self._state.offers.get(offer_id)
        if found is None:
            raise NotFoundError(f"UFTP: no offer {offer_id}")
        return found

    def orders(self) -> tuple[SentOrder, ...]:
        """Every FlexOrder sent, with its status."""
        with self._lock:
            return tuple(self._state.orders.values())

    def order(self, order_reference: str) -> SentOrder:
        """One order by its OrderReference, or :class:`NotFoundError`."""
        with self._lock:
            for o in self._state.orders.values():
                if o.order_reference == order_reference:
                    return o
        raise NotFoundError(f"UFTP: no order {order_reference}")

    def settlement(self, message_id: str) -> SentSettlement:
        """One FlexSettlement by MessageID, or :class:`NotFoundError`."""
        with self._lock:
            found = self._state.settlements.get(message_id)
        if found is None:
            raise NotFoundError(f"UFTP: no settlement {message_id}")
        return found

    def aggregators_at(self, congestion_point: str) -> tuple[str, ...]:
        """The AGRs the CRO said represent connections at ``congestion_point``, sorted."""
        with self._lock:
            found = self._state.portfolio.get(congestion_point, {})
            return tuple(sorted({a for a in found.values() if a}))

    # ------------------------------------------------------------------ sending

    def _send(self, recipient: str, role: str, message: Any) -> str:
        message.message_id = message.message_id or str(uuid.uuid4())
        message.conversation_id = message.conversation_id or str(uuid.uuid4())
        with self._lock:
            self._state.sent[message.message_id] = (type(message).__name__, recipient)
        return send_message(self._service, self.log, recipient, role, message)

    def _respond(self, message: Any, response_type: Any, **fields: Any) -> None:
        response = response_type(
            recipient_domain=message.sender_domain,
            conversation_id=message.conversation_id,
            result=AcceptedRejected.ACCEPTED,
            **fields,
        )
        send_message(self._service, self.log, message.sender_domain, "AGR", response)

    def publish_congestion_points(
        self, points: Sequence[CongestionPoint], *, cro: str, start: date, mutex_offers: bool = False
    ) -> str:
        """Send the congestion points and their connections to the CRO (DSOPortfolioUpdate); its MessageID.

        Each node of a point becomes a connection addressed by :func:`connection_address` under the
        DSO's domain.
        """
        if not points:
            raise InputError("publish congestion points: none given")
        for p in points:
            if not re.fullmatch(EA_PATTERN, p.id):
                raise InputError(
                    f"congestion point {p.id}: not a UFTP entity address (ea1.yyyy-mm.domain:name or ean.)"
                )
        message = DsoPortfolioUpdate(
            time_zone=self._tz_name,
            congestion_points=[
                DsoPortfolioUpdateCongestionPoint(
                    entity_address=p.id,
                    start_period=_xml_date(start),
                    mutex_offers_supported=mutex_offers,
                    day_ahead_redispatch_by=RedispatchBy.DSO,
                    connections=[
                        DsoPortfolioUpdateConnection(
                            entity_address=connection_address(self.domain, node), start_period=_xml_date(start)
                        )
                        for node in p.nodes
                    ],
                )
                for p in points
            ],
        )
        message.message_id = str(uuid.uuid4())
        with self._lock:
            for p in points:
                self._state.congestion_points[p.id] = p
            self._published[message.message_id] = tuple(p.id for p in points)
        return self._send(cro, "CRO", message)

    def published(self) -> tuple[str, ...]:
        """The congestion points this desk has published (and the CRO has not refused), sorted."""
        with self._lock:
            return tuple(sorted(self._state.congestion_points))

    def query_congestion_point(self, congestion_point: str, *, cro: str, period: date) -> str:
        """Ask the CRO which AGRs represent the point's connections (DSOPortfolioQuery); its MessageID.

        The point may have been published in an earlier session: the CRO, not this desk, knows.
        """
        message = DsoPortfolioQuery(time_zone=self._tz_name, period=_xml_date(period), entity_address=congestion_point)
        return self._send(cro, "CRO", message)

    def request_flex(
        self,
        congestion_point: str,
        needs: Sequence[FlexNeed],
        requested_w: Sequence[float],
        *,
        expires: datetime,
        aggregators: Sequence[str] | None = None,
        available_w: float = 0.0,
        over_request: float = 2.0,
    ) -> tuple[str, ...]:
        """Send FlexRequests for ``needs`` at ``congestion_point``; their MessageIDs.

        ``requested_w[k]`` is the deviation asked for ``needs[k]``'s interval (UFTP sign: negative =
        less consumption). Needs of one interval are combined (the largest ask); asks of both signs
        in one interval are refused. One FlexRequest per Period and aggregator (default: the AGRs
        the CRO named for the point); a new request supersedes the earlier revision for the same
        point, Period and aggregator.
        """
        if len(needs) != len(requested_w) or not needs:
            raise InputError("request flex: give one requested W per need, at least one")
        if over_request < 1.0:
            raise InputError(f"request flex: over_request must be >= 1, got {over_request}")
        if available_w < 0:
            raise InputError(f"request flex: available_w must be >= 0, got {available_w}")
        expiry = check_aware("request flex expires", expires)
        tz = self._state.market_tz
        with self._lock:
            if congestion_point not in self._state.congestion_points:
                raise InputError(f"request flex: congestion point {congestion_point} is not published by this DSO")
        origins = {n.time - n.interval * ISP for n in needs}
        if len(origins) != 1:
            raise InputError("request flex: the needs' times and interval indices do not share one start")
        origin = origins.pop()
        asks: dict[date, dict[int, float]] = {}
        for need, w in zip(needs, requested_w, strict=True):
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w == 0:
                raise InputError(
                    f"request flex: requested W for {need.element} interval {need.interval} must be non-zero"
                )
            period, number = isp_number(need.time, tz)
            before = asks.setdefault(period, {}).get(number)
            if before is not None and (before < 0) != (w < 0):
                raise InputError(f"request flex: interval {need.interval} asks for both directions")
            asks[period][number] = w if before is None or abs(w) > abs(before) else before
        recipients = tuple(aggregators) if aggregators is not None else self.aggregators_at(congestion_point)
        if not recipients:
            raise InputError(f"request flex: no aggregator known at {congestion_point}; query the CRO first")
        sent: list[str] = []
        for period, wanted in sorted(asks.items()):
            for agr in recipients:
                sent.append(
                    self._send_request(congestion_point, period, wanted, agr, expiry, origin, available_w, over_request)
                )
        return tuple(sent)

    def _send_request(
        self,
        point: str,
        period: date,
        wanted: dict[int, float],
        agr: str,
        expiry: datetime,
        origin: datetime,
        available_w: float,
        over: float,
    ) -> str:
        tz = self._state.market_tz
        count = isps_in_period(period, tz)
        isps: list[Any] = []
        free = [n for n in range(1, count + 1) if n not in wanted]
        run_start = None
        for i, n in enumerate(free):
            run_start = n if run_start is None else run_start
            if i + 1 == len(free) or free[i + 1] != n + 1:
                isps.append(
                    FlexRequestISP(
                        disposition=AvailableRequested.AVAILABLE,
                        min_power=-round(available_w),
                        max_power=round(available_w),
                        start=run_start,
                        duration=n - run_start + 1,
                    )
                )
                run_start = None
        for n, w in sorted(wanted.items()):
            low, high = (round(w * over), round(w)) if w < 0 else (round(w), round(w * over))
            isps.append(
                FlexRequestISP(disposition=AvailableRequested.REQUESTED, min_power=low, max_power=high, start=n)
            )
        isps.sort(key=lambda e: e.start)
        key = (point, period, agr)
        with self._lock:
            revision = self._revisions.get(key, 0) + 1
            self._revisions[key] = revision
        message = FlexRequest(
            message_id=str(uuid.uuid4()),
            conversation_id=str(uuid.uuid4()),
            isp_duration=XmlDuration("PT15M"),
            time_zone=self._tz_name,
            period=_xml_date(period),
            congestion_point=point,
            revision=revision,
            expiration_date_time=_iso(expiry),
            isps=isps,
        )
        with self._lock:
            for r in self._state.requests.values():
                if (r.congestion_point, r.period, r.aggregator) == key:
                    r.superseded = True
            self._state.requests[message.message_id] = SentRequest(
                message_id=message.message_id,
                conversation_id=message.conversation_id,
                aggregator=agr,
                congestion_point=point,
                period=period,
                revision=revision,
                expires=expiry,
                origin=origin,
                requested_w=dict(wanted),
            )
        try:
            return self._send(agr, "AGR", message)
        except RemoteError:
            with self._lock:
                del self._state.requests[message.message_id]
            raise

    @staticmethod
    def _orderable(r: ReceivedOffer, now: datetime) -> bool:
        return not r.revoked and not r.ordered and now <= r.expires

    def place_orders(self, selector: Selector) -> tuple[str, ...]:
        """Ask ``selector`` which open offers to buy and send a FlexOrder for each; their OrderReferences."""
        offers = self.open_offers()
        chosen = list(selector(offers))
        with self._lock:
            records = {r.message_id: r for r in self._state.offers.values()}
        seen: set[str] = set()
        now = self._state.clock()
        for offer_id, ref in chosen:
            record = records.get(offer_id)
            if record is None or not self._orderable(record, now):
                raise InputError(f"place orders: offer {offer_id} is not open")
            record.offer.option(ref)
            if offer_id in seen:
                raise InputError(f"place orders: offer {offer_id} chosen twice (one option per offer)")
            seen.add(offer_id)
        placed: list[str] = []
        for offer_id, ref in chosen:
            placed.append(self._send_order(records[offer_id], ref))
        return tuple(placed)

    def _send_order(self, record: ReceivedOffer, ref: str) -> str:
        option = next(o for o in record.message.offer_options if o.option_reference == ref)
        reference = f"OR-{uuid.uuid4().hex[:16]}"
        message = FlexOrder(
            message_id=str(uuid.uuid4()),
            conversation_id=record.message.conversation_id,
            isp_duration=record.message.isp_duration,
            time_zone=record.message.time_zone,
            period=record.message.period,
            congestion_point=record.congestion_point,
            flex_offer_message_id=record.message_id,
            isps=[FlexOrderISP(power=i.power, start=i.start, duration=i.duration) for i in option.isps],
            price=option.price,
            currency=record.message.currency,
            order_reference=reference,
            option_reference=ref,
        )
        with self._lock:
            record.ordered = True
            self._state.orders[message.message_id] = SentOrder(
                message_id=message.message_id,
                order_reference=reference,
                aggregator=record.aggregator,
                offer_id=record.message_id,
                option_reference=ref,
                congestion_point=record.congestion_point,
                period=record.period,
                price=float(option.price),
                currency=record.message.currency,
            )
        self._send(record.aggregator, "AGR", message)
        return reference

    def settle(
        self,
        aggregator: str,
        records: Sequence[Any],
        *,
        period_start: date,
        period_end: date,
        currency: str = "EUR",
    ) -> str:
        """Send one FlexSettlement to ``aggregator`` from per-order settlement records; its MessageID.

        Each record (a mapping or an object) has ``order`` (the OrderReference), ``price``,
        ``penalty``, ``net`` and ``isps``: per ISP ``time`` (its aware start), ``baseline_w``,
        ``ordered_w``, ``actual_w``, ``delivered_w``, ``deficiency_w``. UFTP's FlexOrderSettlement
        carries them as BaselinePower, OrderedFlexPower, ActualPower, DeliveredFlexPower,
        PowerDeficiency, Price, Penalty and NetSettlement; a record may use those names instead
        (``order_reference``, ``net_settlement``, per ISP ``start``/``duration`` in the order's
        Period and ``baseline_power`` ...), as :class:`opendso.markets.settlement.OrderSettlement`
        does, and may carry ``contract_id`` and ``baseline_reference``. Amounts are sent as given.
        The library requires a ContractSettlement as well; with no reservation contract it carries
        ReservedPower 0 and the ordered power.
        """
        if not records:
            raise InputError("settle: no settlement records")
        if period_end < period_start:
            raise InputError("settle: period_end is before period_start")
        tz = self._state.market_tz
        settlements: list[Any] = []
        contract_periods: list[Any] = []
        orders: list[str] = []
        for record in records:
            reference = str(_field(record, "order", "order_reference"))
            order = self.order(reference)
            if order.aggregator != aggregator or order.status != "accepted":
                raise InputError(f"settle: order {reference} is not an accepted order of {aggregator}")
            if not period_start <= order.period <= period_end:
                raise InputError(f"settle: order {reference} is for {order.period}, outside the settlement period")
            isps = []
            count = isps_in_period(order.period, tz)
            for item in _field(record, "isps"):
                values = {ours: _field(item, *names) for ours, names in _SETTLEMENT_ISP_FIELDS.items()}
                time = _field(item, "time", default=None)
                if time is not None:
                    period, number = isp_number(time, tz)
                else:
                    period, number = order.period, int(_field(item, "start"))
                duration = int(_field(item, "duration", default=1))
                if period != order.period or number < 1 or duration < 1 or number + duration - 1 > count:
                    raise InputError(f"settle: order {reference} has an ISP outside its Period {order.period}")
                isps.append(
                    FlexOrderSettlementISP(
                        start=number,
                        duration=duration,
                        baseline_power=round(values["baseline_w"]),
                        ordered_flex_power=round(values["ordered_w"]),
                        actual_power=round(values["actual_w"]),
                        delivered_flex_power=round(values["delivered_w"]),
                        power_deficiency=round(values["deficiency_w"]),
                    )
                )
            if not isps:
                raise InputError(f"settle: order {reference} has no ISPs")
            settlements.append(
                FlexOrderSettlement(
                    order_reference=reference,
                    period=_xml_date(order.period),
                    congestion_point=order.congestion_point,
                    price=Decimal(str(_field(record, "price"))),
                    penalty=Decimal(str(_field(record, "penalty"))),
                    net_settlement=Decimal(str(_field(record, "net", "net_settlement"))),
                    contract_id=_field(record, "contract_id", default=None),
                    baseline_reference=_field(record, "baseline_reference", default=None),
                    isps=isps,
                )
            )
            contract_periods.append(
                ContractSettlementPeriod(
                    period=_xml_date(order.period),
                    isps=[
                        ContractSettlementISP(
                            start=i.start, duration=i.duration, reserved_power=0, ordered_power=i.ordered_flex_power
                        )
                        for i in isps
                    ],
                )
            )
            orders.append(reference)
        message = FlexSettlement(
            message_id=str(uuid.uuid4()),
            conversation_id=str(uuid.uuid4()),
            flex_order_settlements=settlements,
            contract_settlements=[ContractSettlement(periods=contract_periods)],
            period_start=_xml_date(period_start),
            period_end=_xml_date(period_end),
            currency=currency,
        )
        with self._lock:
            self._state.settlements[message.message_id] = SentSettlement(
                message_id=message.message_id,
                aggregator=aggregator,
                period_start=period_start,
                period_end=period_end,
                orders=tuple(orders),
            )
        return self._send(aggregator, "AGR", message)

    # ------------------------------------------------------------------ receiving

    def _check(self, message: Any, sender_role: str) -> None:
        with self._lock:
            check_dso_message(self._state, message, sender_role)

    def _to_offer(self, message: Any, origin: datetime, period: date) -> FlexOffer:
        tz = self._state.market_tz
        options = []
        for option in message.offer_options:
            powers: dict[int, float] = {}
            for element in option.isps:
                for n in range(element.start, element.start + (element.duration or 1)):
                    k = int((isp_time(period, n, tz) - origin) // ISP)
                    if k < 0:
                        raise InputError(f"offer {message.message_id}: an ISP before the request's first interval")
                    powers[k] = float(element.power)
            first, last = min(powers), max(powers)
            options.append(
                FlexOption(
                    reference=option.option_reference,
                    first=first,
                    power_w=tuple(powers.get(k, 0.0) for k in range(first, last + 1)),
                    price=float(option.price),
                )
            )
        return FlexOffer(
            id=message.message_id,
            aggregator=message.sender_domain,
            congestion_point=message.congestion_point,
            options=tuple(options),
            currency=message.currency,
        )

    def _on_flex_offer(self, message: Any) -> None:
        period = message.period.to_date()
        with self._lock:
            request = self._state.requests.get(message.flex_request_message_id or "")
            origin = request.origin if request is not None else period_start(period, self._state.market_tz)
        try:
            offer = self._to_offer(message, origin, period)
        except InputError as exc:
            response = FlexOfferResponse(
                recipient_domain=message.sender_domain,
                conversation_id=message.conversation_id,
                flex_offer_message_id=message.message_id,
                result=AcceptedRejected.REJECTED,
                rejection_reason=f"Invalid Message: {exc}",
            )
            send_message(self._service, self.log, message.sender_domain, "AGR", response)
            return
        with self._lock:
            self._state.offers[message.message_id] = ReceivedOffer(
                message_id=message.message_id,
                aggregator=message.sender_domain,
                congestion_point=message.congestion_point,
                period=period,
                expires=parse_time(message.expiration_date_time),
                request_id=message.flex_request_message_id,
                message=message,
                offer=offer,
            )
        self._respond(message, FlexOfferResponse, flex_offer_message_id=message.message_id)

    def _on_revocation(self, message: Any) -> None:
        with self._lock:
            self._state.offers[message.flex_offer_message_id].revoked = True
        self._respond(message, FlexOfferRevocationResponse, flex_offer_revocation_message_id=message.message_id)

    def _on_order_response(self, message: Any) -> None:
        with self._lock:
            order = self._state.orders.get(message.flex_order_message_id)
            if order is not None:
                order.status = "accepted" if str(message.result) == "Accepted" else "rejected"
                order.reason = message.rejection_reason

    def _on_settlement_response(self, message: Any) -> None:
        with self._lock:
            settlement = self._state.settlements[message.flex_settlement_message_id]
            settlement.status = "accepted" if str(message.result) == "Accepted" else "rejected"
            settlement.reason = message.rejection_reason
            for status in message.flex_order_settlement_statuses:
                settlement.dispositions[status.order_reference] = (str(status.disposition), status.dispute_reason)

    def _on_request_response(self, message: Any) -> None:
        with self._lock:
            request = self._state.requests.get(message.flex_request_message_id)
            if request is not None:
                request.answer = str(message.result)
                request.answer_reason = message.rejection_reason

    def _on_prognosis(self, message: Any) -> None:
        with self._lock:
            self._state.prognoses[message.message_id] = message
        self._respond(message, DPrognosisResponse, d_prognosis_message_id=message.message_id)

    def _on_update_response(self, message: Any) -> None:
        with self._lock:
            points = self._published.pop(message.dso_portfolio_update_message_id, ())
            if str(message.result) != "Accepted":
                for point in points:
                    self._state.congestion_points.pop(point, None)

    def _on_query_response(self, message: Any) -> None:
        if str(message.result) != "Accepted" or message.congestion_point is None:
            return
        with self._lock:
            self._state.portfolio[message.congestion_point.entity_address] = {
                c.entity_address: c.agr_domain for c in message.congestion_point.connections
            }
