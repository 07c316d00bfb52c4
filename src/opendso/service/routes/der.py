"""The DER registry and connection queue: read by everyone, kept by engineers.

=========================================  ==========  ==============================================
route                                      permission  what it does
=========================================  ==========  ==============================================
``GET /api/der/assets``                    view        assets (filter: ``kind``, ``node``, ``feeder``)
``GET /api/der/assets/{id}``               view        one asset, its feeder and its requests
``POST /api/der/assets``                   configure   register an asset at a node of the grid
``PUT /api/der/assets/{id}``               configure   replace an asset's data (``version``)
``GET /api/der/requests``                  view        every request in queue order (``status``)
``GET /api/der/queue``                     view        the queue: requests received .. accepted, with
                                                       positions
``GET /api/der/requests/{id}/ahead``       view        the queued requests ahead of one request
``GET /api/der/requests/{id}/study``       view        firm capacity and curtailment per principle of
                                                       access (``steps``: first N profile steps)
``POST /api/der/requests``                 configure   receive a connection request for an asset
``POST /api/der/requests/{id}/move``       configure   move a request along its state machine
=========================================  ==========  ==============================================

Every change names the ``version`` the caller read (409 when someone changed it since), is
checked by :class:`~opendso.der.registry.DerRegistry` (a connection point that is not a node of
the grid is 400; a move the state machine does not allow is 409), logged (``der.<what>``) and
audited with the actor and the client address.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status

from opendso.der import (
    AccessPrinciple,
    Agreement,
    AgreementKind,
    AssetKind,
    ConnectionRequest,
    Control,
    ControlProtocol,
    DerAsset,
    DerRegistry,
    QueueEntry,
    RequestStatus,
)
from opendso.der.studies import connection_study
from opendso.service import schemas
from opendso.service.routes.deps import ConfigureSession, RoomDep, ViewSession, client_ip
from opendso.store.der import DerStore

__all__ = ["router"]

router = APIRouter(tags=["der"])

_BUILD = threading.Lock()


def _registry(request: Request, room: RoomDep) -> DerRegistry:
    state = request.app.state
    with _BUILD:
        held: DerRegistry | None = getattr(state, "der", None)
        if held is None or held.grid is not room.grid:  # the feeders follow the switch states
            held = state.der = DerRegistry(
                DerStore(room.historian.engine), room.grid, events=room.historian.events.append, audit=room.audit.append
            )
    return held


RegistryDep = Annotated[DerRegistry, Depends(_registry)]

_KIND = "^(pv|wind|battery|ev_hub|heat_pumps|flexible_load)$"
_STATUS = "^(received|studied|offered|accepted|connected|withdrawn|rejected)$"


def _asset(body: schemas.DerAssetBody) -> DerAsset:
    principle = body.agreement.principle
    return DerAsset(
        id=body.id,
        name=body.name,
        kind=AssetKind(body.kind),
        node=body.node,
        owner=body.owner,
        aggregator=body.aggregator,
        export_kw=body.export_kw,
        import_kw=body.import_kw,
        storage_kwh=body.storage_kwh,
        control=Control(ControlProtocol(body.control.protocol), body.control.address),
        agreement=Agreement(
            AgreementKind(body.agreement.kind),
            AccessPrinciple(principle) if principle is not None else None,
            body.agreement.curtailment_cap_pct,
            body.agreement.export_limit_kw,
        ),
    )


def _asset_out(registry: DerRegistry, asset: DerAsset, version: int) -> dict[str, Any]:
    return {**asset.to_json(), "version": version, "feeder": registry.feeder_of(asset.node)}


def _request_out(request: ConnectionRequest, version: int, position: int | None) -> dict[str, Any]:
    return {**request.to_json(), "version": version, "position": position}


def _entry_out(registry: DerRegistry, entry: QueueEntry) -> dict[str, Any]:
    return {**entry.to_json(), "feeder": registry.feeder_of(entry.asset.node)}


# -- reading -----------------------------------------------------------------------------------------------
@router.get("/api/der/assets")
def list_assets(
    _: ViewSession,
    registry: RegistryDep,
    kind: Annotated[str | None, Query(pattern=_KIND)] = None,
    node: Annotated[str | None, Query(max_length=200)] = None,
    feeder: Annotated[str | None, Query(max_length=200)] = None,
) -> list[dict[str, Any]]:
    """The assets by id, each with its version and feeder (optionally of one kind, node or feeder)."""
    return [_asset_out(registry, a, v) for a, v in registry.assets(kind=kind, node=node, feeder=feeder)]


@router.get("/api/der/assets/{asset_id}")
def get_asset(asset_id: str, _: ViewSession, registry: RegistryDep) -> dict[str, Any]:
    """One asset with its feeder and its connection requests; 404 when unknown."""
    asset, version = registry.asset(asset_id)
    positions = {e.request.id: e.position for e in registry.queue()}
    requests = [_request_out(r, v, positions.get(r.id)) for r, v in registry.requests() if r.asset_id == asset_id]
    return {**_asset_out(registry, asset, version), "requests": requests}


@router.get("/api/der/requests")
def list_requests(
    _: ViewSession,
    registry: RegistryDep,
    status_: Annotated[str | None, Query(alias="status", pattern=_STATUS)] = None,
) -> list[dict[str, Any]]:
    """Every request in queue order (received time, then id); ``position`` only for those still queued."""
    positions = {e.request.id: e.position for e in registry.queue()}
    statuses = (RequestStatus(status_),) if status_ is not None else ()
    return [_request_out(r, v, positions.get(r.id)) for r, v in registry.requests(statuses=statuses)]


@router.get("/api/der/queue")
def queue(_: ViewSession, registry: RegistryDep) -> list[dict[str, Any]]:
    """The connection queue: requests received .. accepted, first come first, with their assets and feeders."""
    return [_entry_out(registry, e) for e in registry.queue()]


@router.get("/api/der/requests/{request_id}/ahead")
def ahead(request_id: str, _: ViewSession, registry: RegistryDep) -> list[dict[str, Any]]:
    """The queued requests ahead of one request; 409 for a request no longer queued."""
    return [_entry_out(registry, e) for e in registry.ahead_of(request_id)]


@router.get("/api/der/requests/{request_id}/study")
def study(
    request_id: str,
    _: ViewSession,
    registry: RegistryDep,
    steps: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> dict[str, Any]:
    """The connection study of one request (:mod:`opendso.der.studies`); 404 unknown, 409 no longer queued."""
    return connection_study(registry, request_id, steps=steps).to_dict()


# -- engineering -----------------------------------------------------------------------------------------
@router.post("/api/der/assets", status_code=status.HTTP_201_CREATED)
def create_asset(
    body: schemas.DerAssetBody, session: ConfigureSession, request: Request, registry: RegistryDep
) -> dict[str, Any]:
    """Register an asset (engineer role); an id in use is 409, a node not in the grid 400."""
    asset, version = registry.add_asset(_asset(body), actor=session.user.username, source_ip=client_ip(request))
    return _asset_out(registry, asset, version)


@router.put("/api/der/assets/{asset_id}")
def update_asset(
    asset_id: str, body: schemas.DerAssetUpdate, session: ConfigureSession, request: Request, registry: RegistryDep
) -> dict[str, Any]:
    """Replace an asset's data (engineer role), naming the version read; 409 when changed since."""
    asset, version = registry.update_asset(
        asset_id, body.version, _asset(body.asset), actor=session.user.username, source_ip=client_ip(request)
    )
    return _asset_out(registry, asset, version)


@router.post("/api/der/requests", status_code=status.HTTP_201_CREATED)
def create_request(
    body: schemas.DerRequestCreate, session: ConfigureSession, request: Request, registry: RegistryDep
) -> dict[str, Any]:
    """Receive a connection request for a registered asset (engineer role); it joins the queue by its time."""
    made, version = registry.submit(
        body.id,
        body.asset_id,
        received_at=body.received_at,
        actor=session.user.username,
        source_ip=client_ip(request),
    )
    positions = {e.request.id: e.position for e in registry.queue()}
    return _request_out(made, version, positions.get(made.id))


@router.post("/api/der/requests/{request_id}/move")
def move_request(
    request_id: str, body: schemas.DerRequestMove, session: ConfigureSession, request: Request, registry: RegistryDep
) -> dict[str, Any]:
    """Move a request along its state machine (engineer role); a move it does not allow is 409."""
    moved, version = registry.move(
        request_id,
        body.version,
        RequestStatus(body.to),
        actor=session.user.username,
        note=body.note,
        source_ip=client_ip(request),
    )
    positions = {e.request.id: e.position for e in registry.queue()}
    return _request_out(moved, version, positions.get(moved.id))
