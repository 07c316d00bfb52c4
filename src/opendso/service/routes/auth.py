"""Sessions: log in and out, who am I, change one's password, bearer tokens for API clients.

==========================  ==========  ===========================================================
route                       permission  what it does
==========================  ==========  ===========================================================
``POST /api/auth/login``    none        JSON credentials -> session cookie + user, roles, CSRF token
``POST /api/auth/password`` a session   change one's own password (the only thing a temporary
                                        password allows); other sessions end
``POST /api/auth/logout``   a session   end the session, clear the cookie (or revoke the token)
``GET /api/auth/me``        a session   the user, roles and CSRF token (none for bearer tokens)
``POST /api/auth/token``    none        JSON or form credentials -> a bearer token (no CSRF then)
==========================  ==========  ===========================================================

The routes that hash a password read their body themselves, after the origin check and the
login gate's admission (429 with ``Retry-After``), and hash in the gate's worker.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from opendso.service import schemas
from opendso.service.routes.deps import (
    CurrentSession,
    SecurityDep,
    check_same_origin,
    client_ip,
    current_session,
    gate_of,
    json_body,
    settings_of,
)
from opendso.service.security import SESSION_COOKIE, Security, Session

__all__ = ["router"]

router = APIRouter(tags=["auth"])


def _session_public(session: Session) -> schemas.SessionPublic:
    return schemas.SessionPublic(
        user=session.user.username,
        roles=list(session.user.roles),
        csrf_token=session.csrf_token if session.kind == "cookie" else None,
        password_change_required=session.user.must_change_password,
    )


def _set_cookie(response: Response, request: Request, token: str) -> None:
    settings = settings_of(request)
    secure = settings.cookie_secure if settings.cookie_secure is not None else request.url.scheme == "https"
    max_age = int(settings.security.session_ttl.total_seconds())
    response.set_cookie(
        SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="strict", secure=secure, path="/"
    )


def _body_schema(model: type[BaseModel], *media: str) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a route that reads its body itself."""
    schema = model.model_json_schema()
    return {"requestBody": {"content": {m: {"schema": schema} for m in media}, "required": True}}


@router.post("/api/auth/login", openapi_extra=_body_schema(schemas.Credentials, "application/json"))
async def login(request: Request, response: Response) -> schemas.SessionPublic:
    """Log in: set the session cookie and return the user, roles and CSRF token.

    Only JSON from this origin; rate-limited per source and overall (429 with Retry-After).
    """
    check_same_origin(request)
    creds = await json_body(request, schemas.Credentials)
    gate, ip = gate_of(request), client_ip(request)
    security: Security = request.app.state.security
    gate.admit(ip)
    user = await gate.run(security.authenticate, creds.username, creds.password, source_ip=ip)
    token, session = await run_in_threadpool(security.open_session, user, kind="cookie", source_ip=ip)
    _set_cookie(response, request, token)
    return _session_public(session)


@router.post("/api/auth/password", openapi_extra=_body_schema(schemas.PasswordChange, "application/json"))
async def change_password(request: Request) -> schemas.SessionPublic:
    """Change one's own password (needed first when ``password_change_required``); other sessions end."""
    check_same_origin(request)
    security: Security = request.app.state.security
    session = await run_in_threadpool(current_session, request, security)
    body = await json_body(request, schemas.PasswordChange)
    gate, ip = gate_of(request), client_ip(request)
    gate.admit(ip)
    changed = await gate.run(
        security.change_own_password, session, body.current_password, body.new_password, source_ip=ip
    )
    return _session_public(changed)


@router.post("/api/auth/logout", status_code=204)
def logout(session: CurrentSession, request: Request, response: Response, security: SecurityDep) -> None:
    """End the session and clear the cookie (or revoke the bearer token)."""
    security.close_session(session, source_ip=client_ip(request))
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


@router.get("/api/auth/me")
def me(session: CurrentSession) -> schemas.SessionPublic:
    """The logged-in user, roles and CSRF token (none for bearer tokens)."""
    return _session_public(session)


@router.post(
    "/api/auth/token",
    openapi_extra=_body_schema(schemas.Credentials, "application/json", "application/x-www-form-urlencoded"),
)
async def token(request: Request) -> schemas.TokenPublic:
    """Issue a bearer token for an API client (JSON or form ``username``/``password``); no CSRF needed then.

    Refused for requests from another origin (a page elsewhere could post a form); rate-limited.
    """
    check_same_origin(request)
    creds = await json_body(request, schemas.Credentials, form=True)
    gate, ip = gate_of(request), client_ip(request)
    security: Security = request.app.state.security
    gate.admit(ip)
    user = await gate.run(security.authenticate, creds.username, creds.password, source_ip=ip)
    tok, session = await run_in_threadpool(security.open_session, user, kind="bearer", source_ip=ip)
    return schemas.TokenPublic(access_token=tok, expires=session.expires)
