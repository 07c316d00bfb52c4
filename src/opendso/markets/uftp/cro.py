"""The Common Reference Operator: the register of congestion points and of the aggregators' connections.

UFTP's CRO (Shapeshifter specification, use cases 3.1-3.4: exchange of congestion points, of
connections by the AGR, retrieval of congestion points and of registered connections) keeps

- the congestion points each DSO publishes with ``DSOPortfolioUpdate`` (their connections,
  ``MutexOffersSupported``, ``DayAheadRedispatchBy``), answered with ``DSOPortfolioUpdateResponse``;
  a connection already placed at another congestion point is refused ("Connection conflict:
  <connection> at <congestion point>", message catalog, DSOPortfolioUpdateResponse);
- the connections each aggregator represents, from ``AGRPortfolioUpdate``;

and answers ``DSOPortfolioQuery`` (which AGR represents each connection of one of the DSO's
congestion points; an unknown point or one of another DSO is "Invalid Congestion Point") and
``AGRPortfolioQuery`` (at which DSOs' congestion points the AGR's connections are). It runs the
library's ``ShapeshifterCroService`` behind OpenDSO's :class:`~opendso.markets.uftp.endpoint.Gate`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from shapeshifter_uftp import (  # type: ignore[import-untyped]
    AcceptedRejected,
    AgrPortfolioQueryResponse,
    AgrPortfolioQueryResponseCongestionPoint,
    AgrPortfolioQueryResponseConnection,
    AgrPortfolioQueryResponseDSOPortfolio,
    AgrPortfolioQueryResponseDSOView,
    AgrPortfolioUpdateResponse,
    DsoPortfolioQueryCongestionPoint,
    DsoPortfolioQueryConnection,
    DsoPortfolioQueryResponse,
    DsoPortfolioUpdateResponse,
    ShapeshifterCroService,
)
from shapeshifter_uftp.exceptions import (  # type: ignore[import-untyped]
    ConnectionConflictException,
    InvalidCongestionPointException,
)

from opendso.markets.uftp.directory import Directory, Keypair, Participant
from opendso.markets.uftp.endpoint import (
    Endpoint,
    Gate,
    GuardedService,
    MessageLedger,
    MessageLog,
    send_message,
)

__all__ = ["CommonReferenceOperator", "connection_address"]

log = logging.getLogger(__name__)


def connection_address(domain: str, node: str, *, since: str = "2020-01") -> str:
    """The EA1 entity address of the connection at grid ``node`` named by ``domain``'s authority.

    Specification, appendix "Message transport mechanism", "EA1 addressing scheme":
    ``ea1.<yyyy-mm>.<reversed domain>:<locally unique string>``.
    """
    return f"ea1.{since}.{'.'.join(reversed(domain.split('.')))}:{node}"


class _CroService(GuardedService, ShapeshifterCroService):  # type: ignore[misc]
    def __init__(self, cro: CommonReferenceOperator, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cro = cro
        self._guard(cro, ShapeshifterCroService, "cro", cro.check)

    def process_dso_portfolio_update(self, message: Any) -> None:
        self._cro.on_dso_update(message)

    def process_agr_portfolio_update(self, message: Any) -> None:
        self._cro.on_agr_update(message)

    def process_dso_portfolio_query(self, message: Any) -> None:
        self._cro.on_dso_query(message)

    def process_agr_portfolio_query(self, message: Any) -> None:
        self._cro.on_agr_query(message)


class CommonReferenceOperator:
    """A CRO on ``host:port``: the register of congestion points and connections, in memory."""

    def __init__(
        self,
        *,
        domain: str,
        keypair: Keypair,
        directory: Directory,
        host: str = "127.0.0.1",
        port: int = 0,
        gate: Callable[..., Gate] = Gate,
    ) -> None:
        self.domain = domain
        self.directory = directory
        self.log = MessageLog()
        self.ledger = MessageLedger()
        self._keypair = keypair
        self._lock = threading.Lock()
        #: congestion point -> (DSO domain, connection addresses, mutex offers, day-ahead redispatch by)
        self._points: dict[str, tuple[str, tuple[str, ...], bool, Any]] = {}
        #: connection address -> AGR domain
        self._connections: dict[str, str] = {}
        self._service = _CroService(
            self,
            sender_domain=domain,
            signing_key=keypair.private_key,
            key_lookup_function=directory.key,
            endpoint_lookup_function=directory.endpoint,
        )
        self._endpoint = Endpoint(gate(self._service, directory), host=host, port=port)

    def start(self) -> str:
        """Serve, register in the directory as CRO; the endpoint URL."""
        url = self._endpoint.start()
        self.directory.register(Participant(self.domain, "CRO", self._keypair.public_key, url))
        return url

    def close(self) -> None:
        """Stop serving and the library's worker threads."""
        self._endpoint.close()
        self._service.inbound_executor.shutdown(wait=True)
        self._service.outbound_executor.shutdown(wait=True)

    def congestion_points(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Congestion point -> (DSO domain, its connection addresses)."""
        with self._lock:
            return {cp: (dso, conns) for cp, (dso, conns, _, _) in self._points.items()}

    def aggregator_of(self, connection: str) -> str | None:
        """The AGR that registered ``connection``, if any."""
        with self._lock:
            return self._connections.get(connection)

    def check(self, message: Any, sender_role: str) -> None:
        """The CRO's own checks (the rest happen while processing, where the register is locked)."""

    def _answer(self, message: Any, response: Any, role: str) -> None:
        try:
            send_message(self._service, self.log, message.sender_domain, role, response)
        except Exception:
            log.exception("event=uftp_cro_answer_failed to=%s", message.sender_domain)

    def on_dso_update(self, message: Any) -> None:
        """Register the DSO's congestion points (all or nothing)."""
        reason = None
        with self._lock:
            placed: dict[str, str] = {}
            for point in message.congestion_points:
                owner = self._points.get(point.entity_address)
                if owner is not None and owner[0] != message.sender_domain:
                    reason = InvalidCongestionPointException().rejection_reason
                    break
                for conn in point.connections:
                    for other, (_, conns, _, _) in self._points.items():
                        if other != point.entity_address and conn.entity_address in conns:
                            reason = ConnectionConflictException(conn.entity_address, other).rejection_reason
                    if placed.get(conn.entity_address, point.entity_address) != point.entity_address:
                        reason = ConnectionConflictException(
                            conn.entity_address, placed[conn.entity_address]
                        ).rejection_reason
                    placed[conn.entity_address] = point.entity_address
                if reason:
                    break
            if reason is None:
                for point in message.congestion_points:
                    self._points[point.entity_address] = (
                        message.sender_domain,
                        tuple(c.entity_address for c in point.connections),
                        bool(point.mutex_offers_supported),
                        point.day_ahead_redispatch_by,
                    )
        response = DsoPortfolioUpdateResponse(
            recipient_domain=message.sender_domain,
            conversation_id=message.conversation_id,
            dso_portfolio_update_message_id=message.message_id,
            result=AcceptedRejected.REJECTED if reason else AcceptedRejected.ACCEPTED,
            rejection_reason=reason,
        )
        self._answer(message, response, "DSO")

    def on_agr_update(self, message: Any) -> None:
        """Register the connections the AGR represents."""
        with self._lock:
            for conn in message.connections:
                self._connections[conn.entity_address] = message.sender_domain
        response = AgrPortfolioUpdateResponse(
            recipient_domain=message.sender_domain,
            conversation_id=message.conversation_id,
            agr_portfolio_update_message_id=message.message_id,
        )
        self._answer(message, response, "AGR")

    def on_dso_query(self, message: Any) -> None:
        """Answer which AGR represents each connection of the DSO's congestion point."""
        with self._lock:
            point = self._points.get(message.entity_address)
            known = point is not None and point[0] == message.sender_domain
            connections = [
                DsoPortfolioQueryConnection(entity_address=c, agr_domain=self._connections.get(c))
                for c in (point[1] if point is not None and known else ())
            ]
        response = DsoPortfolioQueryResponse(
            recipient_domain=message.sender_domain,
            conversation_id=message.conversation_id,
            dso_portfolio_query_message_id=message.message_id,
            time_zone=message.time_zone,
            period=message.period,
            congestion_point=(
                DsoPortfolioQueryCongestionPoint(entity_address=message.entity_address, connections=connections)
                if known
                else None
            ),
            result=AcceptedRejected.ACCEPTED if known else AcceptedRejected.REJECTED,
            rejection_reason=None if known else InvalidCongestionPointException().rejection_reason,
        )
        self._answer(message, response, "DSO")

    def on_agr_query(self, message: Any) -> None:
        """Answer at which DSOs' congestion points the AGR's connections are."""
        with self._lock:
            mine = sorted(c for c, agr in self._connections.items() if agr == message.sender_domain)
            by_dso: dict[str, list[Any]] = {}
            for cp, (dso, conns, mutex, redispatch) in sorted(self._points.items()):
                here = [c for c in conns if c in mine]
                if here:
                    by_dso.setdefault(dso, []).append(
                        AgrPortfolioQueryResponseCongestionPoint(
                            entity_address=cp,
                            connections=[AgrPortfolioQueryResponseConnection(entity_address=c) for c in here],
                            mutex_offers_supported=mutex,
                            day_ahead_redispatch_by=redispatch,
                        )
                    )
            placed = {
                c for points in by_dso.values() for p in points for c in (x.entity_address for x in p.connections)
            }
        if by_dso:
            view = AgrPortfolioQueryResponseDSOView(
                dso_portfolios=[
                    AgrPortfolioQueryResponseDSOPortfolio(dso_domain=d, congestion_points=p) for d, p in by_dso.items()
                ],
                connections=[AgrPortfolioQueryResponseConnection(entity_address=c) for c in mine if c not in placed],
            )
            response = AgrPortfolioQueryResponse(
                recipient_domain=message.sender_domain,
                conversation_id=message.conversation_id,
                agr_portfolio_query_message_id=message.message_id,
                dso_views=[view],
                time_zone=message.time_zone,
                period=message.period,
            )
        else:
            # the library's AgrPortfolioQueryResponse needs at least one DSO portfolio (validate_list):
            # with none there is nothing it can carry, so the AGR gets no answer; logged
            log.warning("event=uftp_cro_agr_query_empty agr=%s", message.sender_domain)
            return
        self._answer(message, response, "AGR")
