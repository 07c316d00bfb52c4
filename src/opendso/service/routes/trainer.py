"""Trainer controls of the field simulator's clock over the API: pause, resume, speed, next scripted event.

This router adds to the control-room app:

================================  ==========  ======================================================
route                             permission  what it does
================================  ==========  ======================================================
``GET /api/trainer``              view        the clock: simulated time, speed, paused, the next
                                              scripted event and the whole timetable
``POST /api/trainer/pause``       configure   hold the simulated clock (409 when already paused)
``POST /api/trainer/resume``      configure   let it run on (409 when it is not paused)
``POST /api/trainer/speed``       configure   ``{"speed": s}``: s simulated seconds per real second,
                                              0 < s <= 3600 and finite (422 otherwise, nothing
                                              changed); a paused clock stays paused
``POST /api/trainer/next``        configure   jump to the next scripted event, which runs at once
                                              (409 when none is left)
================================  ==========  ======================================================

Configure is the engineer's permission (IEC 62351-8, :mod:`opendso.service.security`): a trainer
steers the simulation, not the grid, so operators under training cannot. Every action is one
record in the audit trail (``trainer.<action>``, with user, source address and the clock before
and after) and one event in the event log, so a replayed shift shows where the trainer moved the
clock. A control room without a field simulator answers 409. The clock's methods run in the
simulator's event loop (see :attr:`FieldSimulator.loop`), whichever thread serves the request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from opendso.errors import ConflictError
from opendso.service.controlroom import ControlRoom
from opendso.service.routes.deps import ConfigureSession, RoomDep, ViewSession, client_ip
from opendso.service.security import Session
from opendso.telemetry.scenario import describe_event
from opendso.telemetry.simulator import FieldSimulator
from opendso.telemetry.timebase import MAX_SPEED

__all__ = ["SpeedChange", "TrainerEventPublic", "TrainerPublic", "router", "trainer_state"]

log = logging.getLogger(__name__)


class SpeedChange(BaseModel):
    """A new clock speed: simulated seconds per real second (NaN, infinity and strings are refused)."""

    model_config = ConfigDict(extra="forbid")

    speed: float = Field(gt=0, le=MAX_SPEED, allow_inf_nan=False, strict=True)


class TrainerEventPublic(BaseModel):
    """One scripted event of the simulation's timetable."""

    at: AwareDatetime  # simulated time
    offset_s: float  # simulated seconds after the start
    kind: str
    what: str
    done: bool


class TrainerPublic(BaseModel):
    """The simulator's clock as a trainer sees it."""

    simulated_time: AwareDatetime
    start: AwareDatetime
    elapsed_s: float
    speed: float
    max_speed: float
    paused: bool
    next_event: TrainerEventPublic | None
    # simulated seconds to the next event, and the real seconds that is at the present speed (None when paused)
    next_in_s: float | None
    next_in_real_s: float | None
    events: list[TrainerEventPublic]


def trainer_state(simulator: FieldSimulator) -> TrainerPublic:
    """Return the clock and the timetable of ``simulator`` (call it in the simulator's event loop)."""
    events = [
        TrainerEventPublic(
            at=simulator.start_time + timedelta(seconds=at_s),
            offset_s=at_s,
            kind=f"{event.kind}_end" if undo else event.kind,
            what=describe_event(event, undo=undo),
            done=done,
        )
        for at_s, event, undo, done in simulator.timetable()
    ]
    following = next((e for e in events if not e.done), None)
    elapsed = simulator.elapsed_s
    next_in = None if following is None else max(0.0, following.offset_s - elapsed)
    return TrainerPublic(
        simulated_time=simulator.simulated_clock(),
        start=simulator.start_time,
        elapsed_s=elapsed,
        speed=simulator.speed,
        max_speed=MAX_SPEED,
        paused=simulator.paused,
        next_event=following,
        next_in_s=next_in,
        next_in_real_s=None if next_in is None or simulator.paused else next_in / simulator.speed,
        events=events,
    )


def _simulator(room: RoomDep) -> FieldSimulator:
    simulator = room.simulator
    if not isinstance(simulator, FieldSimulator):
        raise ConflictError("this control room has no field simulator: there is no simulated clock to steer")
    return simulator


