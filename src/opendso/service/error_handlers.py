"""Domain errors to HTTP errors, in one place, and the audit of refused access.

:func:`install_error_handlers` maps every error class the layers raise to one status:

======================================================  ======  ===================================
error                                                   status  extra
======================================================  ======  ===================================
:class:`~opendso.service.security.AuthError`            401     ``WWW-Authenticate: Bearer``
:class:`~opendso.service.security.ForbiddenError`       403
:class:`~opendso.service.security.ThrottledError`       429     ``Retry-After``
``NotFoundError``, ``UnknownPointError``,               404
``UnknownUserError``
``ConflictError``, ``IntegrityError``                   409
``UnsupportedMediaError``                               415
any other :class:`~opendso.errors.InputError`           400
``StoreUnavailableError``                               503     logged as an error
request validation (FastAPI, pydantic)                  422     ``errors``: ``loc``, ``type``, ``msg``
======================================================  ======  ===================================

The body is ``{"detail": <message>}``. A 403, and a 401 for a token that was presented but is
forged, revoked or expired, is audited through :func:`audit_refusal` (aggregated per source and
minute by :meth:`~opendso.service.audit.AuditTrail.refused`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from opendso.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    InputError,
    IntegrityError,
    NotFoundError,
    StoreUnavailableError,
    ThrottledError,
    UnknownPointError,
    UnknownUserError,
    UnsupportedMediaError,
)
from opendso.service.security import Security

__all__ = ["audit_refusal", "install_error_handlers"]

log = logging.getLogger(__name__)


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors to HTTP errors (the one place where this happens); audit refused access."""

    def handler(status: int, headers: dict[str, str] | None = None) -> Callable[[Request, Exception], Awaitable[Any]]:
        async def handle(request: Request, exc: Exception) -> JSONResponse:
            if status >= 500:
                log.error("event=request_failed path=%s error=%r", request.url.path, exc)
            if status == 403 or (status == 401 and getattr(exc, "presented", False)):
                await audit_refusal(request, status, str(exc))
            return JSONResponse({"detail": str(exc)}, status, headers=headers)

        return handle

    async def throttled(request: Request, exc: Exception) -> JSONResponse:
        retry = exc.retry_after_s if isinstance(exc, ThrottledError) else 1
        return JSONResponse({"detail": str(exc)}, 429, headers={"Retry-After": str(retry)})

    app.add_exception_handler(AuthError, handler(401, {"WWW-Authenticate": "Bearer"}))
    app.add_exception_handler(ForbiddenError, handler(403))
    app.add_exception_handler(ThrottledError, throttled)
    for missing in (NotFoundError, UnknownPointError, UnknownUserError):
        app.add_exception_handler(missing, handler(404))
    app.add_exception_handler(ConflictError, handler(409))
    app.add_exception_handler(UnsupportedMediaError, handler(415))
    app.add_exception_handler(InputError, handler(400))
    app.add_exception_handler(IntegrityError, handler(409))
    app.add_exception_handler(StoreUnavailableError, handler(503))

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError | ValidationError) else []
        findings = []
        for err in errors:
            where = ".".join(str(p) for p in err.get("loc", ()))
            findings.append({"loc": where, "type": err.get("type"), "msg": err.get("msg")})
        if any(f["type"] == "json_invalid" for f in findings):
            detail = "the request body is not valid JSON; nothing was changed"
        else:
            detail = "invalid request: " + "; ".join(f"{f['loc']}: {f['msg']}" for f in findings)
        return JSONResponse({"detail": detail, "errors": findings}, 422)

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ValidationError, invalid_request)


async def audit_refusal(request: Request | WebSocket, status: int, reason: str) -> None:
    """Audit a refused request (aggregated per source and minute; see :meth:`AuditTrail.refused`)."""
    security: Security = request.app.state.security
    actor = getattr(request.state, "user", None) or "anonymous"
    method = request.method if isinstance(request, Request) else "WS"
    try:
        await run_in_threadpool(
            security.audit.refused,
            "access.refused",
            actor=actor,
            source_ip=request.client.host if request.client is not None else None,
            element=f"{method} {request.url.path}"[:200],
            reason=f"{status}: {reason}"[:500],
        )
    except Exception:  # the refusal stands even when it cannot be audited
        log.exception("event=refusal_not_audited path=%s", request.url.path)
