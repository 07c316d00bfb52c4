"""The DER registry: assets and the connection queue, checked against the grid, stored, logged and audited.

:class:`DerRegistry` is the one way to read and change the registry. Every change is checked
first (the connection point is a node of the grid; one live request per asset; the request state
machine of :mod:`opendso.der.model`; the version the caller read, else
:class:`~opendso.errors.ConflictError`), then stored (:class:`~opendso.store.der.DerStore`),
logged (event ``der.<what>``) and audited with the actor and the client address.

The read API other parts build on (hosting capacity per request, active network management, the
set-point arbiter):

- :meth:`DerRegistry.queue`: the requests still in the queue, by received time, with positions;
- :meth:`DerRegistry.ahead_of`: the queued requests ahead of one request;
- :meth:`DerRegistry.assets_at`: the assets connected at one node;
- :meth:`DerRegistry.flexible_behind`: the flexible assets at a node and downstream of it (on the
  grid's present switch states), in order of seniority (the received time of their request);
- :meth:`DerRegistry.curtailment_order`: those assets grouped in the order a principle of access
  curtails them (last-in-first-off: newest first, one at a time; pro-rata: all together;
  technical best: the largest sensitivity first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from opendso.der.model import AccessPrinciple, ConnectionRequest, DerAsset, RequestStatus, Transition, check_id
from opendso.errors import ConflictError, InputError
from opendso.grid.model import Grid
from opendso.grid.topology import analyse_topology
from opendso.store.der import DerStore

__all__ = ["AuditSink", "DerRegistry", "EventSink", "FlexibleAsset", "ImportSummary", "QueueEntry"]


class AuditSink(Protocol):
    """Where changes are audited (:meth:`opendso.service.audit.AuditTrail.append` fits)."""

    def __call__(
        self,
        action: str,
        *,
        actor: str,
        result: str = ...,
        element: str | None = ...,
        source_ip: str | None = ...,
        reason: str | None = ...,
        details: Mapping[str, Any] | None = ...,
    ) -> object: ...


class EventSink(Protocol):
    """Where changes are logged (:meth:`opendso.store.events.EventLog.append` fits)."""

    def __call__(
        self, kind: str, *, actor: str, element: str | None = ..., payload: Mapping[str, Any] | None = ...
    ) -> object: ...


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A request in the connection queue: its 1-based position, the request, its version and its asset."""

    position: int
    request: ConnectionRequest
    version: int
    asset: DerAsset

    def to_json(self) -> dict[str, Any]:
        """The entry as JSON: the request with ``position``, ``version``, ``node`` and the asset."""
        return {
            **self.request.to_json(),
            "position": self.position,
            "version": self.version,
            "node": self.asset.node,
            "asset": self.asset.to_json(),
        }


