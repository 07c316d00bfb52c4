"""What every router shares: the app's parts, the caller's session, permission checks, body and time parsing.

Typed ``Annotated`` dependencies (as in the FastAPI full-stack template):

- :data:`RoomDep`, :data:`SecurityDep`: the :class:`ControlRoom` and :class:`Security` of the
  app (``app.state.room``/``.security``, set by :func:`~opendso.service.app.create_app`);
- :data:`CurrentSession`: the caller's session, from a bearer token (API clients) or the session
  cookie (the web UI; state-changing requests then need the CSRF header);
- :func:`require` and the sessions that pass it: :data:`ViewSession`, :data:`ControlSession`
  (operators), :data:`ConfigureSession` (engineers), :data:`AuditSession` (auditors),
  :data:`ManageUsersSession` (security administrators, RBAC maintainers). A user who must
  change a temporary password passes none of them.

Helpers for routes that read their body themselves (those that hash a password, and so must
check the origin and the login gate before any work): :func:`check_same_origin`,
:func:`json_body`. :func:`query_time` parses a time query parameter (a time zone is required;
400 naming the parameter otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from opendso.errors import AuthError, ForbiddenError, UnsupportedMediaError
from opendso.service.config import ServiceSettings
from opendso.service.controlroom import ControlRoom
from opendso.service.login_gate import LoginGate
from opendso.service.security import CSRF_HEADER, SESSION_COOKIE, Permission, Security, Session
from opendso.timeutil import parse_time

__all__ = [
    "MAX_PAGE",
    "MAX_SEQ",
    "AuditSession",
    "ConfigureSession",
    "ControlSession",
    "CurrentSession",
    "ManageUsersSession",
    "RoomDep",
    "SecurityDep",
    "ViewSession",
    "check_same_origin",
    "client_ip",
    "current_session",
    "gate_of",
    "json_body",
    "query_time",
    "require",
    "require_json",
    "settings_of",
    "token_of",
]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Most events or audit records one request returns.
MAX_PAGE = 5000
#: Largest sequence number a query may name (the databases' signed 64-bit integer, minus one for ``after + 1``).
MAX_SEQ = 2**63 - 2


# -- the app's parts ------------------------------------------------------------------------------------------
def _room(request: Request) -> ControlRoom:
    room: ControlRoom = request.app.state.room
    return room


def _security(request: Request) -> Security:
    security: Security = request.app.state.security
    return security


RoomDep = Annotated[ControlRoom, Depends(_room)]
SecurityDep = Annotated[Security, Depends(_security)]


def gate_of(request: Request) -> LoginGate:
    """The app's login gate (rate limits and bounded hashing)."""
    gate: LoginGate = request.app.state.gate
    return gate


def settings_of(request: Request) -> ServiceSettings:
    """The app's :class:`~opendso.service.config.ServiceSettings`."""
    settings: ServiceSettings = request.app.state.settings
    return settings


def client_ip(request: Request | WebSocket) -> str | None:
    """The peer's address (a trusted proxy's forwarded one, see ``ServiceSettings.trusted_proxies``)."""
    return request.client.host if request.client is not None else None


# -- origin -------------------------------------------------------------------------------------------------
def _own_origin(request: Request | WebSocket) -> str | None:
    """``scheme://host[:port]`` of this service as the request addressed it (None without a Host header)."""
    host = request.headers.get("host")
    if not host:
        return None
    scheme = "https" if request.url.scheme in ("https", "wss") else "http"
    return f"{scheme}://{host}".lower()


def check_same_origin(request: Request | WebSocket) -> None:
    """Refuse (:class:`ForbiddenError`) a browser request sent by a page of another origin.

    Browsers send ``Origin`` with every POST (and with WebSocket handshakes) and
    ``Sec-Fetch-Site`` with every request (Fetch Metadata); API clients send neither, and pass.
    """
    origin = request.headers.get("origin")
    if origin is not None and (origin == "null" or origin.lower() != _own_origin(request)):
        raise ForbiddenError(f"requests from another origin ({origin}) are refused")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        raise ForbiddenError(f"requests from another site (Sec-Fetch-Site: {site}) are refused")


# -- sessions and permissions ---------------------------------------------------------------------------------
def token_of(headers: Any, cookies: Any) -> tuple[str | None, str]:
    """Return (token, kind): a bearer token from ``Authorization``, else the session cookie."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Authorization header must be 'Bearer <token>'", presented=True)
        return token.strip(), "bearer"
    return cookies.get(SESSION_COOKIE), "cookie"


def current_session(request: Request, security: SecurityDep) -> Session:
    """Return the caller's session (bearer token or cookie); cookie requests that change state need CSRF."""
    token, kind = token_of(request.headers, request.cookies)
    session = security.session(token or "")
    if session.kind != kind:
        raise AuthError(
            "this token is not valid here: use the session cookie for the web UI, bearer tokens for APIs",
            presented=True,
        )
    request.state.user = session.user.username
    if request.method not in SAFE_METHODS:
        security.check_csrf(session, request.headers.get(CSRF_HEADER))
    return session


CurrentSession = Annotated[Session, Depends(current_session)]


def require(permission: Permission) -> Callable[[Session], Session]:
    """Return a dependency that passes sessions whose roles grant ``permission`` and refuses others (403)."""

    def check(session: CurrentSession) -> Session:
        if session.user.must_change_password:
            raise ForbiddenError(
                f"user {session.user.username!r} must choose a new password first (POST /api/auth/password)"
            )
        if not session.user.can(permission):
            raise ForbiddenError(
                f"user {session.user.username!r} (roles: {', '.join(session.user.roles)}) "
                f"may not do this: it needs the {permission.value!r} permission"
            )
        return session

    return check


ViewSession = Annotated[Session, Depends(require(Permission.VIEW))]
ControlSession = Annotated[Session, Depends(require(Permission.CONTROL))]
ConfigureSession = Annotated[Session, Depends(require(Permission.CONFIGURE))]
AuditSession = Annotated[Session, Depends(require(Permission.READ_AUDIT))]
ManageUsersSession = Annotated[Session, Depends(require(Permission.MANAGE_USERS))]


# -- bodies and query parameters ------------------------------------------------------------------------------
def require_json(request: Request, *also: str) -> str:
    """The request's media type; refuse (415) anything but JSON (and ``also``)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and media not in also:
        allowed = " or ".join(("application/json", *also))
        raise UnsupportedMediaError(f"send the body as {allowed}, not {media or 'nothing'!r}")
    return media


async def json_body[M: BaseModel](request: Request, model: type[M], *, form: bool = False) -> M:
    """Parse and validate a JSON (or, with ``form``, url-encoded) body into ``model``; 422 when invalid."""
    media = require_json(request, *(["application/x-www-form-urlencoded"] if form else []))
    raw = await request.body()
    try:
        if media == "application/x-www-form-urlencoded":
            parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
            data: Any = {k: v[0] for k, v in parsed.items()}
        else:
            data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestValidationError(
            [{"loc": ("body",), "type": "json_invalid", "msg": "the body is not valid JSON or form data"}]
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def query_time(value: str, name: str) -> datetime:
    """Parse the time query parameter ``name`` (ISO 8601 with a zone) to UTC.

    Text that is not ISO 8601, or a time without a zone, raises
    :class:`~opendso.errors.InputError` (400) naming the parameter.
    """
    return parse_time(value, f"query parameter {name!r}")
