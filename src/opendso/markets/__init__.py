"""Using flexibility: procurement over UFTP, operating envelopes, baselines and settlement, local trading (issue 12).

``markets`` sits above ``planning`` and below ``service``: it buys against the congestion
forecast, allocates operating envelopes from it, verifies delivery against baselines, and
dispatches through the DER registry and the set-point arbiter (sources ``dr`` and ``market``).
:mod:`opendso.markets.model` holds the records every part trades in (one sign convention: UFTP's,
power is consumption).
"""

from __future__ import annotations

from opendso.markets.model import ISP, CongestionPoint, FlexNeed, FlexOffer, FlexOption

__all__ = [  # noqa: RUF022 - plainly sorted, as tests/test_exported_members.py pins every package's surface
    "CongestionPoint",
    "FlexNeed",
    "FlexOffer",
    "FlexOption",
    "ISP",
]
