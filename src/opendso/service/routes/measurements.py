"""Trends: the historian's measurements of one point, raw or aggregated.

``GET /api/measurements/{point}`` (view permission) gives ``[{ts, value, quality}]`` from
``from`` to ``to`` (ISO 8601 with a zone; default the last hour), or with ``interval`` (seconds)
``[{ts, min, max, mean, count}]``. 404 for an unknown point, 400 for a time without a zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from opendso.service import schemas
from opendso.service.routes.deps import RoomDep, ViewSession, query_time

__all__ = ["router"]

router = APIRouter(tags=["measurements"])


@router.get(
    "/api/measurements/{point:path}",
    response_model=list[schemas.MeasurementPublic] | list[schemas.AggregatePublic],
)
def measurements(
    point: str,
    _: ViewSession,
    room: RoomDep,
    start: Annotated[str | None, Query(alias="from")] = None,
    end: Annotated[str | None, Query(alias="to")] = None,
    interval: Annotated[float | None, Query(gt=0, le=366 * 86400)] = None,
) -> JSONResponse:
    """Measurements of a point from ``from`` to ``to`` (default: the last hour); aggregates with ``interval`` s."""
    t1 = query_time(end, "to") if end else datetime.now(UTC)
    t0 = query_time(start, "from") if start else t1 - timedelta(hours=1)
    step = timedelta(seconds=interval) if interval is not None else None
    return JSONResponse(room.measurements(point, t0, t1, step))
