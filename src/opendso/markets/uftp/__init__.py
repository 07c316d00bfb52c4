"""Flexibility procurement over UFTP (Shapeshifter 3.x), the DSO role, with a CRO and a simulated aggregator.

Built on shapeshifter-uftp 3.0.0rc1 (pinned exactly: its services are WSGI applications, with no
FastAPI to hold back). The library signs and checks messages (NaCl Ed25519), parses and writes
them, and runs the services; OpenDSO adds the participants' directory in place of DNS
(:mod:`~opendso.markets.uftp.directory`), the transport gate in front of every endpoint
(:mod:`~opendso.markets.uftp.endpoint`), the DSO's checks of what it receives
(:mod:`~opendso.markets.uftp.validation`), the flexibility desk (:mod:`~opendso.markets.uftp.dso`),
a Common Reference Operator (:mod:`~opendso.markets.uftp.cro`) and a simulated aggregator
(:mod:`~opendso.markets.uftp.aggregator`).
"""

from __future__ import annotations

from opendso.markets.uftp.aggregator import PortfolioEntry, SimulatedAggregator
from opendso.markets.uftp.cro import CommonReferenceOperator, connection_address
from opendso.markets.uftp.directory import Directory, Keypair, Participant, new_keypair
from opendso.markets.uftp.dso import FlexProcurement, Selector
from opendso.markets.uftp.endpoint import Gate, LoggedMessage, MessageLog
from opendso.markets.uftp.records import ReceivedOffer, SentOrder, SentRequest, SentSettlement

__all__ = [
    "CommonReferenceOperator",
    "Directory",
    "FlexProcurement",
    "Gate",
    "Keypair",
    "LoggedMessage",
    "MessageLog",
    "Participant",
    "PortfolioEntry",
    "ReceivedOffer",
    "Selector",
    "SentOrder",
    "SentRequest",
    "SentSettlement",
    "SimulatedAggregator",
    "connection_address",
    "new_keypair",
]
