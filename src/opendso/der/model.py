"""DER assets and connection requests as immutable records, and the connection request state machine.

An asset (:class:`DerAsset`) is one distributed energy resource at one connection point (a node
of the grid, by name): PV, wind, a battery, an EV charging hub, a group of heat pumps or a large
flexible load such as a data centre. It names its owner or aggregator, its capacities (export
and import in kW, storage in kWh), how it is controlled (:class:`Control`: Modbus, IEC 60870-5-104,
MQTT, OpenADR 2.0b or none, and the point or address) and its connection agreement
(:class:`Agreement`): *firm*, or *flexible* with a principle of access (last-in-first-off,
pro-rata, technical best, as the UK's ENA Active Network Management good practice and Ofgem's
access reforms name them), a curtailment cap (% of the asset's annual energy) and an export
limit (kW) that applies when the DSO curtails it (and as the fail-safe limit).

A connection request (:class:`ConnectionRequest`) moves through a strict state machine::

    received -> studied -> offered -> accepted -> connected
       |           |          |          |
       +-----------+----------+----------+----> withdrawn   (by the customer)
       +-----------+----------+---------------> rejected    (by the DSO)

``connected``, ``withdrawn`` and ``rejected`` are final. The requests that are still in the queue
(:data:`QUEUED`) are ordered by the time the DSO received them (first come, first served; the id
breaks ties), which is also the order of seniority the last-in-first-off principle uses.

Records are frozen; a change returns a new record (:meth:`ConnectionRequest.moved`). ``to_json``
and ``from_json`` are the stored and served form.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from opendso.errors import ConflictError, InputError
from opendso.text import check_text
from opendso.timeutil import parse_time

__all__ = [
    "ID_PATTERN",
    "QUEUED",
    "TRANSITIONS",
    "AccessPrinciple",
    "Agreement",
    "AgreementKind",
    "AssetKind",
    "ConnectionRequest",
    "Control",
    "ControlProtocol",
    "DerAsset",
    "RequestStatus",
    "Transition",
    "check_id",
]

#: Asset and request ids: letters, digits, ``-``, ``_``, ``.``; 1 to 64 characters.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_ID = re.compile(ID_PATTERN)
#: Largest capacity accepted (kW or kWh): 10 GW, far above any distribution connection.
_MAX_KW = 10_000_000.0


class AssetKind(StrEnum):
    """What the asset is."""

    PV = "pv"
    WIND = "wind"
    BATTERY = "battery"
    EV_HUB = "ev_hub"
    HEAT_PUMPS = "heat_pumps"
    FLEXIBLE_LOAD = "flexible_load"


class ControlProtocol(StrEnum):
    """How the DSO reaches the asset's controller (``none``: it cannot)."""

    MODBUS = "modbus"
    IEC104 = "iec104"
    MQTT = "mqtt"
    OPENADR = "openadr"
    NONE = "none"


class AgreementKind(StrEnum):
    """Firm (never curtailed for network constraints) or flexible (curtailed when the network is full)."""

    FIRM = "firm"
    FLEXIBLE = "flexible"


class AccessPrinciple(StrEnum):
    """The order in which flexible connections are curtailed.

    - ``lifo``: last in, first off: the most recently connected (latest in the queue) first;
    - ``pro_rata``: every flexible asset behind the constraint by the same share;
    - ``technical_best``: the most effective first (largest sensitivity of the constraint).
    """

    LIFO = "lifo"
    PRO_RATA = "pro_rata"
    TECHNICAL_BEST = "technical_best"


class RequestStatus(StrEnum):
    """Where a connection request stands."""

    RECEIVED = "received"
    STUDIED = "studied"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    CONNECTED = "connected"
    WITHDRAWN = "withdrawn"
    REJECTED = "rejected"


#: Allowed moves of the connection request state machine.
TRANSITIONS: Mapping[RequestStatus, frozenset[RequestStatus]] = {
    RequestStatus.RECEIVED: frozenset({RequestStatus.STUDIED, RequestStatus.WITHDRAWN, RequestStatus.REJECTED}),
    RequestStatus.STUDIED: frozenset({RequestStatus.OFFERED, RequestStatus.WITHDRAWN, RequestStatus.REJECTED}),
    RequestStatus.OFFERED: frozenset({RequestStatus.ACCEPTED, RequestStatus.WITHDRAWN, RequestStatus.REJECTED}),
    RequestStatus.ACCEPTED: frozenset({RequestStatus.CONNECTED, RequestStatus.WITHDRAWN}),
    RequestStatus.CONNECTED: frozenset(),
    RequestStatus.WITHDRAWN: frozenset(),
    RequestStatus.REJECTED: frozenset(),
}

#: The statuses of a request still in the connection queue.
QUEUED = frozenset({RequestStatus.RECEIVED, RequestStatus.STUDIED, RequestStatus.OFFERED, RequestStatus.ACCEPTED})