SimulatorDep = Annotated[FieldSimulator, Depends(_simulator)]
TrainerSession = ConfigureSession
router = APIRouter(tags=["trainer"])


async def _on_clock[T](simulator: FieldSimulator, action: Callable[[], T]) -> T:
    """Run ``action`` in the simulator's event loop and return its result (409 when the clock is not running)."""
    loop = simulator.loop
    if loop is None:
        raise ConflictError("the field simulator is not running")
    if loop is asyncio.get_running_loop():
        return action()

    async def call() -> T:
        return action()

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), loop))


async def _record(
    request: Request, session: Session, action: str, before: TrainerPublic, after: TrainerPublic, **extra: Any
) -> None:
    """One audit record and one event-log entry for a trainer action."""
    room: ControlRoom = request.app.state.room
    user = session.user.username
    source_ip = client_ip(request)
    details = {
        "simulated_before": before.simulated_time.isoformat(),
        "simulated_after": after.simulated_time.isoformat(),
        "speed_before": before.speed,
        "speed_after": after.speed,
        "paused": after.paused,
        **extra,
    }
    await run_in_threadpool(room.record_trainer_action, action, actor=user, source_ip=source_ip, details=details)
    log.info(
        "event=trainer_action action=%s user=%s source_ip=%s sim_time=%s speed=%g paused=%s",
        action,
        user,
        source_ip,
        after.simulated_time.isoformat(),
        after.speed,
        after.paused,
    )


@router.get("/api/trainer")
async def clock(_: ViewSession, simulator: SimulatorDep) -> TrainerPublic:
    """The simulated clock: time, speed, paused, the next scripted event and the timetable."""
    return await _on_clock(simulator, lambda: trainer_state(simulator))


@router.post("/api/trainer/pause")
async def pause(session: TrainerSession, request: Request, simulator: SimulatorDep) -> TrainerPublic:
    """Hold the simulated clock (engineer role); 409 when it is already paused."""

    def act() -> tuple[TrainerPublic, TrainerPublic]:
        if simulator.paused:
            raise ConflictError("the simulated clock is already paused")
        before = trainer_state(simulator)
        simulator.pause()
        return before, trainer_state(simulator)

    before, after = await _on_clock(simulator, act)
    await _record(request, session, "pause", before, after)
    return after


@router.post("/api/trainer/resume")
async def resume(session: TrainerSession, request: Request, simulator: SimulatorDep) -> TrainerPublic:
    """Let the simulated clock run on at its speed (engineer role); 409 when it is not paused."""

    def act() -> tuple[TrainerPublic, TrainerPublic]:
        if not simulator.paused:
            raise ConflictError("the simulated clock is not paused")
        before = trainer_state(simulator)
        simulator.resume()
        return before, trainer_state(simulator)

    before, after = await _on_clock(simulator, act)
    await _record(request, session, "resume", before, after)
    return after


@router.post("/api/trainer/speed")
async def speed(body: SpeedChange, session: TrainerSession, request: Request, simulator: SimulatorDep) -> TrainerPublic:
    """Set the clock's speed in simulated seconds per real second (engineer role; 0 < speed <= 3600)."""

    def act() -> tuple[TrainerPublic, TrainerPublic]:
        before = trainer_state(simulator)
        simulator.set_speed(body.speed)
        return before, trainer_state(simulator)

    before, after = await _on_clock(simulator, act)
    await _record(request, session, "speed", before, after)
    return after


@router.post("/api/trainer/next")
async def next_event(session: TrainerSession, request: Request, simulator: SimulatorDep) -> TrainerPublic:
    """Jump to the next scripted event, which runs at once (engineer role); 409 when none is left."""

    def act() -> tuple[TrainerPublic, TrainerPublic, str]:
        before = trainer_state(simulator)
        if before.next_event is None:
            raise ConflictError("no scripted event is left: the simulated day has run to its end")
        simulator.jump_to(before.next_event.offset_s)
        return before, trainer_state(simulator), before.next_event.what

    before, after, what = await _on_clock(simulator, act)
    await _record(request, session, "next", before, after, event=what)
    return after
