"""Hosting capacity of the running grid: the latest study, a new one for engineers, its GeoJSON.

=====================================  ==========  ==============================================================
route                                  permission  what it does
=====================================  ==========  ==============================================================
``GET /api/hosting-capacity``          view        the study's status (``none``, ``running`` with ``progress``,
                                                   ``done``, ``failed``, ``cancelled``), its parameters and times,
                                                   and the latest result: per node ``generation_mw``,
                                                   ``load_mw`` and the binding limits (kind, element, step, and
                                                   the step's ``time`` in the profiles)
``POST /api/hosting-capacity``         configure   start a study (body: optional ``steps``, ``u_min``, ``u_max``,
                                                   ``loading_max``); 202 at once, 409 while one runs, 400 for a
                                                   grid without profiles
``DELETE /api/hosting-capacity``       configure   cancel the running study (between two of its tasks); 409 when
                                                   none runs
``GET /api/hosting-capacity.geojson``  view        the latest result as GeoJSON (RFC 7946), the same document as
                                                   ``opendso hosting-capacity --geojson``; 404 before the first
=====================================  ==========  ==============================================================

A study is :func:`opendso.calc.hc_dask.run_hosting_capacity` on the grid as it is when the study
starts (the real-time cycle's switch states): every energised node, extra generation and extra
load at unity power factor, every one of the first ``steps`` profile steps (all of them without
``steps``). It runs in a worker thread that drives a Dask cluster, never in the event loop: by
default a LocalCluster of one thread-worker in this process (a control room keeps its second core
for the real-time cycle); :class:`HostingStudies` built with ``scheduler`` sends the tasks to a
real cluster instead (set ``app.state.hosting`` before the first request). At most one study runs
at a time; the result of the last finished one stays until the next one finishes, so a failed or
cancelled study leaves the map as it was. Starting and cancelling are audited with the actor and
the client address.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from opendso.calc.hosting_capacity import HostingCapacityResult, HostingLimit, check_steps, hosting_geojson
from opendso.calc.timeseries import ViolationLimits
from opendso.errors import CalculationError, ConflictError, NotFoundError
from opendso.grid.model import Grid
from opendso.service.routes.deps import ConfigureSession, RoomDep, ViewSession, client_ip

__all__ = ["HostingStudies", "HostingStudyBody", "router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["hosting-capacity"])

Status = Literal["none", "running", "done", "failed", "cancelled"]


class HostingStudyBody(BaseModel):
    """A hosting-capacity study to start: the first ``steps`` profile steps (all when absent) and the limits."""

    model_config = ConfigDict(extra="forbid", strict=True)

    steps: int | None = Field(default=None, ge=1, le=10_000_000)
    u_min: float = Field(default=0.9, gt=0.0, lt=2.0, allow_inf_nan=False)
    u_max: float = Field(default=1.1, gt=0.0, lt=2.0, allow_inf_nan=False)
    loading_max: float = Field(default=1.0, gt=0.0, le=10.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _band(self) -> HostingStudyBody:
        if not self.u_min < self.u_max:
            raise ValueError(f"u_min {self.u_min} must be below u_max {self.u_max}")
        return self


@dataclass(frozen=True)
class _Run:
    """One study asked for: its grid (as it was at the start), parameters, who and when."""

    grid: Grid
    steps: int
    limits: ViolationLimits
    by: str
    started_at: datetime


class HostingStudies:
    """The hosting-capacity studies of one app: at most one running, the latest finished result kept.

    ``scheduler`` (``tcp://host:8786``) sends the tasks to a running Dask scheduler; without it each
    study starts a LocalCluster of ``workers`` workers, threads of this process unless ``processes``.
    ``chunk_nodes`` nodes make one task: the progress moves and a cancellation takes effect between
    tasks.
    """

    def __init__(
        self,
        *,
        scheduler: str | None = None,
        workers: int = 1,
        processes: bool = False,
        chunk_nodes: int = 4,
    ) -> None:
        """Keep the cluster settings; nothing runs until :meth:`start`."""
        self.scheduler = scheduler
        self.workers = workers
        self.processes = processes
        self.chunk_nodes = chunk_nodes
        self._lock = threading.Lock()
        self._status: Status = "none"
        self._run: _Run | None = None
        self._progress: tuple[int, int] | None = None
        self._error: str | None = None
        self._finished_at: datetime | None = None
        self._cancel = threading.Event()
        self._cancelled_by: str | None = None
        self._thread: threading.Thread | None = None
        # the latest finished study: its run, result and the result's document (built once, read by every poll)
        self._result: tuple[_Run, HostingCapacityResult, dict[str, Any]] | None = None

    # -- acting ----------------------------------------------------------------------------------------
    def start(self, grid: Grid, *, steps: int | None, limits: ViolationLimits, by: str) -> dict[str, Any]:
        """Start a study of ``grid`` in a worker thread and return the status document.

        Raises :class:`~opendso.errors.InputError` for a grid without profiles or a bad ``steps``
        and :class:`~opendso.errors.ConflictError` while another study runs.
        """
        n_steps = check_steps(grid, steps)
        run = _Run(grid=grid, steps=n_steps, limits=limits, by=by, started_at=datetime.now(UTC))
        with self._lock:
            if self._status == "running":
                assert self._run is not None
                raise ConflictError(
                    f"a hosting-capacity study started by {self._run.by} is still running: wait for it or cancel it"
                )
            self._status = "running"
            self._run = run
            self._progress = None
            self._error = None
            self._finished_at = None
            self._cancelled_by = None
            self._cancel.clear()
            self._thread = threading.Thread(target=self._study, args=(run,), name="hosting-study", daemon=True)
            self._thread.start()
        log.info(
            "event=hosting.study_started grid=%s steps=%d by=%s u_min=%s u_max=%s loading_max=%s",
            grid.name,
            n_steps,
            by,
            limits.u_min_pu,
            limits.u_max_pu,
            limits.loading_max,
        )
        return self.status()

    def cancel(self, *, by: str) -> dict[str, Any]:
        """Ask the running study to stop after its current task; :class:`ConflictError` when none runs."""
        with self._lock:
            if self._status != "running":
                raise ConflictError("no hosting-capacity study is running")
            self._cancelled_by = by
            self._cancel.set()
        log.info("event=hosting.study_cancel_requested by=%s", by)
        return self.status()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the running study's thread to end; return True when none runs any more."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return thread is None or not thread.is_alive()

    def _on_progress(self, done: int, total: int) -> None:
        if self._cancel.is_set():
            raise CalculationError(f"hosting-capacity study cancelled by {self._cancelled_by}")
        with self._lock:
            self._progress = (done, total)

    def _study(self, run: _Run) -> None:
        from opendso.calc.hc_dask import run_hosting_capacity

        _quiet_dask()
        try:
            result = run_hosting_capacity(
                run.grid,
                steps=run.steps,
                limits=run.limits,
                scheduler=self.scheduler,
                workers=self.workers,
                processes=self.processes,
                chunk_nodes=self.chunk_nodes,
                progress=self._on_progress,
            )
        except Exception as exc:  # any failure ends the study with its message: the service goes on
            finished = datetime.now(UTC)
            with self._lock:
                cancelled = self._cancel.is_set()
                self._status = "cancelled" if cancelled else "failed"
                self._error = None if cancelled else f"{type(exc).__name__}: {exc}"
                self._finished_at = finished
            if cancelled:
                log.info("event=hosting.study_cancelled grid=%s by=%s", run.grid.name, self._cancelled_by)
            else:
                log.warning("event=hosting.study_failed grid=%s error=%r", run.grid.name, str(exc))
            return
        finished = datetime.now(UTC)
        document = _result_out(run, result, finished)
        with self._lock:
            self._status = "done"
            self._finished_at = finished
            self._progress = (len(result.nodes), len(result.nodes))
            self._result = (run, result, document)
        log.info(
            "event=hosting.study_done grid=%s nodes=%d steps=%d seconds=%.1f",
            run.grid.name,
            len(result.nodes),
            result.steps,
            (finished - run.started_at).total_seconds(),
        )

    # -- reading ---------------------------------------------------------------------------------------
    def status(self, grid: Grid | None = None) -> dict[str, Any]:
        """Return the status document of ``GET /api/hosting-capacity`` (``grid``: the running grid)."""
        with self._lock:
            run, held = self._run, self._result
            document: dict[str, Any] = {
                "status": self._status,
                "progress": None if self._progress is None else {"done": self._progress[0], "total": self._progress[1]},
                "run": None if run is None else {**_run_out(run), "finished_at": _iso(self._finished_at)},
                "error": self._error,
                "cancelled_by": self._cancelled_by if self._status == "cancelled" else None,
            }
        if grid is not None:
            document["grid"] = grid.name
            document["profile_steps"] = 0 if grid.profiles is None else grid.profiles.steps
        document["result"] = None if held is None else held[2]
        return document

    def geojson(self) -> dict[str, Any]:
        """Return the latest result as GeoJSON (:func:`~opendso.calc.hosting_capacity.hosting_geojson`); 404 before."""
        with self._lock:
            held = self._result
        if held is None:
            raise NotFoundError("no hosting-capacity study has finished yet: POST /api/hosting-capacity starts one")
        run, result, _ = held
        return hosting_geojson(run.grid, result)


def _quiet_dask() -> None:
    """Dask's INFO lines (scheduler, workers, every cancelled key) stay out of the service's log.

    As the command line does without ``-v``; a level above INFO set by a deployment is kept.
    """
    import distributed  # noqa: F401 - it configures its loggers on import; quieten them after

    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            held = logging.getLogger(name)
            if held.level <= logging.INFO:
                held.setLevel(logging.WARNING)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _run_out(run: _Run) -> dict[str, Any]:
    return {
        "grid": run.grid.name,
        "steps": run.steps,
        "u_min": run.limits.u_min_pu,
        "u_max": run.limits.u_max_pu,
        "loading_max": run.limits.loading_max,
        "by": run.by,
        "started_at": _iso(run.started_at),
    }


def _limit_out(limit: HostingLimit | None, times: np.ndarray | None) -> dict[str, Any] | None:
    if limit is None:
        return None
    moment = None
    if times is not None and 0 <= limit.step < times.size:
        moment = str(np.datetime_as_string(times[limit.step], unit="s"))
    return {**limit.to_dict(), "time": moment}


def _result_out(run: _Run, result: HostingCapacityResult, finished: datetime) -> dict[str, Any]:
    """The result of the CLI's JSON contract, with each node's id and each limit's profile time."""
    times = run.grid.profiles.time if run.grid.profiles is not None else None
    nodes = [
        {
            **n.to_dict(),
            "node_id": n.node_id,
            "generation_limit": _limit_out(n.generation_limit, times),
            "load_limit": _limit_out(n.load_limit, times),
        }
        for n in result.nodes
    ]
    return {
        "grid": result.grid,
        "steps": result.steps,
        "limits": {
            "u_min": result.limits.u_min_pu,
            "u_max": result.limits.u_max_pu,
            "loading_max": result.limits.loading_max,
        },
        "started_at": _iso(run.started_at),
        "finished_at": _iso(finished),
        "by": run.by,
        "nodes": nodes,
    }


# -- dependencies ----------------------------------------------------------------------------------------
_HOLD = threading.Lock()


def _studies(request: Request) -> HostingStudies:
    state = request.app.state
    with _HOLD:
        held: HostingStudies | None = getattr(state, "hosting", None)
        if held is None:
            held = state.hosting = HostingStudies()
    return held


StudiesDep = Annotated[HostingStudies, Depends(_studies)]


def _grid_now(room: Any) -> Grid:
    """The grid as it is now: the real-time cycle's (its switch states follow the field), else the room's."""
    grid: Grid = room.cycle.grid if room.cycle is not None else room.grid
    return grid


# -- routes ------------------------------------------------------------------------------------------------
@router.get("/api/hosting-capacity")
def hosting_status(_: ViewSession, room: RoomDep, studies: StudiesDep) -> dict[str, Any]:
    """The study's status and the latest result of the running grid (``result`` None before the first)."""
    return studies.status(_grid_now(room))


@router.get("/api/hosting-capacity.geojson")
def hosting_geojson_export(_: ViewSession, studies: StudiesDep) -> dict[str, Any]:
    """The latest result as a GeoJSON FeatureCollection of Points at the nodes (RFC 7946); 404 before one."""
    return studies.geojson()


@router.post("/api/hosting-capacity", status_code=status.HTTP_202_ACCEPTED)
def start_study(
    body: HostingStudyBody, session: ConfigureSession, request: Request, room: RoomDep, studies: StudiesDep
) -> dict[str, Any]:
    """Start a study on the grid as it is now (engineer role); 409 while one runs, 400 without profiles."""
    grid = _grid_now(room)
    limits = ViolationLimits(u_min_pu=body.u_min, u_max_pu=body.u_max, loading_max=body.loading_max)
    actor = session.user.username
    started = studies.start(grid, steps=body.steps, limits=limits, by=actor)
    room.audit.append(
        "hosting.study_started",
        actor=actor,
        element=grid.name,
        source_ip=client_ip(request),
        details={
            "steps": started["run"]["steps"],
            "u_min": body.u_min,
            "u_max": body.u_max,
            "loading_max": body.loading_max,
        },
    )
    return studies.status(grid)


@router.delete("/api/hosting-capacity")
def cancel_study(session: ConfigureSession, request: Request, room: RoomDep, studies: StudiesDep) -> dict[str, Any]:
    """Cancel the running study (engineer role): it stops after its current task; 409 when none runs."""
    actor = session.user.username
    cancelled = studies.cancel(by=actor)
    room.audit.append(
        "hosting.study_cancelled", actor=actor, element=_grid_now(room).name, source_ip=client_ip(request)
    )
    return {**cancelled, "grid": _grid_now(room).name}