def check_id(what: str, value: object) -> str:
    """Return ``value`` as an id, or raise :class:`InputError` naming ``what``."""
    if not isinstance(value, str) or not _ID.match(value):
        raise InputError(f"{what}: {value!r} is not an id (letters, digits, '-', '_', '.'; at most 64)")
    return value


def _kw(what: str, value: float, *, allow_none: bool = False) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise InputError(f"{what}: {value!r} is not a number")
    if not 0.0 <= float(value) <= _MAX_KW:
        raise InputError(f"{what}: {value} is outside 0 .. {_MAX_KW:g}")
    return float(value)


def _enum[E: StrEnum](cls: type[E], what: str, value: object) -> E:
    try:
        return cls(str(value))
    except ValueError:
        raise InputError(f"{what}: {value!r} is not one of {', '.join(m.value for m in cls)}") from None


@dataclass(frozen=True, slots=True)
class Control:
    """The asset's control interface: a protocol and the point or address on it."""

    protocol: ControlProtocol = ControlProtocol.NONE
    address: str = ""

    def __post_init__(self) -> None:
        if self.protocol is ControlProtocol.NONE and self.address:
            raise InputError("control: an address is given but the protocol is 'none'")
        if self.protocol is not ControlProtocol.NONE:
            object.__setattr__(self, "address", check_text("control address", self.address, max_len=200))

    def to_json(self) -> dict[str, Any]:
        """The control interface as JSON."""
        return {"protocol": self.protocol.value, "address": self.address}


@dataclass(frozen=True, slots=True)
class Agreement:
    """A connection agreement: firm, or flexible with a principle of access, a curtailment cap and an export limit.

    ``curtailment_cap_pct`` is the most the DSO may curtail, as a share of the asset's annual
    energy; ``export_limit_kw`` the export the asset falls back to when curtailed or when it
    loses contact with the DSO (the fail-safe limit). Both are required for a flexible agreement
    and absent for a firm one.
    """

    kind: AgreementKind = AgreementKind.FIRM
    principle: AccessPrinciple | None = None
    curtailment_cap_pct: float | None = None
    export_limit_kw: float | None = None

    def __post_init__(self) -> None:
        if self.kind is AgreementKind.FIRM:
            if self.principle is not None or self.curtailment_cap_pct is not None or self.export_limit_kw is not None:
                raise InputError(
                    "agreement: a firm agreement has no principle of access, curtailment cap or export limit"
                )
            return
        if self.principle is None:
            raise InputError("agreement: a flexible agreement needs a principle of access")
        if self.curtailment_cap_pct is None or self.export_limit_kw is None:
            raise InputError("agreement: a flexible agreement needs a curtailment cap and an export limit")
        cap = _kw("curtailment cap", self.curtailment_cap_pct)
        if cap > 100.0:
            raise InputError(f"curtailment cap: {cap} % is more than 100 %")
        _kw("export limit", self.export_limit_kw)

    @property
    def flexible(self) -> bool:
        """True for a flexible agreement."""
        return self.kind is AgreementKind.FLEXIBLE

    def to_json(self) -> dict[str, Any]:
        """The agreement as JSON."""
        return {
            "kind": self.kind.value,
            "principle": self.principle.value if self.principle is not None else None,
            "curtailment_cap_pct": self.curtailment_cap_pct,
            "export_limit_kw": self.export_limit_kw,
        }


