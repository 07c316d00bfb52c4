"""The DSO's checks of every message it receives, with UFTP's rejection reasons as the specification.

Source: the Shapeshifter (UFTP 3.x) specification, chapter "Message validation", table of
generic rejection reasons (abbreviations as there: FO FlexOffer, FOFR FlexOfferRevocation, FOR_R
FlexOrderResponse, FS_R FlexSettlementResponse, FR_R FlexRequestResponse, DP D-Prognosis, M
Metering, DPU_R/DPQ_R DSOPortfolioUpdate/QueryResponse, FRU_R FlexReservationUpdateResponse), and
the message catalog's pages of each response ("Rejection is allowed in case ..."). The reasons are
the library's exceptions (``shapeshifter_uftp.exceptions``), whose ``rejection_reason`` is the text
the sender receives. Transport-level refusals (HTTP status codes) are in
:mod:`opendso.markets.uftp.endpoint`; the generic reasons of every endpoint (Barred Sender,
Unknown Recipient, Invalid Sender, Duplicate Identifier, Already Submitted) in
:func:`~opendso.markets.uftp.endpoint.check_common`.

Reasons applied here, per message the DSO receives:

- **ISP Duration Rejected** ("ISP duration rejected": the message's ISP-Duration is not the
  market's, PT15M): FO, DP, M.
- **TimeZone Rejected** ("TimeZone rejected": a TimeZone with a different UTC offset than the
  market's over the Period): FO, DP, M, DPQ_R.
- **Invalid Congestion Point** ("Invalid CongestionPoint": unknown, or not the congestion point
  of the referenced FlexRequest): FO, DP.
- **Period Out Of Bounds** ("Period out of bounds": a Period before today in the market's zone):
  FO, DP.
- **ISPs Out Of Bounds** ("ISPs out of bounds": an ISP number below 1 or beyond the Period's
  ISPs, 96 / 92 / 100, or a Duration below 1): FO, DP.
- **ISP Conflict** ("ISP conflict": an ISP addressed twice within one option or prognosis): FO, DP.
- **Expiration DateTime Out Of Bounds** ("ExpirationDateTime out of bounds": the offer's
  ExpirationDateTime is in the past): FO.
- **Unknown Reference** ("Unknown <MessageType>MessageID reference": the referenced message was
  never sent to, or by, this sender): FO (FlexRequestMessageID, D-PrognosisMessageID), FOFR
  (FlexOfferMessageID), FOR_R, FS_R (and each FlexOrderSettlementStatus's OrderReference),
  FR_R, DPU_R, DPQ_R, FRU_R.
- **Reference Period Mismatch** ("Reference Period mismatch": the referenced FlexRequest is for
  another Period): FO.
- **Reference Message Expired** ("Reference message expired": the referenced FlexRequest or
  FlexOffer expired before this message arrived): FO, FOFR.
- **Reference Message Revoked** ("Reference message revoked": the referenced FlexRequest was
  superseded by a later revision, or the referenced FlexOffer was already revoked): FO, FOFR.
- **Invalid Message: ...** (the "[Other reasonable cause]" row): a FlexOfferRevocation of an
  offer already ordered (message catalog, FlexOfferRevocationResponse: "Rejection is allowed in
  case ... the offered flexibility has already been ordered"); an offer the desk cannot record
  (for example an option reference that is not an id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from shapeshifter_uftp.exceptions import (  # type: ignore[import-untyped]
    ExpirationDateTimeOutOfBoundsException,
    InvalidCongestionPointException,
    ISPConflictException,
    ISPDurationRejectedException,
    ISPsOutOfBoundsException,
    PeriodOutOfBoundsException,
    ReferenceMessageExpiredException,
    ReferenceMessageRevokedException,
    ReferencePeriodMismatchException,
    TimeZoneRejectedException,
    UnknownReferenceException,
)

from opendso.markets.uftp.endpoint import rejection
from opendso.markets.uftp.periods import duration_of, isps_in_period, period_of, same_offsets
from opendso.markets.uftp.records import DeskState

__all__ = ["check_dso_message", "check_isps", "parse_time", "requested_isps"]


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with a zone, as UFTP writes it (``Z`` or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _period(value: Any) -> date:
    return value.to_date() if hasattr(value, "to_date") else value  # type: ignore[no-any-return]


def _check_flex_header(state: DeskState, message: Any, *, congestion_point: bool = True) -> date:
    """ISP duration, time zone, congestion point and Period of a Flex* message; its Period."""
    if duration_of(message.isp_duration) != state.isp:
        raise ISPDurationRejectedException()
    period = _period(message.period)
    if not same_offsets(message.time_zone, state.market_tz, period):
        raise TimeZoneRejectedException()
    if congestion_point and message.congestion_point not in state.congestion_points:
        raise InvalidCongestionPointException()
    if period < period_of(state.clock(), state.market_tz):
        raise PeriodOutOfBoundsException()
    return period


def check_isps(isps: Iterable[Any], count: int) -> None:
    """ISPs Out Of Bounds when an ISP is outside 1..count (or Duration < 1), ISP Conflict when one repeats."""
    taken: set[int] = set()
    for element in isps:
        start, duration = int(element.start), int(element.duration or 1)
        if duration < 1 or start < 1 or start + duration - 1 > count:
            raise ISPsOutOfBoundsException()
        numbers = set(range(start, start + duration))
        if numbers & taken:
            raise ISPConflictException()
        taken |= numbers


def _check_reference(state: DeskState, reference: str | None, kind: str, sender: str) -> None:
    sent = state.sent.get(reference or "")
    if sent is None or sent != (kind, sender):
        raise UnknownReferenceException()


def _check_flex_offer(state: DeskState, message: Any) -> None:
    period = _check_flex_header(state, message)
    count = isps_in_period(period, state.market_tz, state.isp)
    for option in message.offer_options:
        check_isps(option.isps, count)
    if parse_time(message.expiration_date_time) < state.clock():
        raise ExpirationDateTimeOutOfBoundsException()
    if message.d_prognosis_message_id is not None and message.d_prognosis_message_id not in state.prognoses:
        raise UnknownReferenceException()
    if message.flex_request_message_id is None:
        return
    request = state.requests.get(message.flex_request_message_id)
    if request is None or request.aggregator != message.sender_domain:
        raise UnknownReferenceException()
    if request.period != period:
        raise ReferencePeriodMismatchException()
    if request.congestion_point != message.congestion_point:
        raise InvalidCongestionPointException()
    if request.superseded:
        raise ReferenceMessageRevokedException()
    if state.clock() > request.expires:
        raise ReferenceMessageExpiredException()
    for option in message.offer_options:
        if not option.option_reference:
            raise rejection(message, "an option has no OptionReference")


def _check_revocation(state: DeskState, message: Any) -> None:
    offer = state.offers.get(message.flex_offer_message_id)
    if offer is None or offer.aggregator != message.sender_domain:
        raise UnknownReferenceException()
    if offer.revoked:
        raise ReferenceMessageRevokedException()
    if offer.ordered:
        raise rejection(message, "the offered flexibility has already been ordered")
    if state.clock() > offer.expires:
        raise ReferenceMessageExpiredException()


def _check_settlement_response(state: DeskState, message: Any) -> None:
    _check_reference(state, message.flex_settlement_message_id, "FlexSettlement", message.sender_domain)
    settled = state.settlements[message.flex_settlement_message_id].orders
    for status in message.flex_order_settlement_statuses:
        if status.order_reference not in settled:
            raise UnknownReferenceException()


def _check_prognosis(state: DeskState, message: Any) -> None:
    period = _check_flex_header(state, message)
    check_isps(message.isps, isps_in_period(period, state.market_tz, state.isp))


def _check_metering(state: DeskState, message: Any) -> None:
    if duration_of(message.isp_duration) != state.isp:
        raise ISPDurationRejectedException()
    if not same_offsets(message.time_zone, state.market_tz, _period(message.period)):
        raise TimeZoneRejectedException()


_REFERENCES: dict[str, tuple[str, str]] = {
    "FlexOrderResponse": ("flex_order_message_id", "FlexOrder"),
    "FlexRequestResponse": ("flex_request_message_id", "FlexRequest"),
    "DsoPortfolioUpdateResponse": ("dso_portfolio_update_message_id", "DsoPortfolioUpdate"),
    "DsoPortfolioQueryResponse": ("dso_portfolio_query_message_id", "DsoPortfolioQuery"),
    "FlexReservationUpdateResponse": ("flex_reservation_update_message_id", "FlexReservationUpdate"),
}


def check_dso_message(state: DeskState, message: Any, sender_role: str) -> None:
    """Raise the library's exception for the first rejection reason that applies to ``message``.

    The caller holds the desk's lock; ``sender_role`` has been checked against the message type.
    """
    kind = type(message).__name__
    if kind == "FlexOffer":
        _check_flex_offer(state, message)
    elif kind == "FlexOfferRevocation":
        _check_revocation(state, message)
    elif kind == "FlexSettlementResponse":
        _check_settlement_response(state, message)
    elif kind == "DPrognosis":
        _check_prognosis(state, message)
    elif kind == "Metering":
        _check_metering(state, message)
    elif kind in _REFERENCES:
        attribute, referenced = _REFERENCES[kind]
        _check_reference(state, getattr(message, attribute), referenced, message.sender_domain)
        if kind == "DsoPortfolioQueryResponse" and not same_offsets(
            message.time_zone, state.market_tz, _period(message.period)
        ):
            raise TimeZoneRejectedException()


def requested_isps(isps: Sequence[Any]) -> dict[int, tuple[int, int]]:
    """ISP number -> (MinPower, MaxPower) of the Requested ISPs of a FlexRequest."""
    out: dict[int, tuple[int, int]] = {}
    for element in isps:
        if str(element.disposition) != "Requested":
            continue
        for number in range(int(element.start), int(element.start) + int(element.duration or 1)):
            out[number] = (int(element.min_power), int(element.max_power))
    return out
