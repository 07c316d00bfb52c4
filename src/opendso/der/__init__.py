"""The DER registry and connection queue: assets, agreements, connection requests (issue 11 item 3).

``der`` sits above ``operations`` and below ``service`` (beside ``planning``): it reads the grid
for connection points and feeders and keeps its records in the store. :mod:`opendso.der.model`
holds the records and the request state machine, :mod:`opendso.der.registry` the domain service
(checks, queue order, the read API of hosting capacity and active network management) and
:mod:`opendso.der.csv` the import file.
"""

from __future__ import annotations

from opendso.der.csv import DerTable, read_der_csv
from opendso.der.model import (
    AccessPrinciple,
    Agreement,
    AgreementKind,
    AssetKind,
    ConnectionRequest,
    Control,
    ControlProtocol,
    DerAsset,
    RequestStatus,
    Transition,
)
from opendso.der.registry import DerRegistry, FlexibleAsset, ImportSummary, QueueEntry

__all__ = [
    "AccessPrinciple",
    "Agreement",
    "AgreementKind",
    "AssetKind",
    "ConnectionRequest",
    "Control",
    "ControlProtocol",
    "DerAsset",
    "DerRegistry",
    "DerTable",
    "FlexibleAsset",
    "ImportSummary",
    "QueueEntry",
    "RequestStatus",
    "Transition",
    "read_der_csv",
]
