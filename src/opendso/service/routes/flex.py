"""The flexibility desk's API: aggregators' portfolios and operating envelopes, the TSO-DSO interface.

==================================  ==========  =========================================================
route                               permission  what it gives
==================================  ==========  =========================================================
``GET /api/flex/portfolios``        view        each aggregator's DER per connection point and feeder,
                                                from the DER registry
``GET /api/flex/envelopes``         view        every aggregator's operating envelope (import and export
                                                bound per connection point and 15-minute interval),
                                                allocated jointly by ``rule`` (``proportional`` or
                                                ``equal``) for ``steps`` intervals from ``issued``
``GET /api/tso/day-ahead``          view        per grid-supply point, the scheduled exchange and the
                                                flexibility the DSO can offer the TSO (``steps``
                                                intervals from ``issued``); ``.csv`` the same as a file
``POST /api/tso/requests``          control     a TSO's request (GSP, intervals, direction, MW) checked
                                                against distribution limits and the offered volume:
                                                accepted, partial or refused with the reason; audited
==================================  ==========  =========================================================

``issued`` defaults to now (the simulated clock when a field simulator runs) moved into the
profiles' year, as the congestion forecast does. The computations run in a worker thread and are
kept for :data:`CACHE_SECONDS` per parameters and issue time. A TSO request is judged against the
day-ahead report of its first interval's day (computed if not held); bad input is 400 or 422
naming it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, cast

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from opendso.calc.timeseries import ViolationLimits
from opendso.errors import InputError
from opendso.grid.model import Grid
from opendso.service.controlroom import ControlRoom
from opendso.service.routes.computed import cache_of, computed
from opendso.service.routes.deps import ControlSession, RoomDep, ViewSession, client_ip, query_time
from opendso.service.routes.der import RegistryDep

__all__ = ["CACHE_SECONDS", "router"]

router = APIRouter(tags=["flexibility"])

#: How long a computed envelope allocation or TSO report is served again for the same parameters.
CACHE_SECONDS = 300.0

_RULE = "^(proportional|equal)$"


def _issue_time(room: ControlRoom, grid: Grid, issued: str | None) -> datetime:
    """``issued`` parsed, or now (the simulator's clock when one runs) moved into the profiles' year."""
    from opendso.planning.congestion import issue_time_in_profiles

    if issued is not None:
        return query_time(issued, "issued")
    simulator = room.simulator
    now = room.clock()
    at = (simulator.simulated_time_at(now) or simulator.simulated_clock()) if simulator is not None else now
    return issue_time_in_profiles(grid, at)


def _limits(u_min: float, u_max: float, loading_max: float) -> ViolationLimits:
    if not u_min < u_max:
        raise InputError(f"u_min {u_min} must be below u_max {u_max}")
    return ViolationLimits(u_min_pu=u_min, u_max_pu=u_max, loading_max=loading_max)


@router.get("/api/flex/portfolios")
def flex_portfolios(_: ViewSession, registry: RegistryDep) -> dict[str, Any]:
    """Each aggregator's connected DER per connection point and feeder (from the DER registry)."""
    from opendso.markets.envelopes import portfolios

    found = portfolios(registry)
    return {"aggregators": [found[name].to_json() for name in sorted(found)]}


@router.get("/api/flex/envelopes")
async def flex_envelopes(
    request: Request,
    _: ViewSession,
    room: RoomDep,
    registry: RegistryDep,
    issued: Annotated[str | None, Query(max_length=64)] = None,
    steps: Annotated[int, Query(ge=1, le=192)] = 96,
    rule: Annotated[str, Query(pattern=_RULE)] = "proportional",
    u_min: Annotated[float, Query(gt=0.0, lt=2.0)] = 0.9,
    u_max: Annotated[float, Query(gt=0.0, lt=2.0)] = 1.1,
    loading_max: Annotated[float, Query(gt=0.0, le=10.0)] = 1.0,
) -> dict[str, Any]:
    """The operating envelopes of every aggregator (:meth:`opendso.markets.envelopes.EnvelopeAllocation.to_json`)."""
    from opendso.markets.envelopes import allocate_envelopes, connection_points
    from opendso.planning.history import profile_times

    limits = _limits(u_min, u_max, loading_max)
    grid = room.grid
    if grid.profiles is None:
        raise InputError(f"{grid.name}: the grid has no time profiles to allocate envelopes on")
    at = _issue_time(room, grid, issued)
    known = profile_times(grid)
    first = np.searchsorted(known.asi8, at.astimezone(UTC).timestamp() * 1e9, side="left")
    if first >= len(known):
        raise InputError(f"issued {at.isoformat()} is after the grid's profiles ({known[-1].isoformat()})")
    times = [t.to_pydatetime() for t in known[first : first + steps]]
    points = connection_points(registry)
    if not points:
        return {"grid": grid.name, "rule": rule, "intervals": [], "envelopes": [], "note": "no aggregator has DER"}
    key = ("envelopes", id(grid), times[0].isoformat(), len(times), rule, limits, tuple(points))

    def compute() -> dict[str, Any]:
        return allocate_envelopes(grid, points, times=times, rule=rule, limits=limits).to_json()

    return cast(dict[str, Any], await computed(cache_of(request, "envelopes", CACHE_SECONDS), key, compute))


async def _tso_report(request: Request, room: ControlRoom, registry: Any, at: datetime, steps: int) -> Any:
    from opendso.markets.tso import TsoInterface

    grid = room.grid
    if grid.profiles is None:
        raise InputError(f"{grid.name}: the grid has no time profiles to forecast the exchange from")
    key = ("tso", id(grid), at.isoformat(), steps)
    return await computed(
        cache_of(request, "tso", CACHE_SECONDS), key, lambda: TsoInterface(grid, registry).day_ahead(at, steps=steps)
    )


@router.get("/api/tso/day-ahead")
async def tso_day_ahead(
    request: Request,
    _: ViewSession,
    room: RoomDep,
    registry: RegistryDep,
    issued: Annotated[str | None, Query(max_length=64)] = None,
    steps: Annotated[int, Query(ge=1, le=192)] = 96,
) -> dict[str, Any]:
    """The exchange and offered flexibility per grid-supply point (:meth:`opendso.markets.tso.TsoReport.to_dict`)."""
    at = _issue_time(room, room.grid, issued)
    report = await _tso_report(request, room, registry, at, steps)
    return cast(dict[str, Any], report.to_dict())


@router.get("/api/tso/day-ahead.csv")
async def tso_day_ahead_csv(
    request: Request,
    _: ViewSession,
    room: RoomDep,
    registry: RegistryDep,
    issued: Annotated[str | None, Query(max_length=64)] = None,
    steps: Annotated[int, Query(ge=1, le=192)] = 96,
) -> Response:
    """The day-ahead report as CSV (:meth:`opendso.markets.tso.TsoReport.to_csv`), for the TSO's systems."""
    at = _issue_time(room, room.grid, issued)
    report = await _tso_report(request, room, registry, at, steps)
    name = f"tso-day-ahead-{at.strftime('%Y%m%dT%H%MZ')}.csv"
    return Response(
        content=report.to_csv(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


class TsoRequestBody(BaseModel):
    """A TSO's request for flexibility at one grid-supply point."""

    model_config = ConfigDict(extra="forbid")

    gsp: str = Field(min_length=1, max_length=200)
    direction: str = Field(pattern="^(up|down)$")
    mw: float = Field(gt=0.0, le=10_000.0, allow_inf_nan=False)
    intervals: list[str] = Field(min_length=1, max_length=192)
    all_or_none: bool = False


@router.post("/api/tso/requests")
async def tso_request(
    body: TsoRequestBody, request: Request, session: ControlSession, room: RoomDep, registry: RegistryDep
) -> dict[str, Any]:
    """Check a TSO request against distribution limits and the offered volume; the answer is audited."""
    from opendso.markets.tso import TsoInterface, TsoRequest

    times = tuple(query_time(t, "intervals") for t in body.intervals)
    gsps = {g.name for g in TsoInterface(room.grid, registry).gsps}
    if body.gsp not in gsps:
        raise InputError(
            f"gsp: {body.gsp!r} is not a grid-supply point of {room.grid.name} ({', '.join(sorted(gsps))})"
        )
    first = min(times)
    day = first.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if max(times) >= day + timedelta(days=1):
        raise InputError("intervals: a TSO request covers intervals of one day (UTC)")
    tso_request = TsoRequest(
        gsp=body.gsp, intervals=times, direction=body.direction, mw=body.mw, all_or_none=body.all_or_none
    )
    report = await _tso_report(request, room, registry, day, 96)
    answer = TsoInterface(room.grid, registry).check_request(report, tso_request)
    payload = answer.to_dict()
    room.audit.append(
        "tso.request",
        actor=session.user.username,
        element=f"gsp:{body.gsp}",
        result=str(payload["status"]),
        details={"direction": body.direction, "mw": body.mw, "intervals": len(times)},
        source_ip=client_ip(request),
    )
    return payload
