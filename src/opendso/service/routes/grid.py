"""The network and its live state: the grid drawing, one element, the estimated state, the status bar.

==================================  ==========  ===================================================
route                               permission  what it gives
==================================  ==========  ===================================================
``GET /api/grid``                   view        nodes with coordinates, branches, switches
``GET /api/grid/elements/{id}``     view        one element's fields and measuring points (404)
``GET /api/grid/diagram``           view        the single-line diagrams' views and search index;
                                                with ``?substation=ID`` or ``?feeder=ID`` one
                                                view's geometry with the live switch states (404)
``GET /api/state``                  view        the latest estimated state; ``ETag``, 304 with
                                                ``If-None-Match`` until the next cycle
``GET /api/status``                 view        cycle time, observability, telemetry health,
                                                alarm counts and the simulated clock
==================================  ==========  ===================================================
"""

from __future__ import annotations

import threading
from typing import Annotated
from weakref import WeakKeyDictionary

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from opendso.service import schemas
from opendso.service.controlroom import ControlRoom
from opendso.service.controlroom.views import DiagramView
from opendso.service.routes.deps import RoomDep, ViewSession

__all__ = ["router"]

router = APIRouter()

# one diagram per control room, laid out on first use and dropped with the room
_diagrams: WeakKeyDictionary[ControlRoom, DiagramView] = WeakKeyDictionary()
_diagrams_lock = threading.Lock()

ElementId = Annotated[int | None, Query(ge=-(2**31), le=2**31 - 1)]


def _diagram_of(room: ControlRoom) -> DiagramView:
    with _diagrams_lock:
        view = _diagrams.get(room)
        if view is None:
            view = _diagrams[room] = DiagramView(room.grid)
        return view


@router.get("/api/grid", response_model=schemas.GridPublic, tags=["grid"])
def grid(_: ViewSession, room: RoomDep) -> JSONResponse:
    """The grid for drawing: nodes with coordinates, branches and switches."""
    return JSONResponse(room.grid_view())


@router.get("/api/grid/elements/{element_id}", tags=["grid"])
def element(
    element_id: Annotated[int, PathParam(ge=0, le=2**31 - 1)], _: ViewSession, room: RoomDep
) -> schemas.ElementPublic:
    """One element with its fields and the points that measure it; 404 for an unknown id."""
    return schemas.ElementPublic.model_validate(room.element(element_id))


@router.get(
    "/api/grid/diagram",
    response_model=schemas.DiagramPublic | schemas.DiagramCataloguePublic,
    tags=["grid"],
)
def diagram(_: ViewSession, room: RoomDep, substation: ElementId = None, feeder: ElementId = None) -> Response:
    """A single-line diagram: without parameters the views and the search index; with ``substation`` or
    ``feeder`` (ids from that list) the geometry of that view with the live switch states; 404 for an unknown id.
    """
    view = _diagram_of(room)
    if substation is None and feeder is None:
        return Response(view.catalogue_json(), media_type="application/json")
    switches = room.state().get("switches", {})
    return JSONResponse(view.view(substation=substation, feeder=feeder, switches=switches))


@router.get("/api/state", response_model=schemas.StatePublic, tags=["state"])
def state(_: ViewSession, room: RoomDep, request: Request) -> Response:
    """The latest estimated state; with ``If-None-Match`` of the last ETag, 304 until the next cycle."""
    body, etag = room.state_json()
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get("/api/status", tags=["state"])
def status(_: ViewSession, room: RoomDep) -> schemas.StatusPublic:
    """Cycle time, observability, telemetry health, alarm counts and the simulated clock."""
    return schemas.StatusPublic.model_validate(room.status())