@dataclass(frozen=True, slots=True)
class DerAsset:
    """One DER asset at one connection point (a grid node, by name)."""

    id: str
    name: str
    kind: AssetKind
    node: str
    owner: str
    aggregator: str = ""
    export_kw: float = 0.0
    import_kw: float = 0.0
    storage_kwh: float = 0.0
    control: Control = field(default_factory=Control)
    agreement: Agreement = field(default_factory=Agreement)

    def __post_init__(self) -> None:
        check_id("asset id", self.id)
        object.__setattr__(self, "name", check_text("name", self.name, max_len=200))
        object.__setattr__(self, "node", check_text("node", self.node, max_len=200))
        object.__setattr__(self, "owner", check_text("owner", self.owner, max_len=200))
        if self.aggregator:
            object.__setattr__(self, "aggregator", check_text("aggregator", self.aggregator, max_len=200))
        export_kw = _kw("export_kw", self.export_kw)
        import_kw = _kw("import_kw", self.import_kw)
        storage = _kw("storage_kwh", self.storage_kwh)
        if export_kw == 0.0 and import_kw == 0.0:
            raise InputError("capacity: export_kw and import_kw are both 0")
        if self.kind is AssetKind.BATTERY and storage == 0.0:
            raise InputError("storage_kwh: a battery needs a storage capacity")
        if self.kind not in (AssetKind.BATTERY, AssetKind.EV_HUB) and storage != 0.0:
            raise InputError(f"storage_kwh: a {self.kind.value} asset stores no energy (only battery and ev_hub)")
        if self.kind in (AssetKind.PV, AssetKind.WIND) and export_kw == 0.0:
            raise InputError(f"export_kw: a {self.kind.value} asset needs an export capacity")
        limit = self.agreement.export_limit_kw
        if limit is not None and limit > export_kw:
            raise InputError(f"export limit: {limit} kW is above the asset's export capacity of {export_kw} kW")

    def to_json(self) -> dict[str, Any]:
        """The asset as JSON (the stored and served form)."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind.value,
            "node": self.node,
            "owner": self.owner,
            "aggregator": self.aggregator,
            "export_kw": self.export_kw,
            "import_kw": self.import_kw,
            "storage_kwh": self.storage_kwh,
            "control": self.control.to_json(),
            "agreement": self.agreement.to_json(),
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> DerAsset:
        """An asset from its JSON; malformed JSON raises :class:`InputError`."""
        try:
            control = body.get("control") or {}
            agreement = body.get("agreement") or {}
            principle = agreement.get("principle")
            return cls(
                id=body["id"],
                name=body["name"],
                kind=_enum(AssetKind, "kind", body["kind"]),
                node=body["node"],
                owner=body["owner"],
                aggregator=body.get("aggregator") or "",
                export_kw=body.get("export_kw", 0.0),
                import_kw=body.get("import_kw", 0.0),
                storage_kwh=body.get("storage_kwh", 0.0),
                control=Control(
                    _enum(ControlProtocol, "control protocol", control.get("protocol", "none")),
                    control.get("address") or "",
                ),
                agreement=Agreement(
                    _enum(AgreementKind, "agreement", agreement.get("kind", "firm")),
                    _enum(AccessPrinciple, "principle of access", principle) if principle is not None else None,
                    agreement.get("curtailment_cap_pct"),
                    agreement.get("export_limit_kw"),
                ),
            )
        except (KeyError, AttributeError, TypeError) as exc:
            raise InputError(f"asset: malformed ({exc})") from None


@dataclass(frozen=True, slots=True)
class Transition:
    """One move of a connection request: from, to, when, who and why."""

    from_status: RequestStatus | None
    to_status: RequestStatus
    at: datetime
    actor: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """The move as JSON."""
        return {
            "from": self.from_status.value if self.from_status is not None else None,
            "to": self.to_status.value,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class ConnectionRequest:
    """A request to connect one asset; ``history`` holds every move, the first being its receipt."""

    id: str
    asset_id: str
    received_at: datetime
    status: RequestStatus = RequestStatus.RECEIVED
    history: tuple[Transition, ...] = ()

    def __post_init__(self) -> None:
        check_id("request id", self.id)
        check_id("asset id", self.asset_id)
        if self.received_at.tzinfo is None:
            raise InputError("received_at: a time zone is required")

    @property
    def queued(self) -> bool:
        """True while the request is in the connection queue (not connected, withdrawn or rejected)."""
        return self.status in QUEUED

    def queue_key(self) -> tuple[datetime, str]:
        """The request's place in the queue: received time, then id."""
        return (self.received_at, self.id)

    def moved(self, to: RequestStatus, *, at: datetime, actor: str, note: str = "") -> ConnectionRequest:
        """The request moved to ``to``; a move the state machine does not allow raises :class:`ConflictError`."""
        if to not in TRANSITIONS[self.status]:
            allowed = ", ".join(sorted(s.value for s in TRANSITIONS[self.status])) or "none: it is final"
            raise ConflictError(
                f"request {self.id} is {self.status.value}: it cannot become {to.value} (allowed: {allowed})"
            )
        step = Transition(self.status, to, at, actor, check_text("note", note, max_len=1000) if note else "")
        return replace(self, status=to, history=(*self.history, step))

    def to_json(self) -> dict[str, Any]:
        """The request as JSON (the stored and served form)."""
        return {
            "id": self.id,
            "asset_id": self.asset_id,
            "received_at": self.received_at.isoformat(),
            "status": self.status.value,
            "history": [t.to_json() for t in self.history],
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ConnectionRequest:
        """A request from its JSON; malformed JSON raises :class:`InputError`."""
        try:
            history = tuple(
                Transition(
                    _enum(RequestStatus, "from", t["from"]) if t.get("from") is not None else None,
                    _enum(RequestStatus, "to", t["to"]),
                    parse_time(t["at"], "at"),
                    str(t["actor"]),
                    str(t.get("note") or ""),
                )
                for t in body.get("history", ())
            )
            return cls(
                id=body["id"],
                asset_id=body["asset_id"],
                received_at=parse_time(body["received_at"], "received_at"),
                status=_enum(RequestStatus, "status", body["status"]),
                history=history,
            )
        except (KeyError, AttributeError, TypeError) as exc:
            raise InputError(f"request: malformed ({exc})") from None
