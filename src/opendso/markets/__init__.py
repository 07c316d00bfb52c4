"""Using flexibility: procurement over UFTP, operating envelopes, baselines and settlement, local trading (issue 12).

``markets`` sits above ``planning`` and below ``service``: it buys against the congestion
forecast, allocates operating envelopes from it, verifies delivery against baselines, and
dispatches through the DER registry and the set-point arbiter (sources ``dr`` and ``market``).
:mod:`opendso.markets.model` holds the records every part trades in (one sign convention: UFTP's,
power is consumption).
"""

from __future__ import annotations

from opendso.markets.baselines import Adjustment, Baseline, BaselineMethod, BaselineSpec, compute_baseline
from opendso.markets.desk import FlexibilityDesk, FlexPlan, FlexRound, needs_from_forecast
from opendso.markets.envelopes import (
    AllocationRule,
    ConnectionPoint,
    Envelope,
    EnvelopeAllocation,
    EnvelopeBreach,
    PointMeasurement,
    Portfolio,
    allocate_envelopes,
    check_dispatch,
    connection_points,
    portfolios,
)
from opendso.markets.local import LocalMarket, MarketResult, NetworkTariff, Order
from opendso.markets.merit import Selection, congestion_points, select_offers
from opendso.markets.model import ISP, CongestionPoint, FlexNeed, FlexOffer, FlexOption
from opendso.markets.settlement import FlexContract, OrderDelivery, Settlement, settle
from opendso.markets.tso import TsoInterface, TsoReport, TsoRequest, grid_supply_points
from opendso.markets.verification import Verification, verify_delivery

__all__ = [  # noqa: RUF022 - plainly sorted, as tests/test_exported_members.py pins every package's surface
    "Adjustment",
    "AllocationRule",
    "Baseline",
    "BaselineMethod",
    "BaselineSpec",
    "CongestionPoint",
    "ConnectionPoint",
    "Envelope",
    "EnvelopeAllocation",
    "EnvelopeBreach",
    "FlexContract",
    "FlexNeed",
    "FlexOffer",
    "FlexOption",
    "FlexPlan",
    "FlexRound",
    "FlexibilityDesk",
    "ISP",
    "LocalMarket",
    "MarketResult",
    "NetworkTariff",
    "Order",
    "OrderDelivery",
    "PointMeasurement",
    "Portfolio",
    "Selection",
    "Settlement",
    "TsoInterface",
    "TsoReport",
    "TsoRequest",
    "Verification",
    "allocate_envelopes",
    "check_dispatch",
    "compute_baseline",
    "congestion_points",
    "connection_points",
    "grid_supply_points",
    "needs_from_forecast",
    "portfolios",
    "select_offers",
    "settle",
    "verify_delivery",
]
