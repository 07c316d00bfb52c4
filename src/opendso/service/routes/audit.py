"""The audit trail for security auditors.

============================  ==========  ========================================================
route                         permission  what it gives
============================  ==========  ========================================================
``GET /api/audit``            read audit  records after a sequence number, each checked against
                                          its keyed hash (``verified``)
``GET /api/audit/verify``     read audit  the whole integrity report: audit trail, event log,
                                          user and session rows (as ``opendso audit verify``)
============================  ==========  ========================================================
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from opendso.service import schemas
from opendso.service.audit import integrity_report
from opendso.service.routes.deps import MAX_PAGE, MAX_SEQ, AuditSession, RoomDep

__all__ = ["router"]

router = APIRouter(tags=["audit"])


@router.get("/api/audit")
def audit(
    _: AuditSession,
    room: RoomDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 200,
) -> list[schemas.AuditRecordPublic]:
    """Records of the audit trail after a sequence number, each checked against its keyed hash (auditor only)."""
    records = room.audit.read(after, limit=limit)
    return [
        schemas.AuditRecordPublic.model_validate({**r.to_dict(), "verified": ok})
        for r, ok in zip(records, room.audit.check(records), strict=True)
    ]


@router.get("/api/audit/verify")
def audit_verify(_: AuditSession, room: RoomDep) -> schemas.IntegrityPublic:
    """Check the whole audit trail, the event log and the user and session rows (as ``opendso audit verify``)."""
    room.audit.flush()
    return schemas.IntegrityPublic.model_validate(integrity_report(room.historian.engine))
