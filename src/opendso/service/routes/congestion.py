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

import threading
import time
from datetime import datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request

from opendso.calc.timeseries import ViolationLimits
from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.service.routes.deps import RoomDep, ViewSession, query_time

__all__ = ["CACHE_SECONDS", "router"]

router = APIRouter(tags=["congestion"])

#: How long one computed forecast is served again for the same grid, parameters and issue time.
CACHE_SECONDS = 300.0

_STATE = threading.Lock()  # guards the creation of an app's cache only (taken on the event loop, briefly)


class _Cache:
    """The forecasts computed for one app: key -> (monotonic time, JSON dict).

    ``lock`` lets one computation run at a time; other requests wait in their worker thread, then
    find the result in the cache.
    """

    def __init__(self) -> None:
        self.entries: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}
        self.lock = threading.Lock()


def _cache_of(request: Request) -> _Cache:
    state = request.app.state
    with _STATE:
        cache: _Cache | None = getattr(state, "congestion_cache", None)
        if cache is None:
            cache = state.congestion_cache = _Cache()
    return cache


def _compute(
    cache: _Cache,
    grid: Grid,
    issued: datetime,
    scenarios: int,
    steps: int,
    min_probability: float,
    limits: ViolationLimits,
) -> dict[str, Any]:
    from opendso.planning.congestion import congestion_outlook

    key = (id(grid), issued.isoformat(), scenarios, steps, min_probability, limits)
    with cache.lock:
        now = time.monotonic()
        held = cache.entries.get(key)
        if held is not None and now - held[0] < CACHE_SECONDS:
            return held[1]
        result = congestion_outlook(grid, issued, steps=steps, scenarios=scenarios, limits=limits)
        payload = result.to_dict(min_probability=min_probability)
        cache.entries = {k: v for k, v in cache.entries.items() if now - v[0] < CACHE_SECONDS}
        cache.entries[key] = (time.monotonic(), payload)
        return payload


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
    cache = _cache_of(request)
    return await anyio.to_thread.run_sync(_compute, cache, grid, at, scenarios, steps, min_probability, limits)
