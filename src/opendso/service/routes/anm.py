"""Active network management: the constraints it holds, the export limit of every flexible DER, curtailed energy.

=====================  ==========  =================================================================
route                  permission  what it does
=====================  ==========  =================================================================
``GET /api/anm``       view        whether ANM runs; the active constraints (element, kind, value,
                                   trigger, release threshold, escalation, the limits it asks);
                                   every flexible DER with its owner, principle of access, the
                                   limit ANM asks, the limit in force and the source that owns it;
                                   curtailed MWh per DER and per agreement, against the cap
=====================  ==========  =================================================================

The controller (:class:`~opendso.der.anm.AnmController`) is held in ``app.state.anm``;
``opendso run`` sets one subscribed to its real-time cycle when ``OPENDSO_RUN_ANM`` is on.
Without one, ANM is off and the lists are empty. Read only: the limits reach the field through
the set-point arbiter, never from here.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from opendso.der.anm import AnmController
from opendso.service.routes.deps import ViewSession

__all__ = ["router"]

router = APIRouter(tags=["anm"])


def _controller(request: Request) -> AnmController | None:
    held: AnmController | None = getattr(request.app.state, "anm", None)
    return held


ControllerDep = Annotated[AnmController | None, Depends(_controller)]


@router.get("/api/anm")
def anm_state(_: ViewSession, controller: ControllerDep) -> dict[str, Any]:
    """Whether ANM runs, its constraints, the limit of every flexible DER and the curtailed energy."""
    if controller is None:
        return {
            "running": False,
            "constraints": [],
            "ders": [],
            "curtailment": {"ders": [], "by_agreement_mwh": {}, "total_mwh": 0.0},
        }
    return {"running": True, **controller.snapshot()}
