"""The congestion forecast of the running grid: probability and size of violations per element and interval.

==========================  ==========  ===========================================================
route                       permission  what it gives
==========================  ==========  ===========================================================
``GET /api/congestion``     view        the congestion forecast issued now (the simulated clock
                                        when a field simulator runs, else the wall clock, moved
                                        into the profiles' year) or at ``issued``; ``scenarios``,
                                        ``steps`` (15-minute intervals ahead), ``min_probability``,
                                        limits ``u_min``, ``u_max``, ``loading_max``
==========================  ==========  ===========================================================

The forecast is computed on demand in a worker thread (never on the event loop) and kept for
:data:`CACHE_SECONDS` per set of parameters and 15-minute issue time, so a control room of many
screens asks for one computation per quarter-hour. A grid without profiles, or too little history
before the issue time, is 400 naming it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Request

from opendso.calc.timeseries import ViolationLimits
from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.service.routes.computed import cache_of, computed
from opendso.service.routes.deps import RoomDep, ViewSession, query_time

__all__ = ["CACHE_SECONDS", "router"]

router = APIRouter(tags=["congestion"])

#: How long one computed forecast is served again for the same grid, parameters and issue time.
CACHE_SECONDS = 300.0


def _compute(
    grid: Grid, issued: datetime, scenarios: int, steps: int, min_probability: float, limits: ViolationLimits
) -> dict[str, Any]:
    from opendso.planning.congestion import congestion_outlook

    result = congestion_outlook(grid, issued, steps=steps, scenarios=scenarios, limits=limits)
    return result.to_dict(min_probability=min_probability)


@router.get("/api/congestion")
async def congestion(
    request: Request,
    _: ViewSession,
    room: RoomDep,
    issued: Annotated[str | None, Query(max_length=64)] = None,
    scenarios: Annotated[int, Query(ge=1, le=1000)] = 100,
    steps: Annotated[int, Query(ge=1, le=192)] = 192,
    min_probability: Annotated[float, Query(ge=0.0, lt=1.0)] = 0.0,
    u_min: Annotated[float, Query(gt=0.0, lt=2.0)] = 0.9,
    u_max: Annotated[float, Query(gt=0.0, lt=2.0)] = 1.1,
    loading_max: Annotated[float, Query(gt=0.0, le=10.0)] = 1.0,
) -> dict[str, Any]:
    """The congestion forecast of the running grid (:meth:`opendso.planning.congestion.CongestionForecast.to_dict`)."""
    from opendso.planning.congestion import issue_time_in_profiles

    if not u_min < u_max:
        raise InputError(f"u_min {u_min} must be below u_max {u_max}")
    limits = ViolationLimits(u_min_pu=u_min, u_max_pu=u_max, loading_max=loading_max)
    grid = room.grid
    if issued is not None:
        at = query_time(issued, "issued")
    else:
        simulator = room.simulator
        now = room.clock()
        at = (simulator.simulated_time_at(now) or simulator.simulated_clock()) if simulator is not None else now
        at = issue_time_in_profiles(grid, at)
    key = (id(grid), at.isoformat(), scenarios, steps, min_probability, limits)
    cache = cache_of(request, "congestion", CACHE_SECONDS)
    return cast(
        dict[str, Any],
        await computed(cache, key, lambda: _compute(grid, at, scenarios, steps, min_probability, limits)),
    )
