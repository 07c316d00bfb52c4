"""The API's routers, one module per resource; :data:`ROUTERS` is the order the app includes them in.

===================  =====================================================================
module               resource
===================  =====================================================================
:mod:`.auth`         sessions: login, logout, me, own password, bearer tokens
:mod:`.users`        user management
:mod:`.grid`         the network drawing, elements, the estimated state, the status
:mod:`.measurements` trends of measurement points
:mod:`.events`       the event log and the shift log
:mod:`.audit`        the audit trail and the integrity report
:mod:`.alarms`       the alarm list and actions, designed suppression, journal, figures
:mod:`.switching`    the safety gate's answer, operating switches through it, tags,
                     safety documents, earths, fault flags
:mod:`.plans`        switching plans: drafted, simulated, approved, executed step by step
:mod:`.flisr`        FLISR proposals after trips: approve, reject; FLISR studies
:mod:`.outages`      outages, customer calls, restoration steps, crews, ETRs, IEEE 1366 indices
:mod:`.der`          the DER registry: assets, connection requests and the queue
:mod:`.anm`          active network management: constraints, DER export limits, curtailed energy
:mod:`.dr`           demand response: the OpenADR VTN, enrolled VENs, events and opt-in/out
:mod:`.congestion`   the congestion forecast of the running grid (48 h, per element and interval)
:mod:`.flexround`    day-ahead flexibility rounds over the emulated UFTP market: run one, the latest
:mod:`.hosting`      hosting capacity of the running grid: the latest study, a new one, GeoJSON
:mod:`.stream`       the WebSocket stream and the watch that closes it with its session
:mod:`.trainer`      the simulated clock (pause, resume, speed, next scripted event)
:mod:`.docs`         Swagger UI and its assets
:mod:`.ui`           the web UI (added by the app only when its folder has an index.html)
:mod:`.deps`         what they share: the room and security of the app, the caller's session,
                     permission checks (:func:`~.deps.require`), origin check, body and time
                     parsing
===================  =====================================================================

Adding a resource (switching, outages, DER, ...):

1. Put the domain logic below the service (``operations/``), reached through the control room
   (:class:`~opendso.service.controlroom.ControlRoom`) or an object the app keeps in
   ``app.state``; raise :mod:`opendso.errors` / :mod:`opendso.service.errors` classes, which
   :mod:`opendso.service.error_handlers` maps to HTTP (add a mapping there for a new class).
2. Write ``routes/<resource>.py`` with ``router = APIRouter(tags=["<resource>"])``; every route
   takes a permission dependency from :mod:`.deps` (``ViewSession`` to read, ``ControlSession``
   for operator actions, ``ConfigureSession`` for engineering, or ``Annotated[Session,
   Depends(require(Permission.X))]``), the room as ``RoomDep``, request and response bodies as
   models in :mod:`opendso.service.schemas`, and passes ``actor`` and ``client_ip(request)`` to
   the action so it is audited. Routes under a shared prefix that also matches a ``{key:path}``
   route go first in their module.
3. Add the module's ``router`` to :data:`ROUTERS` (before the stream, trainer and docs routers)
   and its routes to the role matrix test (``tests/test_service_api.py``) and to this table.
"""

from __future__ import annotations

from fastapi import APIRouter

from opendso.service.routes import (
    alarms,
    anm,
    audit,
    auth,
    congestion,
    der,
    docs,
    dr,
    events,
    flex,
    flexround,
    flisr,
    grid,
    hosting,
    measurements,
    outages,
    plans,
    stream,
    switching,
    trainer,
    users,
)

__all__ = ["ROUTERS"]

#: The routers in the order the app includes them (the OpenAPI document lists them in this order).
ROUTERS: tuple[APIRouter, ...] = (
    auth.router,
    users.router,
    grid.router,
    measurements.router,
    events.router,
    audit.router,
    alarms.router,
    switching.router,
    plans.router,
    flisr.router,
    outages.router,
    der.router,
    anm.router,
    dr.router,
    hosting.router,
    congestion.router,
    flex.router,
    flexround.router,
    stream.router,
    trainer.router,
    docs.router,
)