@dataclass(frozen=True, slots=True)
class FlexibleAsset:
    """A flexible asset behind a node, with its seniority (received time of its request; None without one)."""

    asset: DerAsset
    received_at: datetime | None

    @property
    def principle(self) -> AccessPrinciple:
        """The asset's principle of access."""
        assert self.asset.agreement.principle is not None  # a flexible agreement always has one
        return self.asset.agreement.principle


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What an import stored."""

    assets: int
    requests: int


class DerRegistry:
    """DER assets and connection requests on one grid (the connection points are its node names).

    Without a grid (``grid=None``) the registry can be read but not changed: a change checks its
    connection point against the grid.
    """

    def __init__(
        self,
        store: DerStore,
        grid: Grid | None,
        *,
        events: EventSink | None = None,
        audit: AuditSink | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.grid = grid
        self.events = events
        self.audit = audit
        self.clock = clock or (lambda: datetime.now(UTC))

    # -- the grid ---------------------------------------------------------------------------------------
    @cached_property
    def _node_rows(self) -> dict[str, int]:
        if self.grid is None:
            return {}
        return {str(name): row for row, name in enumerate(self.grid.names_of("node").tolist())}

    @cached_property
    def _topology_arrays(self) -> tuple[np.ndarray, dict[int, str], np.ndarray]:
        if self.grid is None:
            empty = np.zeros(0, dtype=np.int64)
            return empty, {}, empty
        topology = analyse_topology(self.grid)
        names = {
            int(i): str(n) for i, n in zip(topology.feeders.id.tolist(), topology.feeders.name.tolist(), strict=True)
        }
        return topology.node_feeder, names, topology.pred_node

    def check_node(self, node: str) -> str:
        """Return ``node`` if it is a node of the grid; else raise :class:`InputError` naming it."""
        if self.grid is None:
            raise InputError("the registry has no grid: connection points cannot be checked")
        if node not in self._node_rows:
            raise InputError(f"connection point {node!r} is not a node of the grid")
        return node

    def feeder_of(self, node: str) -> str | None:
        """The name of the feeder the node is on (present switch states), None for a busbar or unknown node."""
        row = self._node_rows.get(node)
        if row is None:
            return None
        node_feeder, names, _ = self._topology_arrays
        return names.get(int(node_feeder[row]))

    def nodes_behind(self, node: str) -> frozenset[str]:
        """The node and every node supplied through it from the sources (present switch states)."""
        target = self._node_rows[self.check_node(node)]
        _, _, pred = self._topology_arrays
        behind = np.arange(pred.size) == target
        cursor = pred.copy()
        while np.any(cursor >= 0):  # walk every node's path to its source one step at a time
            behind |= cursor == target
            cursor = np.where(cursor >= 0, pred[np.maximum(cursor, 0)], -1)
        assert self.grid is not None  # check_node refused otherwise
        names = self.grid.names_of("node")
        return frozenset(str(n) for n in names[behind].tolist())

    # -- reading ----------------------------------------------------------------------------------------
    def asset(self, asset_id: str) -> tuple[DerAsset, int]:
        """An asset and its version; unknown: :class:`NotFoundError`."""
        record = self.store.asset(asset_id)
        return DerAsset.from_json(record.body), record.version

    def assets(
        self, *, kind: str | None = None, node: str | None = None, feeder: str | None = None
    ) -> list[tuple[DerAsset, int]]:
        """Assets by id with their versions, optionally of one kind, at one node or on one feeder."""
        out = [(DerAsset.from_json(r.body), r.version) for r in self.store.assets(kind=kind, node=node)]
        if feeder is not None:
            out = [(a, v) for a, v in out if self.feeder_of(a.node) == feeder]
        return out

    def request(self, request_id: str) -> tuple[ConnectionRequest, int]:
        """A request and its version; unknown: :class:`NotFoundError`."""
        record = self.store.request(request_id)
        return ConnectionRequest.from_json(record.body), record.version

    def requests(self, *, statuses: Sequence[RequestStatus] = ()) -> list[tuple[ConnectionRequest, int]]:
        """Requests in queue order (received time, then id) with their versions."""
        records = self.store.requests(statuses=[s.value for s in statuses])
        return [(ConnectionRequest.from_json(r.body), r.version) for r in records]

    def queue(self) -> list[QueueEntry]:
        """The requests still in the queue (received .. accepted), first come first, with positions from 1."""
        queued = self.requests(
            statuses=(RequestStatus.RECEIVED, RequestStatus.STUDIED, RequestStatus.OFFERED, RequestStatus.ACCEPTED)
        )
        assets = {a.id: a for a, _ in self.assets()}
        return [
            QueueEntry(position, request, version, assets[request.asset_id])
            for position, (request, version) in enumerate(queued, start=1)
        ]

    def ahead_of(self, request_id: str) -> list[QueueEntry]:
        """The queued requests ahead of ``request_id`` (received earlier), in queue order.

        A request no longer in the queue (connected, withdrawn, rejected) has nothing ahead of it
        in the queue: :class:`ConflictError`.
        """
        request, _ = self.request(request_id)
        if not request.queued:
            raise ConflictError(f"request {request_id} is {request.status.value}: it is not in the queue")
        key = request.queue_key()
        return [e for e in self.queue() if e.request.queue_key() < key]

    def assets_at(self, node: str, *, connected_only: bool = True) -> list[DerAsset]:
        """The assets at one node; by default only those connected (a connected request, or none at all)."""
        assets = [a for a, _ in self.assets(node=node)]
        if not connected_only:
            return assets
        pending = self._pending_asset_ids()
        return [a for a in assets if a.id not in pending]

    def flexible_behind(self, node: str, *, connected_only: bool = True) -> list[FlexibleAsset]:
        """The flexible assets at ``node`` and downstream of it, most senior first (earliest request).

        Assets without a request (registered as existing) are the most senior, by id; an asset
        whose request is still in the queue is left out unless ``connected_only`` is False.
        """
        behind = self.nodes_behind(node)
        received: dict[str, datetime] = {}
        for request, _ in self.requests():
            if request.status not in (RequestStatus.WITHDRAWN, RequestStatus.REJECTED):
                received.setdefault(request.asset_id, request.received_at)
        pending = self._pending_asset_ids() if connected_only else set()
        found = [
            FlexibleAsset(a, received.get(a.id))
            for a, _ in self.assets()
            if a.node in behind and a.agreement.flexible and a.id not in pending
        ]
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(found, key=lambda f: (f.received_at or epoch, f.asset.id))

    def curtailment_order(
        self,
        node: str,
        principle: AccessPrinciple,
        *,
        sensitivity: Mapping[str, float] | None = None,
    ) -> list[list[FlexibleAsset]]:
        """The flexible assets behind ``node`` of ``principle``, grouped in the order they are curtailed.

        Last-in-first-off: the newest first, one asset per group. Pro-rata: one group, curtailed by
        the same share. Technical best: the largest ``sensitivity`` (effect of 1 kW of the asset's
        export on the constraint, by asset id, e.g. from power-grid-model) first; it is required.
        """
        assets = [f for f in self.flexible_behind(node) if f.principle is principle]
        if principle is AccessPrinciple.LIFO:
            return [[f] for f in reversed(assets)]
        if principle is AccessPrinciple.PRO_RATA:
            return [assets] if assets else []
        if sensitivity is None:
            raise InputError("technical best curtails by sensitivity: give the sensitivity of every asset")
        missing = [f.asset.id for f in assets if f.asset.id not in sensitivity]
        if missing:
            raise InputError(f"no sensitivity for asset(s) {', '.join(missing)}")
        return [[f] for f in sorted(assets, key=lambda f: (-abs(sensitivity[f.asset.id]), f.asset.id))]

    def _pending_asset_ids(self) -> set[str]:
        return {r.asset_id for r, _ in self.requests() if r.queued}

    # -- changing ---------------------------------------------------------------------------------------
    def add_asset(self, asset: DerAsset, *, actor: str, source_ip: str | None = None) -> tuple[DerAsset, int]:
        """Register a new asset (its node must be a node of the grid); return it at version 1."""
        self.check_node(asset.node)
        self.store.add_many([asset.to_json()], [], self.clock())
        self._log("asset_added", asset.id, actor, source_ip, {"node": asset.node, "kind": asset.kind.value})
        return asset, 1

    def update_asset(
        self, asset_id: str, version: int, asset: DerAsset, *, actor: str, source_ip: str | None = None
    ) -> tuple[DerAsset, int]:
        """Replace an asset's data if it is still at ``version``; the id cannot change."""
        if asset.id != asset_id:
            raise InputError(f"asset {asset_id}: the body names asset {asset.id}")
        self.check_node(asset.node)
        record = self.store.replace_asset(asset_id, version, asset.to_json(), self.clock())
        self._log("asset_updated", asset.id, actor, source_ip, {"node": asset.node, "kind": asset.kind.value})
        return asset, record.version

    def submit(
        self,
        request_id: str,
        asset_id: str,
        *,
        received_at: datetime | None = None,
        actor: str,
        source_ip: str | None = None,
    ) -> tuple[ConnectionRequest, int]:
        """Receive a connection request for a registered asset; it joins the end of the queue by its time."""
        check_id("request id", request_id)
        self.asset(asset_id)
        live = [r for r, _ in self.requests() if r.asset_id == asset_id and r.status in _LIVE]
        if live:
            raise ConflictError(f"asset {asset_id} has request {live[0].id} ({live[0].status.value}) already")
        at = (received_at or self.clock()).astimezone(UTC)
        request = ConnectionRequest(
            request_id, asset_id, at, history=(Transition(None, RequestStatus.RECEIVED, at, actor),)
        )
        self.store.add_many([], [request.to_json()], self.clock())
        self._log("request_received", request_id, actor, source_ip, {"asset": asset_id})
        return request, 1

    def move(
        self,
        request_id: str,
        version: int,
        to: RequestStatus,
        *,
        actor: str,
        note: str = "",
        source_ip: str | None = None,
    ) -> tuple[ConnectionRequest, int]:
        """Move a request along the state machine if it is still at ``version``."""
        request, current = self.request(request_id)
        if current != version:
            raise ConflictError(
                f"request {request_id} was changed by someone else (version {current}, not {version}): reload it"
            )
        moved = request.moved(to, at=self.clock(), actor=actor, note=note)
        record = self.store.replace_request(request_id, version, moved.to_json(), self.clock())
        self._log(
            f"request_{to.value}",
            request_id,
            actor,
            source_ip,
            {"asset": request.asset_id, "from": request.status.value, "to": to.value},
            reason=note or None,
        )
        return moved, record.version

    def import_records(
        self,
        assets: Sequence[DerAsset],
        requests: Sequence[ConnectionRequest],
        *,
        actor: str,
        source: str,
        source_ip: str | None = None,
    ) -> ImportSummary:
        """Store assets and requests read from a file, all or nothing (ids stored before: :class:`ConflictError`)."""
        for asset in assets:
            self.check_node(asset.node)
        self.store.add_many([a.to_json() for a in assets], [r.to_json() for r in requests], self.clock())
        summary = ImportSummary(len(assets), len(requests))
        self._log("import", source, actor, source_ip, {"assets": summary.assets, "requests": summary.requests})
        return summary

    def _log(
        self,
        what: str,
        element: str,
        actor: str,
        source_ip: str | None,
        payload: dict[str, Any],
        *,
        reason: str | None = None,
    ) -> None:
        if self.events is not None:
            self.events(f"der.{what}", actor=actor, element=element, payload=payload)
        if self.audit is not None:
            self.audit(f"der.{what}", actor=actor, element=element, source_ip=source_ip, reason=reason, details=payload)


#: The statuses of a request that still stands for its asset (queued or connected).
_LIVE = frozenset(
    {
        RequestStatus.RECEIVED,
        RequestStatus.STUDIED,
        RequestStatus.OFFERED,
        RequestStatus.ACCEPTED,
        RequestStatus.CONNECTED,
    }
)
