"""The flexibility desk's records of its UFTP conversations: requests sent, offers received, orders, settlements.

Plain mutable records kept by :class:`~opendso.markets.uftp.dso.FlexProcurement` under its lock;
:class:`DeskState` groups them so the checks of :mod:`opendso.markets.uftp.validation` read one object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from opendso.markets.model import ISP, CongestionPoint, FlexOffer

__all__ = ["DeskState", "ReceivedOffer", "SentOrder", "SentRequest", "SentSettlement"]


@dataclass
class SentRequest:
    """A FlexRequest sent to one aggregator. ``requested_w``: ISP number -> the asked change (UFTP sign)."""

    message_id: str
    conversation_id: str
    aggregator: str
    congestion_point: str
    period: date
    revision: int
    expires: datetime
    origin: datetime
    requested_w: dict[int, float]
    superseded: bool = False
    answer: str | None = None
    answer_reason: str | None = None


@dataclass
class ReceivedOffer:
    """A FlexOffer received and accepted: the UFTP message and its :class:`FlexOffer` record."""

    message_id: str
    aggregator: str
    congestion_point: str
    period: date
    expires: datetime
    request_id: str | None
    message: Any
    offer: FlexOffer
    revoked: bool = False
    ordered: bool = False


@dataclass
class SentOrder:
    """A FlexOrder sent; ``status`` ``sent``, then ``accepted`` or ``rejected`` from its FlexOrderResponse."""

    message_id: str
    order_reference: str
    aggregator: str
    offer_id: str
    option_reference: str
    congestion_point: str
    period: date
    price: float
    currency: str
    status: str = "sent"
    reason: str | None = None


@dataclass
class SentSettlement:
    """A FlexSettlement sent: its response's result and each order's disposition (Accepted/Disputed, reason)."""

    message_id: str
    aggregator: str
    period_start: date
    period_end: date
    orders: tuple[str, ...]
    status: str = "sent"
    reason: str | None = None
    dispositions: dict[str, tuple[str, str | None]] = field(default_factory=dict)


@dataclass
class DeskState:
    """Everything the DSO's checks need: the market's conventions, the clock and the records."""

    market_tz: ZoneInfo
    clock: Callable[[], datetime]
    isp: timedelta = ISP
    congestion_points: dict[str, CongestionPoint] = field(default_factory=dict)
    #: every message the DSO sent: MessageID -> (message type name, recipient domain)
    sent: dict[str, tuple[str, str]] = field(default_factory=dict)
    requests: dict[str, SentRequest] = field(default_factory=dict)
    offers: dict[str, ReceivedOffer] = field(default_factory=dict)
    orders: dict[str, SentOrder] = field(default_factory=dict)
    settlements: dict[str, SentSettlement] = field(default_factory=dict)
    prognoses: dict[str, Any] = field(default_factory=dict)
    #: congestion point -> {connection entity address: AGR domain or None}, from the CRO's answers
    portfolio: dict[str, dict[str, str | None]] = field(default_factory=dict)
