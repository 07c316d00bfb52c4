"""A simulated aggregator (UFTP AGR role) that answers FlexRequests from a portfolio.

Used by the tests, the demo and the benchmark as the other party of the DSO's flexibility desk.
It runs the library's ``ShapeshifterAgrService`` behind the same transport gate as the DSO and:

- registers its connections with the CRO (AGRPortfolioUpdate) and can query them;
- answers a FlexRequest with a FlexRequestResponse and, where its portfolio has flexibility at
  the congestion point, one FlexOffer with two options: ``full`` (each Requested ISP's MaxPower,
  the least asked, capped at the portfolio's ``flex_w``) and ``half`` (half of it), priced at
  ``price_per_mwh`` for the energy of the option;
- accepts a FlexOrder only if it copies an option it offered unchanged (message catalog,
  FlexOrder: "AGR implementations will (and must) reject FlexOrder messages where the ISP list is
  not exactly the same as offered"), else rejects it;
- answers a FlexSettlement per order Accepted or Disputed: disputed, with the reason, when the
  order is unknown, the price or ordered power differ from the order, DeliveredFlexPower is not
  ActualPower - BaselinePower, or NetSettlement is not Price - Penalty (or by an injected judge).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from shapeshifter_uftp import (  # type: ignore[import-untyped]
    AcceptedRejected,
    AgrPortfolioQuery,
    AgrPortfolioUpdate,
    AgrPortfolioUpdateConnection,
    FlexOffer,
    FlexOfferOption,
    FlexOfferOptionISP,
    FlexOrderResponse,
    FlexOrderSettlementStatus,
    FlexRequestResponse,
    FlexSettlementResponse,
    ShapeshifterAgrService,
)
from shapeshifter_uftp.uftp import AcceptedDisputed  # type: ignore[import-untyped]
from xsdata.models.datatype import XmlDate

from opendso.errors import InputError
from opendso.markets.uftp.directory import Directory, Keypair, Participant
from opendso.markets.uftp.endpoint import (
    Endpoint,
    Gate,
    GuardedService,
    MessageLedger,
    MessageLog,
    reference_of,
    send_message,
)
from opendso.markets.uftp.validation import requested_isps

__all__ = ["Judge", "PortfolioEntry", "SimulatedAggregator"]

log = logging.getLogger(__name__)

#: settlement of one order -> None (accept) or the dispute reason
Judge = Callable[[Any, Any], str | None]


@dataclass(frozen=True)
class PortfolioEntry:
    """The aggregator's flexibility at one congestion point: its connections, W per ISP, and price."""

    congestion_point: str
    connections: tuple[str, ...]
    flex_w: float
    price_per_mwh: float

    def __post_init__(self) -> None:
        if not self.flex_w > 0 or self.price_per_mwh < 0:
            raise InputError(f"portfolio at {self.congestion_point}: flex_w must be > 0 and price >= 0")


class _AgrService(GuardedService, ShapeshifterAgrService):  # type: ignore[misc]
    def __init__(self, agr: SimulatedAggregator, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._agr = agr
        self._guard(agr, ShapeshifterAgrService, "agr", lambda m, r: None)

    def _keep(self, message: Any) -> None:
        self._agr._keep(message)

    process_d_prognosis_response = _keep
    process_flex_offer_response = _keep
    process_flex_offer_revocation_response = _keep
    process_metering_response = _keep
    process_agr_portfolio_query_response = _keep
    process_agr_portfolio_update_response = _keep

    def process_flex_request(self, message: Any) -> None:
        self._agr._on_request(message)

    def process_flex_order(self, message: Any) -> None:
        self._agr._on_order(message)

    def process_flex_reservation_update(self, message: Any) -> None:
        self._agr._keep(message)

    def process_flex_settlement(self, message: Any) -> None:
        self._agr._on_settlement(message)


class SimulatedAggregator:
    """An AGR on ``host:port`` answering FlexRequests from ``portfolio``; everything it receives is kept."""

    def __init__(
        self,
        *,
        domain: str,
        keypair: Keypair,
        directory: Directory,
        portfolio: Sequence[PortfolioEntry],
        host: str = "127.0.0.1",
        port: int = 0,
        judge: Judge | None = None,
        gate: Callable[..., Gate] = Gate,
    ) -> None:
        self.domain = domain
        self.directory = directory
        self.log = MessageLog()
        self.ledger = MessageLedger()
        self.keypair = keypair
        self._portfolio = {p.congestion_point: p for p in portfolio}
        self._judge = judge
        self._lock = threading.Lock()
        self._received: list[Any] = []
        self._offers: dict[str, Any] = {}
        self.orders: dict[str, Any] = {}
        self._service = _AgrService(
            self,
            sender_domain=domain,
            signing_key=keypair.private_key,
            key_lookup_function=directory.key,
            endpoint_lookup_function=directory.endpoint,
        )
        self._endpoint = Endpoint(gate(self._service, directory), host=host, port=port)

    def start(self) -> str:
        """Serve, register in the directory as AGR; the endpoint URL."""
        url = self._endpoint.start()
        self.directory.register(Participant(self.domain, "AGR", self.keypair.public_key, url))
        return url

    def close(self) -> None:
        """Stop serving and the library's worker threads."""
        self._endpoint.close()
        self._service.inbound_executor.shutdown(wait=True)
        self._service.outbound_executor.shutdown(wait=True)

    def wait_for(self, predicate: Callable[[SimulatedAggregator], bool], timeout_s: float) -> bool:
        """Block until ``predicate(self)`` holds (re-checked on every message) or ``timeout_s`` passed."""
        return self.log.wait_for(lambda _: predicate(self), timeout_s)

    def received(self, kind: str | None = None) -> tuple[Any, ...]:
        """The messages received (library objects), optionally of one type name."""
        with self._lock:
            return tuple(m for m in self._received if kind is None or type(m).__name__ == kind)

    def response_to(self, message_id: str) -> Any | None:
        """The response received to our message ``message_id``, if any."""
        for m in self.received():
            if reference_of(m) == message_id:
                return m
        return None

    def offers_sent(self) -> tuple[Any, ...]:
        """The FlexOffers sent (library objects)."""
        with self._lock:
            return tuple(self._offers.values())

    def send(self, recipient: str, role: str, message: Any) -> str:
        """Sign and send any message with the library's client; its MessageID (:class:`RemoteError` on HTTP errors)."""
        message.message_id = message.message_id or str(uuid.uuid4())
        if type(message).__name__ == "FlexOffer":
            with self._lock:
                self._offers[message.message_id] = message
        return send_message(self._service, self.log, recipient, role, message)

    def register_connections(self, cro: str, *, start: date, time_zone: str = "Europe/Amsterdam") -> str:
        """Tell the CRO which connections this AGR represents (AGRPortfolioUpdate); its MessageID."""
        connections = sorted({c for p in self._portfolio.values() for c in p.connections})
        message = AgrPortfolioUpdate(
            time_zone=time_zone,
            connections=[
                AgrPortfolioUpdateConnection(entity_address=c, start_period=XmlDate(start.year, start.month, start.day))
                for c in connections
            ],
        )
        return self.send(cro, "CRO", message)

    def query_portfolio(self, cro: str, *, period: date, time_zone: str = "Europe/Amsterdam") -> str:
        """Ask the CRO where this AGR's connections are (AGRPortfolioQuery); its MessageID."""
        message = AgrPortfolioQuery(time_zone=time_zone, period=XmlDate(period.year, period.month, period.day))
        return self.send(cro, "CRO", message)

    # ------------------------------------------------------------------ receiving

    def _keep(self, message: Any) -> None:
        with self._lock:
            self._received.append(message)

    def _answer(self, message: Any, response: Any) -> None:
        try:
            send_message(self._service, self.log, message.sender_domain, "DSO", response)
        except Exception:
            log.exception("event=uftp_agr_answer_failed to=%s", message.sender_domain)

    def _on_request(self, message: Any) -> None:
        self._keep(message)
        self._answer(
            message,
            FlexRequestResponse(
                recipient_domain=message.sender_domain,
                conversation_id=message.conversation_id,
                flex_request_message_id=message.message_id,
                result=AcceptedRejected.ACCEPTED,
            ),
        )
        entry = self._portfolio.get(message.congestion_point)
        asked = requested_isps(message.isps)
        if entry is None or not asked:
            return
        options = []
        for name, share in (("full", 1.0), ("half", 0.5)):
            isps = []
            energy_mwh = 0.0
            for number, (_, least) in sorted(asked.items()):
                power = round(share * (1 if least > 0 else -1) * min(abs(least), entry.flex_w))
                isps.append(FlexOfferOptionISP(power=power, start=number))
                energy_mwh += abs(power) * 0.25 / 1e6
            options.append(
                FlexOfferOption(
                    option_reference=name,
                    isps=isps,
                    price=Decimal(str(round(energy_mwh * entry.price_per_mwh, 4))),
                )
            )
        offer = FlexOffer(
            message_id=str(uuid.uuid4()),
            conversation_id=message.conversation_id,
            isp_duration=message.isp_duration,
            time_zone=message.time_zone,
            period=message.period,
            congestion_point=message.congestion_point,
            expiration_date_time=message.expiration_date_time,
            flex_request_message_id=message.message_id,
            offer_options=options,
            currency="EUR",
        )
        try:
            self.send(message.sender_domain, "DSO", offer)
        except Exception:
            log.exception("event=uftp_agr_offer_failed to=%s", message.sender_domain)

    def _on_order(self, message: Any) -> None:
        self._keep(message)
        with self._lock:
            offer = self._offers.get(message.flex_offer_message_id or "")
        reason = None
        if offer is None or offer.recipient_domain != message.sender_domain:
            reason = "Unknown Reference"
        else:
            option = next((o for o in offer.offer_options if o.option_reference == message.option_reference), None)
            copied = option is not None and [(i.power, i.start, i.duration) for i in option.isps] == [
                (i.power, i.start, i.duration) for i in message.isps
            ]
            if not copied:
                reason = "Invalid Message: the ISPs are not those of the offered option"
        if reason is None:
            with self._lock:
                self.orders[message.order_reference] = message
        self._answer(
            message,
            FlexOrderResponse(
                recipient_domain=message.sender_domain,
                conversation_id=message.conversation_id,
                flex_order_message_id=message.message_id,
                result=AcceptedRejected.REJECTED if reason else AcceptedRejected.ACCEPTED,
                rejection_reason=reason,
            ),
        )

    def _dispute(self, settlement: Any, order: Any) -> str | None:
        if order is None:
            return "unknown order"
        # amounts are settled in cents (half up): the ordered price rounded so is what is owed
        if Decimal(settlement.price) != Decimal(order.price).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP):
            return "price differs from the order"
        ordered = {n: i.power for i in order.isps for n in range(i.start, i.start + (i.duration or 1))}
        for isp in settlement.isps:
            if ordered.get(isp.start) != isp.ordered_flex_power:
                return f"ordered power of ISP {isp.start} differs from the order"
            if isp.delivered_flex_power != isp.actual_power - isp.baseline_power:
                return f"delivered power of ISP {isp.start} is not actual minus baseline"
        if Decimal(settlement.net_settlement) != Decimal(settlement.price) - Decimal(settlement.penalty):
            return "net settlement is not price minus penalty"
        return None

    def _on_settlement(self, message: Any) -> None:
        self._keep(message)
        statuses = []
        for item in message.flex_order_settlements:
            with self._lock:
                order = self.orders.get(item.order_reference)
            reason = self._judge(item, order) if self._judge is not None else self._dispute(item, order)
            statuses.append(
                FlexOrderSettlementStatus(
                    order_reference=item.order_reference,
                    disposition=AcceptedDisputed.DISPUTED if reason else AcceptedDisputed.ACCEPTED,
                    dispute_reason=reason,
                )
            )
        self._answer(
            message,
            FlexSettlementResponse(
                recipient_domain=message.sender_domain,
                conversation_id=message.conversation_id,
                flex_settlement_message_id=message.message_id,
                result=AcceptedRejected.ACCEPTED,
                flex_order_settlement_statuses=statuses,
            ),
        )
